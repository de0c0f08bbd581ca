//! Training recipes: what each trains, with which loss and which parameter groups.

use std::str::FromStr;

use rag_trainer::ParamGroup;

use crate::{RagError, RagLoss, Result};

/// A training recipe (`--recipe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    /// RAG-Token (Lewis et al. 2020): BART generator and query encoder, trained end to end
    /// through the doc scores.
    RagToken,
    /// RAG-Sequence: the same with the sequence-level marginal.
    RagSequence,
    /// RA-DIT's LM fine-tuning (Lin et al. 2023): a decoder-only LM, each retrieved passage its
    /// own instance; the retriever is fixed.
    RaDitLm,
    /// RA-DIT's retriever fine-tuning: the query encoder learns from the LM-supervised
    /// retrieval (LSR) KL against a frozen LM.
    RaDitLsr,
}

impl Recipe {
    /// Every recipe.
    pub const ALL: [Recipe; 4] = [Recipe::RagToken, Recipe::RagSequence, Recipe::RaDitLm, Recipe::RaDitLsr];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Recipe::RagToken => "rag-token",
            Recipe::RagSequence => "rag-sequence",
            Recipe::RaDitLm => "ra-dit-lm",
            Recipe::RaDitLsr => "ra-dit-lsr",
        }
    }

    /// The loss it trains with.
    pub fn loss(self) -> RagLoss {
        match self {
            Recipe::RagToken => RagLoss::RagToken,
            Recipe::RagSequence => RagLoss::RagSequence,
            Recipe::RaDitLm => RagLoss::LmFinetune,
            Recipe::RaDitLsr => RagLoss::Lsr,
        }
    }

    /// Whether its generator is a decoder-only LM (RA-DIT) rather than BART.
    pub fn decoder_only(self) -> bool {
        matches!(self, Recipe::RaDitLm | Recipe::RaDitLsr)
    }

    /// Whether it trains the query encoder.
    pub fn trains_retriever(self) -> bool {
        !matches!(self, Recipe::RaDitLm)
    }

    /// Whether it trains the generator.
    pub fn trains_generator(self) -> bool {
        !matches!(self, Recipe::RaDitLsr)
    }

    /// The parameter groups of a [`crate::RagModel`] under this recipe ([`GroupOptions`]): the query
    /// encoder at `retriever_lr`, the document encoder with it when `train_documents` (else
    /// frozen), the generator at `generator_lr`; what the recipe does not train is frozen, and so
    /// is the query encoder when `freeze_retriever` (the ablation). The retriever's groups start
    /// at `retriever_start` (a generator that cannot read yet makes the doc-score gradient noise).
    pub fn param_groups(self, options: &GroupOptions) -> Vec<ParamGroup> {
        let GroupOptions {
            retriever_lr,
            generator_lr,
            weight_decay,
            train_documents,
            freeze_retriever,
            retriever_start,
        } = *options;
        let query = if self.trains_retriever() && !freeze_retriever {
            ParamGroup::new("query_encoder", &["retriever.query"], retriever_lr, weight_decay)
                .starting_at(retriever_start)
        } else {
            ParamGroup::frozen("query_encoder", &["retriever.query"])
        };
        let document = if train_documents && self.trains_retriever() && !freeze_retriever {
            ParamGroup::new("document_encoder", &["retriever.document"], retriever_lr, weight_decay)
                .starting_at(retriever_start)
        } else {
            ParamGroup::frozen("document_encoder", &["retriever.document"])
        };
        let generator = if self.trains_generator() {
            ParamGroup::new("generator", &["generator"], generator_lr, weight_decay)
        } else {
            ParamGroup::frozen("generator", &["generator"])
        };
        vec![query, document, generator]
    }
}

impl FromStr for Recipe {
    type Err = RagError;

    fn from_str(s: &str) -> Result<Self> {
        Recipe::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Recipe::ALL.iter().map(|r| r.name()).collect();
            RagError::UnknownName { what: "recipe", given: s.to_string(), expected: names.join(", ") }
        })
    }
}

impl std::fmt::Display for Recipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `groups` with the group named `group` training only `prefixes` (module paths at dot
/// boundaries) and a frozen group after it for the rest of what it covered: partial fine-tuning
/// (the generator's top layers). A frozen or missing group is left as it is.
pub fn train_only(groups: Vec<ParamGroup>, group: &str, prefixes: &[String]) -> Vec<ParamGroup> {
    let mut out = Vec::with_capacity(groups.len() + 1);
    for g in groups {
        if g.name == group && !g.frozen {
            let rest = ParamGroup::frozen(
                format!("{group}_frozen"),
                &g.prefixes.iter().map(String::as_str).collect::<Vec<_>>(),
            );
            out.push(ParamGroup { prefixes: prefixes.to_vec(), ..g });
            out.push(rest);
        } else {
            out.push(g);
        }
    }
    out
}

/// The learning rates and switches of [`Recipe::param_groups`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupOptions {
    /// Peak learning rate of the query (and document) encoder.
    pub retriever_lr: f64,
    /// Peak learning rate of the generator.
    pub generator_lr: f64,
    /// AdamW's decoupled weight decay (on tensors of rank ≥ 2).
    pub weight_decay: f64,
    /// Train the document encoder with the query encoder.
    pub train_documents: bool,
    /// Freeze the query encoder whatever the recipe (the frozen-retriever ablation).
    pub freeze_retriever: bool,
    /// The step the retriever's groups start at.
    pub retriever_start: u64,
}

impl GroupOptions {
    /// The given rates, weight decay 0.01, the retriever trained from step 0 and the document
    /// encoder frozen.
    pub fn new(retriever_lr: f64, generator_lr: f64) -> Self {
        Self {
            retriever_lr,
            generator_lr,
            weight_decay: 0.01,
            train_documents: false,
            freeze_retriever: false,
            retriever_start: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_parse_and_train_what_they_say() {
        for r in Recipe::ALL {
            assert_eq!(r.name().parse::<Recipe>().unwrap(), r);
        }
        let err = "rag-tokens".parse::<Recipe>().unwrap_err().to_string();
        assert!(err.contains("rag-token, rag-sequence, ra-dit-lm, ra-dit-lsr"), "{err}");
        let base = GroupOptions { weight_decay: 0.0, ..GroupOptions::new(1e-4, 1e-3) };
        let names = |groups: Vec<ParamGroup>| -> Vec<(String, bool, u64)> {
            groups.into_iter().map(|g| (g.name, g.frozen, g.start_step)).collect()
        };
        let rag = names(Recipe::RagToken.param_groups(&GroupOptions { retriever_start: 7, ..base }));
        assert_eq!(
            rag,
            vec![
                ("query_encoder".into(), false, 7),
                ("document_encoder".into(), true, 0),
                ("generator".into(), false, 0)
            ]
        );
        let ablation = names(Recipe::RagToken.param_groups(&GroupOptions {
            train_documents: true,
            freeze_retriever: true,
            retriever_start: 7,
            ..base
        }));
        assert!(ablation[0].1 && ablation[1].1 && !ablation[2].1, "the ablation freezes both encoders: {ablation:?}");
        let lsr = names(Recipe::RaDitLsr.param_groups(&base));
        assert!(!lsr[0].1 && lsr[2].1, "LSR trains the query encoder against a frozen LM: {lsr:?}");
        let lm = names(Recipe::RaDitLm.param_groups(&base));
        assert!(lm[0].1 && !lm[2].1, "RA-DIT LM fine-tuning trains the LM only: {lm:?}");
    }
}
