//! The embedded knowledge-intensive task: passages stating facts about invented entities (so no
//! model can know them), distractor passages that share words with the questions, and
//! question/answer pairs whose answer is only in the right passage. Generated deterministically
//! from a seed; the questions for evaluation are about entities never asked about in training.
//!
//! Every entity has one fact per relation (`triskan is the capital of velmora .`) and, for some
//! relations, a distractor that names the entity and the relation but not the value (`pilgrims to
//! velmora rarely visit the capital …`). The values come from per-relation pools shared by all
//! entities, so a model without retrieval can at best guess a relation's commonest value.

use rag_index::synthetic::SplitMix64;
use rag_index::{PassageStore, StoreBuilder};

use crate::qa::QaExample;
use crate::{RagError, Result};

/// The knobs of the generated task.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Entities in the corpus.
    pub entities: usize,
    /// Of them, those asked about only in evaluation.
    pub held_out: usize,
    /// Distinct values each relation draws from.
    pub values_per_relation: usize,
    /// Probability that an (entity, relation) pair also gets a distractor passage.
    pub distractor_rate: f64,
    /// The seed: the same seed gives the same task.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self { entities: 300, held_out: 60, values_per_relation: 60, distractor_rate: 0.5, seed: 2026 }
    }
}

/// One relation: how its fact is stated, how it is asked, and a distractor that names the
/// entity and the relation without the value.
struct Relation {
    fact: &'static str,
    questions: &'static [&'static str],
    distractor: &'static str,
}

const RELATIONS: [Relation; 4] = [
    Relation {
        fact: "{v} is the capital of {e} .",
        questions: &["what is the capital of {e} ?", "which city is the capital of {e} ?"],
        distractor: "pilgrims to {e} rarely visit the capital and prefer the coast .",
    },
    Relation {
        fact: "{v} has ruled {e} as queen for many years .",
        questions: &["who rules {e} ?", "which queen rules {e} ?"],
        distractor: "the old rulers of {e} left no written records of their reign .",
    },
    Relation {
        fact: "{v} is the longest river in {e} .",
        questions: &["which river is the longest in {e} ?", "what is the longest river in {e} ?"],
        distractor: "no river in {e} is deep enough for large ships .",
    },
    Relation {
        fact: "{v} is what the merchants of {e} sell abroad .",
        questions: &["what do the merchants of {e} sell abroad ?", "what does {e} sell abroad ?"],
        distractor: "merchants of {e} once tried selling grain abroad and failed .",
    },
];

/// A passage of the generated corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticPassage {
    /// Its id in the store.
    pub id: u64,
    /// The entity it is about.
    pub title: String,
    /// The sentence.
    pub text: String,
}

/// The generated corpus and questions.
#[derive(Debug, Clone)]
pub struct SyntheticTask {
    /// Facts and distractors, in a shuffled order.
    pub passages: Vec<SyntheticPassage>,
    /// Questions about the training entities, each with its gold passage.
    pub train: Vec<QaExample>,
    /// Questions about the held-out entities.
    pub eval: Vec<QaExample>,
}

impl SyntheticTask {
    /// Generates the task.
    pub fn generate(config: &SyntheticConfig) -> Result<Self> {
        if config.held_out == 0 || config.held_out >= config.entities || config.values_per_relation == 0 {
            return Err(RagError::Mismatch(format!(
                "synthetic task: need 0 < held_out ({}) < entities ({}) and values_per_relation > 0",
                config.held_out, config.entities
            )));
        }
        let mut rng = SplitMix64::new(config.seed);
        let reserved: Vec<&str> = RELATIONS
            .iter()
            .flat_map(|r| r.fact.split(' ').chain(r.distractor.split(' ')).chain(r.questions.iter().flat_map(|q| q.split(' '))))
            .collect();
        let mut words = std::collections::BTreeSet::new();
        let mut fresh = |rng: &mut SplitMix64| loop {
            let w = invented_word(rng);
            if !reserved.contains(&w.as_str()) && words.insert(w.clone()) {
                return w;
            }
        };
        let entities: Vec<String> = (0..config.entities).map(|_| fresh(&mut rng)).collect();
        let pools: Vec<Vec<String>> =
            RELATIONS.iter().map(|_| (0..config.values_per_relation).map(|_| fresh(&mut rng)).collect()).collect();
        let mut passages = Vec::new();
        let mut questions = Vec::new();
        for (e, entity) in entities.iter().enumerate() {
            for (r, relation) in RELATIONS.iter().enumerate() {
                let value = &pools[r][rng.below(config.values_per_relation)];
                let fill = |t: &str| t.replace("{e}", entity).replace("{v}", value);
                passages.push((entity.clone(), fill(relation.fact)));
                let gold = passages.len() - 1;
                let question = fill(relation.questions[rng.below(relation.questions.len())]);
                questions.push((e, question, value.clone(), gold));
                if rng.uniform() < config.distractor_rate {
                    passages.push((entity.clone(), fill(relation.distractor)));
                }
            }
        }
        // Shuffle the passages so ids say nothing about entities; keep the gold links.
        let mut order: Vec<usize> = (0..passages.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let mut id_of = vec![0u64; passages.len()];
        for (position, &original) in order.iter().enumerate() {
            id_of[original] = position as u64;
        }
        let passages = order
            .iter()
            .enumerate()
            .map(|(position, &original)| SyntheticPassage {
                id: position as u64,
                title: passages[original].0.clone(),
                text: passages[original].1.clone(),
            })
            .collect();
        let held_out_from = config.entities - config.held_out;
        let (mut train, mut eval) = (Vec::new(), Vec::new());
        for (e, question, answer, gold) in questions {
            let example = QaExample { question, answers: vec![answer], gold: Some(id_of[gold]) };
            if e < held_out_from { train.push(example) } else { eval.push(example) }
        }
        Ok(Self { passages, train, eval })
    }

    /// Writes the passages as a passage store at `path`.
    pub fn write_store(&self, path: &std::path::Path) -> Result<PassageStore> {
        let mut builder = StoreBuilder::create(path)?;
        for p in &self.passages {
            builder.push(Some(p.id), &p.title, &p.text)?;
        }
        Ok(builder.finish()?)
    }

    /// Every text of the task (titles, passages, questions, answers): what tokenizers are
    /// built from.
    pub fn texts(&self) -> Vec<String> {
        let mut texts: Vec<String> = self.passages.iter().flat_map(|p| [p.title.clone(), p.text.clone()]).collect();
        for q in self.train.iter().chain(&self.eval) {
            texts.push(q.question.clone());
            texts.extend(q.answers.iter().cloned());
        }
        texts
    }
}

/// A pronounceable word of 2 or 3 syllables.
fn invented_word(rng: &mut SplitMix64) -> String {
    const ONSETS: [&str; 20] =
        ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "tr", "kl", "st", "dr", "sh"];
    const VOWELS: [&str; 7] = ["a", "e", "i", "o", "u", "ai", "ou"];
    const CODAS: [&str; 7] = ["", "", "", "n", "r", "l", "s"];
    let syllables = 2 + rng.below(2);
    let mut w = String::new();
    for s in 0..syllables {
        w.push_str(ONSETS[rng.below(ONSETS.len())]);
        w.push_str(VOWELS[rng.below(VOWELS.len())]);
        if s + 1 == syllables {
            w.push_str(CODAS[rng.below(CODAS.len())]);
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_only_in_their_gold_passage_and_held_out_entities_are_unseen() {
        let task = SyntheticTask::generate(&SyntheticConfig::default()).unwrap();
        let again = SyntheticTask::generate(&SyntheticConfig::default()).unwrap();
        assert_eq!(task.passages, again.passages, "deterministic");
        assert_eq!(task.train.len(), 240 * 4);
        assert_eq!(task.eval.len(), 60 * 4);
        for q in task.train.iter().chain(&task.eval) {
            let gold = &task.passages[q.gold.unwrap() as usize];
            let answer = &q.answers[0];
            assert!(gold.text.split(' ').any(|w| w == answer), "{gold:?} {q:?}");
            assert!(q.question.contains(&gold.title), "the question names the entity: {q:?}");
            // No other passage about this entity states the value.
            let others = task.passages.iter().filter(|p| p.title == gold.title && p.id != gold.id);
            assert!(others.clone().all(|p| !p.text.split(' ').any(|w| w == answer)));
        }
        let train_entities: std::collections::BTreeSet<&str> =
            task.train.iter().map(|q| task.passages[q.gold.unwrap() as usize].title.as_str()).collect();
        assert!(task.eval.iter().all(|q| !train_entities.contains(task.passages[q.gold.unwrap() as usize].title.as_str())));
        let distractors = task.passages.len() - 300 * 4;
        assert!((450..750).contains(&distractors), "{distractors}");
    }
}
