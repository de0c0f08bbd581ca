//! What is read and written: [`checkpoint`] (whole-model checkpoints), [`hf_rag`] (HF's RAG
//! checkpoints, with HF's losses) and [`qa`] (question files and SQuAD's answer metrics).

pub(crate) mod checkpoint;
pub(crate) mod hf_rag;
pub(crate) mod qa;
