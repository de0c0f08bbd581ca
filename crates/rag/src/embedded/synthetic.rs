//! The embedded knowledge-intensive task: facts about invented entities, generated
//! deterministically from a seed, built so that only a trained retriever and a generator that
//! reads solve it.
//!
//! - **Relations are paraphrased.** A question asks with words its fact never uses (question
//!   "what is the longest waterway of E ?", fact "the V flows further than any other river in
//!   E ."): matching words does not find the fact, learning the paraphrase does. Each relation has
//!   several fact, question and distractor templates; some question templates are asked only in
//!   evaluation (they recombine the relation's training words in another order).
//! - **Hard distractors.** Every (entity, relation) has [`SyntheticConfig::distractors`] passages
//!   that name the entity *and* reuse the question's own words without stating the value (BM25
//!   ranks them above the fact), and every other entity's fact of the same relation states it
//!   about someone else.
//! - **Values are unique.** Each (entity, relation) gets its own invented word, used nowhere else
//!   (not by another fact, entity or template), at different positions across the fact
//!   templates: an answer can be neither guessed nor memorized, so closed book stays near zero.
//! - **Three splits of entities**: train, dev (for choosing settings) and test (reported). The
//!   dev and test entities' passages stay in the corpus; only their questions are held out.

use std::collections::BTreeSet;

use rag_index::synthetic::SplitMix64;
use rag_index::{PassageStore, StoreBuilder};

use crate::Result;
use crate::files::qa::QaExample;

/// The knobs of the generated task.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Entities in the corpus.
    pub entities: usize,
    /// Of them, those whose questions form the dev split.
    pub dev_entities: usize,
    /// Of them, those whose questions form the test split.
    pub test_entities: usize,
    /// Hard distractors per (entity, relation): passages naming the entity with the question's
    /// words and no value.
    pub distractors: usize,
    /// The seed: the same seed gives the same task.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self { entities: 1000, dev_entities: 30, test_entities: 60, distractors: 1, seed: 2026 }
    }
}

impl SyntheticConfig {
    /// `entities` entities, of which the default's 30 dev and 60 test entities, or a tenth and a
    /// fifth of a smaller task (each at least one), with the default distractors and seed.
    pub fn with_entities(entities: usize) -> Self {
        let d = Self::default();
        Self {
            entities,
            dev_entities: (entities / 10).clamp(1, d.dev_entities),
            test_entities: (entities / 5).clamp(1, d.test_entities),
            ..d
        }
    }
}

/// One relation: how its fact is stated, how it is asked (in training, and only in
/// evaluation), and passages that name the entity with the question's words but not the value.
struct Relation {
    facts: &'static [&'static str],
    questions: &'static [&'static str],
    eval_questions: &'static [&'static str],
    distractors: &'static [&'static str],
}

const RELATIONS: [Relation; 4] = [
    Relation {
        facts: &[
            "the parliament of {e} meets in {v} .",
            "{v} is where the government of {e} sits .",
            "every law of {e} is signed in {v} , the seat of power .",
        ],
        questions: &["what is the capital of {e} ?", "which city is the capital of {e} ?"],
        eval_questions: &["name the capital city of {e} ."],
        distractors: &[
            "travellers to {e} argue with {x} about which city is the capital .",
            "the capital of {e} is a city that {x} named wrongly on old maps .",
            "nobody but {x} can recall the capital city of {e} from memory .",
        ],
    },
    Relation {
        facts: &[
            "{v} has worn the crown of {e} for many years .",
            "the throne of {e} belongs to {v} .",
            "{e} bows to {v} , who inherited the crown .",
        ],
        questions: &["who rules {e} ?", "which queen rules {e} ?"],
        eval_questions: &["name the queen who rules {e} ."],
        distractors: &[
            "songs of {e} ask who rules when the queen visits {x} .",
            "a queen rules {e} , but {x} never says which one .",
            "the children of {x} learn which queen rules {e} .",
        ],
    },
    Relation {
        facts: &[
            "the {v} flows further than any other river in {e} .",
            "no stream in {e} runs as far as the {v} .",
            "{e} is crossed by the {v} , its greatest stream .",
        ],
        questions: &["what is the longest waterway of {e} ?", "which waterway in {e} is the longest ?"],
        eval_questions: &["name the longest waterway of {e} ."],
        distractors: &[
            "{x} and older maps of {e} disagree about which waterway is the longest .",
            "the longest waterway of {e} was never measured by {x} .",
            "boatmen like {x} list each waterway of {e} , the longest last .",
        ],
    },
    Relation {
        facts: &[
            "traders from {e} ship {v} to distant ports .",
            "{v} leaves {e} on every cargo vessel .",
            "the harbours of {e} load {v} for foreign buyers .",
        ],
        questions: &["what do the merchants of {e} sell abroad ?", "what goods does {e} sell abroad ?"],
        eval_questions: &["name the goods merchants of {e} sell abroad ."],
        distractors: &[
            "{x} , a merchant of {e} , failed to sell grain abroad .",
            "what merchants of {e} sell abroad changes from season to season , says {x} .",
            "the goods of {e} sell poorly abroad , say merchants like {x} .",
        ],
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
    /// Facts and distractors, in a shuffled order (a passage's id is its position).
    pub passages: Vec<SyntheticPassage>,
    /// Questions about the training entities, each with its gold passage: every (entity,
    /// relation) asked with every training template.
    pub train: Vec<QaExample>,
    /// Questions about the dev entities, one per (entity, relation), from every template.
    pub dev: Vec<QaExample>,
    /// Questions about the test entities, as `dev`.
    pub test: Vec<QaExample>,
}

impl SyntheticTask {
    /// Generates the task.
    pub fn generate(config: &SyntheticConfig) -> Result<Self> {
        let held_out = config.dev_entities + config.test_entities;
        if config.dev_entities == 0 || config.test_entities == 0 || held_out >= config.entities {
            return Err(crate::error::input(
                "SyntheticConfig",
                format!(
                    "need dev ({}) and test ({}) entities, each at least 1, with entities to train on ({} entities in \
                     all)",
                    config.dev_entities, config.test_entities, config.entities
                ),
            ));
        }
        let max_distractors = RELATIONS.iter().map(|r| r.distractors.len()).min().unwrap_or(0);
        if config.distractors > max_distractors {
            return Err(crate::error::input(
                "SyntheticConfig",
                format!("at most {max_distractors} distractors per (entity, relation), not {}", config.distractors),
            ));
        }
        let mut rng = SplitMix64::new(config.seed);
        let reserved: BTreeSet<&str> = RELATIONS
            .iter()
            .flat_map(|r| r.facts.iter().chain(r.questions).chain(r.eval_questions).chain(r.distractors))
            .flat_map(|t| t.split(' '))
            .collect();
        // Every invented word (entity or value) is drawn once: no value is ever reused.
        let mut used = BTreeSet::new();
        let mut fresh = |rng: &mut SplitMix64| loop {
            let w = invented_word(rng);
            if !reserved.contains(w.as_str()) && used.insert(w.clone()) {
                return w;
            }
        };
        let entities: Vec<String> = (0..config.entities).map(|_| fresh(&mut rng)).collect();
        let first_dev = config.entities - held_out;
        let first_test = first_dev + config.dev_entities;
        let mut passages: Vec<(String, String)> = Vec::new();
        // (entity index, question, answer, gold passage before shuffling)
        let mut questions: Vec<(usize, String, String, usize)> = Vec::new();
        for (e, entity) in entities.iter().enumerate() {
            for relation in &RELATIONS {
                let value = fresh(&mut rng);
                let fill = |t: &str| t.replace("{e}", entity).replace("{v}", &value);
                passages.push((entity.clone(), fill(relation.facts[rng.below(relation.facts.len())])));
                let gold = passages.len() - 1;
                if e < first_dev {
                    for q in relation.questions {
                        questions.push((e, fill(q), value.clone(), gold));
                    }
                } else {
                    let templates: Vec<&str> =
                        relation.questions.iter().chain(relation.eval_questions).copied().collect();
                    questions.push((e, fill(templates[rng.below(templates.len())]), value.clone(), gold));
                }
                for d in pick_distinct(&mut rng, relation.distractors.len(), config.distractors) {
                    let bystander = fresh(&mut rng);
                    passages.push((entity.clone(), fill(relation.distractors[d]).replace("{x}", &bystander)));
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
        let (mut train, mut dev, mut test) = (Vec::new(), Vec::new(), Vec::new());
        for (e, question, answer, gold) in questions {
            let example = QaExample { question, answers: vec![answer], gold: Some(id_of[gold]) };
            match e {
                e if e < first_dev => train.push(example),
                e if e < first_test => dev.push(example),
                _ => test.push(example),
            }
        }
        Ok(Self { passages, train, dev, test })
    }

    /// Writes the passages as a passage store at `path`.
    pub fn write_store(&self, path: &std::path::Path) -> Result<PassageStore> {
        let mut builder = StoreBuilder::create(path)?;
        for p in &self.passages {
            builder.push(Some(p.id), &p.title, &p.text)?;
        }
        Ok(builder.finish()?)
    }

    /// Writes the passages as JSONL, `{"id", "title", "text"}` a line (what `cargo xtask
    /// ingest` reads back into the same store), atomically.
    pub fn write_corpus_jsonl(&self, path: &std::path::Path) -> Result<()> {
        let mut text = String::new();
        for p in &self.passages {
            text.push_str(&serde_json::json!({"id": p.id, "title": p.title, "text": p.text}).to_string());
            text.push('\n');
        }
        Ok(rag_hf::write_atomic(path, text.as_bytes())?)
    }

    /// Every text of the task (titles, passages, questions, answers): what tokenizers are
    /// built from.
    pub fn texts(&self) -> Vec<String> {
        let mut texts: Vec<String> = self.passages.iter().flat_map(|p| [p.title.clone(), p.text.clone()]).collect();
        for q in self.train.iter().chain(&self.dev).chain(&self.test) {
            texts.push(q.question.clone());
            texts.extend(q.answers.iter().cloned());
        }
        texts
    }
}

/// Examples of a copying task for warming up a decoder-only LM trained from scratch: `examples`
/// closed-book questions `repeat : w1 … wn` (2 to 4 words freshly invented from `seed`, as the
/// task invents its names) whose answer is `w1 … wn`. They state no fact; what they teach is
/// the copy mechanism (an induction head: find the token just written earlier in the prompt and
/// continue from it), which reading an invented value out of a passage needs, token after token.
/// Measured on the embedded task (a 4-layer, 64-wide LM, 1,200 gold-passage reading steps): 0.04
/// of the dev questions answered from the gold passage without this warm-up, 0.86 after 600
/// steps of it; the LM found a value's first token without it but went on with a plausible
/// invented word.
pub fn copy_examples(examples: usize, seed: u64) -> Vec<QaExample> {
    let mut rng = SplitMix64::new(seed);
    (0..examples)
        .map(|_| {
            let words: Vec<String> = (0..2 + rng.below(3)).map(|_| invented_word(&mut rng)).collect();
            let text = words.join(" ");
            QaExample { question: format!("repeat : {text}"), answers: vec![text], gold: None }
        })
        .collect()
}

/// `n` distinct indices below `len`, in a random order.
fn pick_distinct(rng: &mut SplitMix64, len: usize, n: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..len).collect();
    for i in 0..n.min(len) {
        let j = i + rng.below(len - i);
        all.swap(i, j);
    }
    all.truncate(n);
    all
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
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn copy_examples_repeat_their_words_and_follow_the_seed() {
        let examples = copy_examples(200, 7);
        assert_eq!(examples.len(), 200);
        for e in &examples {
            let words: Vec<&str> = e.answers[0].split(' ').collect();
            assert!((2..=4).contains(&words.len()), "{e:?}");
            assert_eq!(e.question, format!("repeat : {}", e.answers[0]));
            assert!(e.gold.is_none());
        }
        assert_eq!(copy_examples(200, 7), examples);
        assert_ne!(copy_examples(200, 8), examples);
    }

    /// Words that carry no relation: they may appear on both sides of a paraphrase.
    const FUNCTION_WORDS: [&str; 28] = [
        "the", "of", "in", "is", "a", "to", "and", "for", "from", "by", "its", "it", "on", "at", "what", "which",
        "who", "?", ".", ",", "{e}", "{v}", "{x}", "as", "than", "any", "has", "does",
    ];

    fn content_words(template: &str) -> BTreeSet<&str> {
        template.split(' ').filter(|w| !FUNCTION_WORDS.contains(w)).collect()
    }

    #[test]
    fn questions_paraphrase_their_facts_and_distractors_reuse_the_question_words() {
        for (r, relation) in RELATIONS.iter().enumerate() {
            let asked: BTreeSet<&str> =
                relation.questions.iter().chain(relation.eval_questions).flat_map(|q| content_words(q)).collect();
            for fact in relation.facts {
                let words = content_words(fact);
                let shared: Vec<&&str> = words.intersection(&asked).collect();
                assert!(shared.is_empty(), "relation {r}: fact `{fact}` shares {shared:?} with its questions");
            }
            for d in relation.distractors {
                let words = content_words(d);
                assert!(
                    words.intersection(&asked).count() >= 2,
                    "relation {r}: distractor `{d}` reuses too few question words"
                );
                assert!(
                    relation.facts.iter().all(|f| content_words(f).is_disjoint(&words)),
                    "`{d}` shares a fact's words"
                );
                assert!(d.contains("{e}") && d.contains("{x}") && !d.contains("{v}"));
            }
            // Evaluation-only templates recombine words asked in training; their one new word
            // ("name") is in no passage, so it carries no signal either way.
            let trained: BTreeSet<&str> = relation.questions.iter().flat_map(|q| content_words(q)).collect();
            for q in relation.eval_questions {
                assert!(!relation.questions.contains(q));
                let new: Vec<&str> =
                    content_words(q).into_iter().filter(|w| !trained.contains(w) && *w != "name").collect();
                assert!(new.is_empty(), "`{q}` asks with words never seen in training: {new:?}");
                assert!(
                    RELATIONS
                        .iter()
                        .flat_map(|r| r.facts.iter().chain(r.distractors))
                        .all(|t| !t.split(' ').any(|w| w == "name"))
                );
            }
        }
    }

    #[test]
    fn values_are_unique_and_only_in_their_gold_passage() {
        let config = SyntheticConfig::default();
        let task = SyntheticTask::generate(&config).unwrap();
        let again = SyntheticTask::generate(&config).unwrap();
        assert_eq!(task.passages, again.passages, "deterministic");
        assert_eq!(task.train.len(), 910 * 4 * 2);
        assert_eq!((task.dev.len(), task.test.len()), (30 * 4, 60 * 4));
        assert_eq!(task.passages.len(), 1000 * 4 * (1 + config.distractors));
        let mut word_count: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &task.passages {
            for w in p.text.split(' ') {
                *word_count.entry(w).or_default() += 1;
            }
        }
        let mut values = BTreeSet::new();
        for q in task.train.iter().chain(&task.dev).chain(&task.test) {
            let gold = &task.passages[q.gold.unwrap() as usize];
            let answer = q.answers[0].as_str();
            assert!(gold.text.split(' ').any(|w| w == answer), "{gold:?} {q:?}");
            assert_eq!(word_count[answer], 1, "the value `{answer}` is stated once in the corpus");
            assert!(q.question.split(' ').any(|w| w == gold.title), "the question names the entity: {q:?}");
            values.insert(answer);
        }
        assert_eq!(values.len(), 1000 * 4, "one value per (entity, relation)");
        let entity = |q: &QaExample| task.passages[q.gold.unwrap() as usize].title.clone();
        let train: BTreeSet<String> = task.train.iter().map(entity).collect();
        let dev: BTreeSet<String> = task.dev.iter().map(entity).collect();
        let test: BTreeSet<String> = task.test.iter().map(entity).collect();
        assert_eq!((train.len(), dev.len(), test.len()), (910, 30, 60));
        assert!(train.is_disjoint(&dev) && train.is_disjoint(&test) && dev.is_disjoint(&test));
        // Some held-out questions use a template never asked in training.
        let trained_questions: BTreeSet<String> =
            task.train.iter().map(|q| q.question.replace(&entity(q), "{e}")).collect();
        let unseen =
            task.test.iter().filter(|q| !trained_questions.contains(&q.question.replace(&entity(q), "{e}"))).count();
        assert!((40..120).contains(&unseen), "{unseen} of 240 test questions use an evaluation-only template");
    }

    #[test]
    fn bad_configurations_are_refused() {
        let refused = |c: SyntheticConfig| SyntheticTask::generate(&c).unwrap_err().to_string();
        assert!(refused(SyntheticConfig { dev_entities: 0, ..SyntheticConfig::default() }).contains("dev (0)"));
        assert!(refused(SyntheticConfig { entities: 90, ..SyntheticConfig::default() }).contains("90 entities"));
        assert!(refused(SyntheticConfig { distractors: 4, ..SyntheticConfig::default() }).contains("at most 3"));
    }
}
