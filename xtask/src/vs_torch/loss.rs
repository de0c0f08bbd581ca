//! RAG-Token's loss, forward and backward, over logits of BART's vocabulary (B 8, K 5, T 32,
//! V 50,265, f32): against the memory-bound pass (the logits read once, their gradient written
//! once, at this machine's copy bandwidth) and against PyTorch on the same logits.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Distribution, ElementConversion, Int, Tensor, TensorData};
use rag::rag_losses::{NllConfig, Reduction, rag_token_nll};
use serde_json::json;

use super::{Options, Side, library, write_case};

const B: usize = 8;
const K: usize = 5;
const T: usize = 32;
const V: usize = 50265;
const ROUNDS: usize = 3;

pub fn run<IB: Backend>(dir: &Path, options: &Options, device: &IB::Device) -> Result<Side> {
    Autodiff::<IB>::seed(device, 7);
    let logits = Tensor::<Autodiff<IB>, 4>::random([B, K, T, V], Distribution::Normal(0.0, 2.0), device);
    let scores = Tensor::<Autodiff<IB>, 2>::random([B, K], Distribution::Normal(0.0, 1.0), device);
    let target = Tensor::<Autodiff<IB>, 2, Int>::random([B, T], Distribution::Uniform(0.0, V as f64), device);
    let mask = Tensor::<Autodiff<IB>, 2, Bool>::from_data(TensorData::new(vec![true; B * T], [B, T]), device);
    let config = NllConfig::new().with_reduction(Reduction::TokenMean);
    let rounds = if options.quick { 1 } else { ROUNDS };
    let mut seconds = Vec::new();
    let mut loss_value = 0.0;
    for round in 0..=rounds {
        let start = Instant::now();
        let l = logits.clone().require_grad();
        let s = scores.clone().require_grad();
        let loss = rag_token_nll(l.clone(), s.clone(), target.clone(), mask.clone(), &config)?;
        let value: f64 = loss.clone().into_scalar().elem();
        let grads = loss.backward();
        let grad = l.grad(&grads).expect("the logits require a gradient");
        std::hint::black_box(&grad);
        if round > 0 {
            seconds.push(start.elapsed().as_secs_f64());
        }
        loss_value = value;
    }
    let bytes = 2 * B * K * T * V * size_of::<f32>();
    let bandwidth = rag_benches::copy_bandwidth_gbs(B * K * T * V * size_of::<f32>());
    let flat = |t: Tensor<IB, 4>| t.into_data();
    rag::rag_hf::write_safetensors(
        &dir.join("inputs.safetensors"),
        &[
            ("logits".into(), flat(logits.inner())),
            ("scores".into(), scores.inner().into_data()),
            ("target".into(), target.inner().into_data().convert::<i64>()),
        ],
    )?;
    write_case(dir, &json!({"threads": options.threads, "rounds": rounds}))?;
    Ok(json!({
        "unit": "forward+backward", "seconds": seconds, "loss": loss_value,
        "bound_seconds": bytes as f64 / (bandwidth * 1e9), "copy_bandwidth_gbs": bandwidth,
        "library": format!("{}: rag_losses::rag_token_nll", library::<IB>(device)),
    }))
}
