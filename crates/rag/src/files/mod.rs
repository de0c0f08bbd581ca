//! What is read and written: [`checkpoint`] (whole-model checkpoints), [`hf_rag`] (HF's RAG
//! checkpoints, with HF's losses),
//! [`qa`] (question files and SQuAD's answer metrics) and [`squad`] (SQuAD split by article).

pub(crate) mod checkpoint;
pub(crate) mod hf_rag;
pub(crate) mod qa;
pub mod squad;
