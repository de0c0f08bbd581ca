//! Helpers shared by the integration tests: f64 tensors on Flex (without touching the global
//! default dtype, so the losses are exercised with F64 inputs on an F32-default device) and a
//! naive host reference written straight from the definitions.

#![allow(dead_code)]

pub mod reference;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Bool, DType, Int, Tensor, TensorData, backend::Backend};

/// The autodiff backend of the tests.
pub type Ad = Autodiff<Flex>;
/// The plain CPU backend, for finite-difference evaluations.
pub type Cpu = Flex;

pub fn device() -> burn::tensor::Device<Flex> {
    Default::default()
}

pub fn floats<B: Backend, const D: usize>(data: &[f64], shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), (&device_of::<B>(), DType::F64))
}

pub fn ints<B: Backend, const D: usize>(data: &[i64], shape: [usize; D]) -> Tensor<B, D, Int> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), &device_of::<B>())
}

pub fn bools<B: Backend, const D: usize>(data: &[bool], shape: [usize; D]) -> Tensor<B, D, Bool> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), &device_of::<B>())
}

fn device_of<B: Backend>() -> B::Device {
    Default::default()
}

pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec::<f64>().unwrap()
}

pub fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    let v = values(t);
    assert_eq!(v.len(), 1, "expected a reduced loss");
    v[0]
}

/// `|a − b| ≤ tol·(1 + |b|)`, element by element, with a message naming the quantity.
pub fn assert_close(what: &str, ours: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(ours.len(), expected.len(), "{what}: length");
    for (i, (a, b)) in ours.iter().zip(expected).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}[{i}]: ours {a} vs expected {b} (diff {:e}, tol {tol:e})",
            (a - b).abs()
        );
    }
}

/// Row-wise log-softmax over the last axis of a flat row-major array.
pub fn log_softmax_rows(x: &[f64], width: usize) -> Vec<f64> {
    x.chunks(width)
        .flat_map(|row| {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            row.iter().map(move |v| v - lse).collect::<Vec<_>>()
        })
        .collect()
}

pub fn logsumexp(x: &[f64]) -> f64 {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}
