//! `Activation`: the feed-forward activations HF configs name (`hidden_act`,
//! `activation_function`), and [`project`], the linear layer over a batch of sequences; shared
//! by every model crate.

use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::activation::{gelu, gelu_approximate, relu, silu};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

/// A feed-forward activation, as HF's `ACT2FN` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// `gelu`: the exact erf form, `x·Φ(x)`.
    #[serde(rename = "gelu")]
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh` / `gelu_fast`: the tanh approximation.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    /// `relu`.
    #[serde(rename = "relu")]
    Relu,
    /// `silu` / `swish`.
    #[serde(rename = "silu", alias = "swish")]
    Silu,
}

impl Activation {
    /// Applies the activation elementwise.
    pub fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Gelu => gelu(x),
            Activation::GeluTanh => gelu_approximate(x),
            Activation::Relu => relu(x),
            Activation::Silu => silu(x),
        }
    }
}

/// `linear(x)` for `x` `[b, t, d]` as one `[b·t, d]` matrix product. `Linear::forward` on a
/// rank-3 input is a batched product over `[1, d, out]` weights: the CPU backend runs one small
/// GEMM per sequence, each packing the weights again (on two cores SmolLM2's prefill of 48
/// passages ran at half the speed, and its decoding steps, one token per row, far slower).
pub fn project<B: Backend>(linear: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, t, d] = x.dims();
    let y = linear.forward(x.reshape([b * t, d]));
    let out = y.dims()[1];
    y.reshape([b, t, out])
}
