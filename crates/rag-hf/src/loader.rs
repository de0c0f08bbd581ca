//! Building Burn modules from checkpoint tensors by their HuggingFace names.

use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

use crate::{Checkpoint, HfError, Result};

/// A view of a [`Checkpoint`] under a name prefix that creates tensors on one device with one
/// float dtype (the checkpoint's dtype is converted).
///
/// Names follow the checkpoint (`encoder.layer.0.attention.self.query`), so a model file reads
/// like its HF original; [`Loader::push`] descends one level. Every tensor is checked against the
/// shape the model's config implies before it is created.
#[derive(Debug, Clone)]
pub struct Loader<'a, B: Backend> {
    checkpoint: &'a Checkpoint,
    /// The model's root prefix inside the checkpoint (named in missing-tensor hints).
    root: String,
    prefix: String,
    device: B::Device,
    dtype: DType,
}

impl<'a, B: Backend> Loader<'a, B> {
    /// A loader for the model stored under `root` (`""`, `"bert."`,
    /// `"question_encoder.bert_model."`…) in `checkpoint`.
    pub fn new(checkpoint: &'a Checkpoint, root: &str, device: &B::Device, dtype: DType) -> Self {
        Self { checkpoint, root: root.to_string(), prefix: root.to_string(), device: device.clone(), dtype }
    }

    /// The loader one level down: names are looked up under `{prefix}{name}.`.
    pub fn push(&self, name: &str) -> Self {
        Self { prefix: format!("{}{name}.", self.prefix), ..self.clone() }
    }

    /// The full checkpoint name of `name` at this level.
    pub fn full_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Whether the checkpoint has `name` at this level.
    pub fn contains(&self, name: &str) -> bool {
        self.checkpoint.contains(&self.full_name(name))
    }

    /// The device tensors are created on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The float dtype tensors are created with.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    fn data(&self, name: &str, expected: &[usize]) -> Result<TensorData> {
        let full = self.full_name(name);
        let Some(found) = self.checkpoint.shape(&full) else {
            return Err(self.checkpoint.missing(&full, &self.root));
        };
        if found != expected {
            return Err(HfError::ShapeMismatch {
                file: self.checkpoint.file_of(&full).unwrap_or(self.checkpoint.location()).to_path_buf(),
                name: full,
                expected: expected.to_vec(),
                found: found.to_vec(),
            });
        }
        self.checkpoint.read(&full)
    }

    /// The tensor `name`, which must have `shape`.
    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        let data = self.data(name, &shape)?;
        Ok(Tensor::from_data(data, (&self.device, self.dtype)))
    }

    /// The tensor `name` as a trainable parameter.
    pub fn param<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Param<Tensor<B, D>>> {
        self.tensor(name, shape).map(Param::from_tensor)
    }

    /// A PyTorch `nn.Linear` stored as `{name}.weight` `[d_out, d_in]` (transposed here to Burn's
    /// `[d_in, d_out]`) and, when `bias`, `{name}.bias` `[d_out]`.
    pub fn linear(&self, name: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear<B>> {
        let at = self.push(name);
        let weight = transpose(at.data("weight", &[d_out, d_in])?);
        let weight = Param::from_tensor(Tensor::from_data(weight, (&self.device, self.dtype)));
        let bias = if bias { Some(at.param("bias", [d_out])?) } else { None };
        Ok(Linear { weight, bias })
    }

    /// A PyTorch `nn.LayerNorm` of width `d`: `{name}.weight`/`{name}.bias`, or the
    /// `gamma`/`beta` names of checkpoints converted from TensorFlow.
    pub fn layer_norm(&self, name: &str, d: usize, epsilon: f64) -> Result<LayerNorm<B>> {
        let at = self.push(name);
        let (scale, shift) =
            if !at.contains("weight") && at.contains("gamma") { ("gamma", "beta") } else { ("weight", "bias") };
        let mut norm = LayerNormConfig::new(d).with_epsilon(epsilon).init(&self.device);
        norm.gamma = at.param(scale, [d])?;
        norm.beta = Some(at.param(shift, [d])?);
        Ok(norm)
    }

    /// A PyTorch `nn.Embedding` `{name}.weight` `[n, d]`.
    pub fn embedding(&self, name: &str, n: usize, d: usize) -> Result<Embedding<B>> {
        let mut embedding = EmbeddingConfig::new(n, d).init(&self.device);
        embedding.weight = self.push(name).param("weight", [n, d])?;
        Ok(embedding)
    }
}

/// Where a model's tensors come from when it is built: a checkpoint, by HF name ([`Loader`]), or
/// a fresh initialization (HF's `_init_weights`: matrices `N(0, std)`, biases 0, norms 1 and 0).
///
/// A model's constructor takes a `Weights` and names every tensor once, so the module tree built
/// from scratch and the one read from a checkpoint are the same function (the names of a
/// whole-model checkpoint cannot drift apart from the names it is loaded by). Fresh tensors are
/// drawn in the order the constructor asks for them, from the backend's RNG.
#[derive(Debug, Clone)]
pub enum Weights<'a, B: Backend> {
    /// Read from a checkpoint.
    Load(Loader<'a, B>),
    /// Initialized on `device`, matrices drawn from `N(0, std)`.
    Init {
        /// Where the tensors are created.
        device: B::Device,
        /// The standard deviation of weight matrices and embeddings.
        std: f64,
    },
}

impl<'a, B: Backend> Weights<'a, B> {
    /// Fresh weights on `device`, matrices `N(0, std)`.
    pub fn init(device: &B::Device, std: f64) -> Self {
        Self::Init { device: device.clone(), std }
    }

    /// The weights one level down (`{prefix}{name}.` in a checkpoint).
    pub fn push(&self, name: &str) -> Self {
        match self {
            Self::Load(loader) => Self::Load(loader.push(name)),
            init => init.clone(),
        }
    }

    /// Whether a checkpoint has `name` at this level (never, for fresh weights).
    pub fn contains(&self, name: &str) -> bool {
        matches!(self, Self::Load(loader) if loader.contains(name))
    }

    /// The device tensors are created on.
    pub fn device(&self) -> &B::Device {
        match self {
            Self::Load(loader) => loader.device(),
            Self::Init { device, .. } => device,
        }
    }

    /// The float dtype tensors are created with (the backend's default for fresh weights).
    pub fn dtype(&self) -> DType {
        match self {
            Self::Load(loader) => loader.dtype(),
            Self::Init { .. } => <B::FloatElem as burn::tensor::Element>::dtype(),
        }
    }

    /// An `nn.Linear` `{name}` (`weight` `[d_out, d_in]` in the checkpoint; `bias` when asked).
    pub fn linear(&self, name: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear<B>> {
        match self {
            Self::Load(loader) => loader.linear(name, d_in, d_out, bias),
            Self::Init { device, std } => Ok(init_linear(d_in, d_out, bias, *std, device)),
        }
    }

    /// An `nn.Embedding` `{name}.weight` `[n, d]`.
    pub fn embedding(&self, name: &str, n: usize, d: usize) -> Result<Embedding<B>> {
        match self {
            Self::Load(loader) => loader.embedding(name, n, d),
            Self::Init { device, std } => Ok(init_embedding(n, d, *std, device)),
        }
    }

    /// An `nn.LayerNorm` `{name}` of width `d` (fresh: scale 1, shift 0).
    pub fn layer_norm(&self, name: &str, d: usize, epsilon: f64) -> Result<LayerNorm<B>> {
        match self {
            Self::Load(loader) => loader.layer_norm(name, d, epsilon),
            Self::Init { device, .. } => Ok(LayerNormConfig::new(d).with_epsilon(epsilon).init(device)),
        }
    }

    /// The parameter `name` of `shape`, fresh ones (a norm's scale).
    pub fn ones<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Param<Tensor<B, D>>> {
        match self {
            Self::Load(loader) => loader.param(name, shape),
            Self::Init { device, .. } => Ok(Param::from_tensor(Tensor::ones(shape, device))),
        }
    }

    /// The parameter `name` of `shape`, fresh `N(0, std)` (a matrix stored as it is used, such
    /// as an untied LM head `[vocab, d]`).
    pub fn normal<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Param<Tensor<B, D>>> {
        match self {
            Self::Load(loader) => loader.param(name, shape),
            Self::Init { device, std } => {
                Ok(burn::nn::Initializer::Normal { mean: 0.0, std: *std }.init(shape, device))
            }
        }
    }

    /// The tensor `name` of `shape` if the checkpoint has it, else zeros (a buffer such as BART's
    /// `final_logits_bias`, which HF fills with zeros when absent).
    pub fn zeros_unless_stored<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        match self {
            Self::Load(loader) if loader.contains(name) => loader.tensor(name, shape),
            Self::Load(loader) => Ok(Tensor::zeros(shape, (loader.device(), loader.dtype()))),
            Self::Init { device, .. } => Ok(Tensor::zeros(shape, device)),
        }
    }
}

/// Transposes a rank-2 row-major tensor's values.
fn transpose(data: TensorData) -> TensorData {
    let [rows, cols] = [data.shape[0], data.shape[1]];
    fn flip<T: Copy + burn::tensor::Element>(values: Vec<T>, rows: usize, cols: usize) -> TensorData {
        let mut out = Vec::with_capacity(values.len());
        for c in 0..cols {
            out.extend((0..rows).map(|r| values[r * cols + c]));
        }
        TensorData::new(out, [cols, rows])
    }
    match data.dtype {
        DType::F64 => flip(data.into_vec::<f64>().expect("dtype checked"), rows, cols),
        _ => flip(data.convert::<f32>().into_vec::<f32>().expect("converted to f32"), rows, cols),
    }
}

/// An `nn.Linear` for models built from a config rather than a checkpoint, initialized as HF's
/// `_init_weights` does for BERT, BART and LLaMA: weights `N(0, std)`, bias zero.
pub fn init_linear<B: Backend>(d_in: usize, d_out: usize, bias: bool, std: f64, device: &B::Device) -> Linear<B> {
    let mut linear = LinearConfig::new(d_in, d_out)
        .with_bias(false)
        .with_initializer(burn::nn::Initializer::Normal { mean: 0.0, std })
        .init(device);
    linear.bias = bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device)));
    linear
}

/// An `nn.Embedding` initialized `N(0, std)` (HF's init), from a config.
pub fn init_embedding<B: Backend>(n: usize, d: usize, std: f64, device: &B::Device) -> Embedding<B> {
    EmbeddingConfig::new(n, d).with_initializer(burn::nn::Initializer::Normal { mean: 0.0, std }).init(device)
}
