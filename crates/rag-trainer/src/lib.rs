//! A generic training engine that knows nothing of RAG.
//!
//! This crate will hold (issue "rag-trainer"): a `TrainStep` interface the engine drives; AdamW
//! with decoupled weight decay, warm-up then linear or cosine decay, global-norm gradient clipping
//! with PyTorch's `clip_grad_norm_` semantics, gradient accumulation, parameter groups with their
//! own learning rates, freezing; atomic checkpoints with resume (model, optimizer, scheduler, RNG,
//! data position); evaluation hooks, `metrics.jsonl`, progress bars and SVG plots.
//!
//! It is generic over the Burn backend and never picks one.
