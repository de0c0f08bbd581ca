//! Marginalization and retrieval losses for retrieval-augmented generation, as pure functions over
//! Burn tensors: tensors in, tensors out, no I/O, no model types. Every loss works on any backend
//! and is differentiable with the backend's autodiff; see `docs/losses.md` for the maths and each
//! source's quirks.
//!
//! | loss | function | paper |
//! |---|---|---|
//! | RAG-Token `−log Π_t Σ_z p(z|x) p(y_t|x,z,y_<t)` | [`rag_token_nll`] | Lewis et al. 2020, eq. 2 |
//! | RAG-Sequence `−log Σ_z p(z|x) Π_t p(y_t|x,z,y_<t)` | [`rag_sequence_nll`] | Lewis et al. 2020, eq. 1 |
//! | HF's `get_nll`, quirks included | [`hf::rag_token_get_nll`], [`hf::rag_sequence_get_nll`] | `modeling_rag.py` |
//! | RA-DIT LM fine-tuning (output tokens only) | [`lm_nll`] | Lin et al. 2023, §2.3 |
//! | LM-supervised retrieval `KL(p_LSR ‖ p_R)` or `KL(p_R ‖ p_LSR)` | [`lsr_loss`] (+ [`lm_scores`]) | Lin et al. 2023, §2.4; Shi et al. 2023 |
//! | REPLUG ensemble `log Σ_c p_R(c|x) p_LM(y|c∘x)` | [`parallel_marginal_log_likelihood`] | Shi et al. 2023, eq. 1 |
//!
//! Shapes: `B` examples, `K` retrieved documents per example, `T` target positions, `V` vocabulary.
//! Bad shapes, out-of-vocabulary ids and out-of-domain options are [`LossError`]s, never panics.
//! The functions keep the dtype of their inputs (f64 on Flex works without global settings).
//! On the CPU backend (`Flex`, `Autodiff<Flex>`) in f32, the log-probability of the target is
//! read in one pass over the logits with a one-pass backward; every other backend and dtype
//! composes Burn's ops (the tests check that the two agree).
//!
//! ```
//! use burn::backend::{Autodiff, Flex};
//! use burn::tensor::{Bool, Int, Tensor};
//! use rag_losses::{NllConfig, Reduction, rag_sequence_nll};
//!
//! type B = Autodiff<Flex>;
//! let device = Default::default();
//! let (batch, docs, len, vocab) = (2, 3, 4, 7);
//! let logits = Tensor::<B, 4>::random(
//!     [batch, docs, len, vocab],
//!     burn::tensor::Distribution::Normal(0.0, 1.0),
//!     &device,
//! )
//! .require_grad();
//! let doc_scores = Tensor::<B, 2>::from_floats([[1.0, 0.5, -1.0], [0.0, 2.0, 0.1]], &device)
//!     .require_grad();
//! let target = Tensor::<B, 2, Int>::from_ints([[3, 1, 4, 1], [5, 2, 6, 0]], &device);
//! let mask = Tensor::<B, 2, Bool>::from_bool(
//!     burn::tensor::TensorData::from([[true, true, true, true], [true, true, true, false]]),
//!     &device,
//! );
//! let config = NllConfig::new().with_reduction(Reduction::TokenMean);
//! let loss = rag_sequence_nll(logits, doc_scores.clone(), target, mask, &config)?;
//! let grads = loss.backward();
//! // The doc-score gradient of RAG-Sequence is (prior − posterior) / tokens: it sums to zero.
//! let g = doc_scores.grad(&grads).unwrap().sum_dim(1).into_data().to_vec::<f32>().unwrap();
//! assert!(g.iter().all(|x| x.abs() < 1e-6));
//! # Ok::<(), rag_losses::LossError>(())
//! ```

mod config;
mod error;
mod fused;
#[cfg(feature = "tch")]
mod fused_tch;
pub mod hf;
mod ops;
mod radit;
mod rag;

pub use config::{GeneratorOutput, NllConfig, Reduction};
pub use error::{LossError, Result};
pub use ops::logsumexp;
pub use radit::{KlDirection, LmScore, LsrConfig, lm_nll, lm_scores, lsr_loss, parallel_marginal_log_likelihood};
pub use rag::{rag_sequence_nll, rag_token_nll, split_docs};
