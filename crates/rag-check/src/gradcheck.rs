//! Finite-difference checks of a model's gradients: the directional derivative `<∇L, v>` along
//! a seeded random direction `v` over every trainable parameter, against the central
//! difference `(L(θ + h·v) − L(θ − h·v)) / 2h`, both in f64.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};

/// Casts every float parameter to f64; trainable ones stay trainable leaves, buffers stay
/// buffers.
pub struct ToF64;

impl<B: AutodiffBackend> ModuleMapper<B> for ToF64 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.map(|t| {
            let trainable = t.is_require_grad();
            let t = t.cast(FloatDType::F64).detach();
            if trainable { t.require_grad() } else { t.set_require_grad(false) }
        })
    }
}

/// Each trainable parameter's gradient and shape.
struct Collect<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    out: Vec<(ParamId, Vec<usize>, Vec<f64>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            let values = g.into_data().convert::<f64>().to_vec::<f64>().expect("converted to f64 just above");
            self.out.push((param.id, param.val().dims().to_vec(), values));
        }
    }
}

/// Adds `scale · direction[id]` to each parameter the direction covers.
struct Shift<'a> {
    direction: &'a HashMap<ParamId, TensorData>,
    scale: f64,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Shift<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(delta) = self.direction.get(&param.id).cloned() else { return param };
        let scale = self.scale;
        param.map(|t| {
            let delta = Tensor::<B, D>::from_data(delta, (&t.device(), DType::F64));
            (t + delta * scale).detach().require_grad()
        })
    }
}

/// The result of [`directional_derivative`].
#[derive(Debug, Clone, Copy)]
pub struct DirectionalCheck {
    /// `<∇L, v>` from autodiff.
    pub analytic: f64,
    /// The central difference.
    pub numeric: f64,
    /// Trainable parameter tensors that received a gradient.
    pub params_with_grad: usize,
    /// The typical size of `<∇L, v>` for a random `v`: `‖∇L‖·‖v‖ / sqrt(n)` over the `n`
    /// parameter values.
    pub typical: f64,
}

impl DirectionalCheck {
    /// `|numeric − analytic| / max(|analytic|, typical)`: relative to the derivative, unless the
    /// random direction happens to be nearly orthogonal to the gradient (then a tiny `analytic`
    /// would turn the finite difference's own truncation error into a false failure).
    pub fn relative_error(&self) -> f64 {
        (self.numeric - self.analytic).abs() / self.analytic.abs().max(self.typical).max(1e-300)
    }
}

/// Checks `loss` (a scalar `[1]` of an f64 module, see [`ToF64`]) at `module` along a direction
/// seeded by `seed`, with step `h`.
pub fn directional_derivative<B: AutodiffBackend, M: Module<B> + Clone>(
    module: &M,
    loss: impl Fn(&M) -> Tensor<B, 1>,
    seed: u64,
    h: f64,
) -> DirectionalCheck {
    let grads = loss(module).backward();
    let mut collect = Collect::<B> { grads: &grads, out: Vec::new() };
    module.visit(&mut collect);
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    };
    let mut direction = HashMap::new();
    let (mut analytic, mut g_norm, mut v_norm, mut n) = (0.0, 0.0, 0.0, 0usize);
    for (id, shape, g) in &collect.out {
        let v: Vec<f64> = (0..g.len()).map(|_| next()).collect();
        analytic += g.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>();
        g_norm += g.iter().map(|x| x * x).sum::<f64>();
        v_norm += v.iter().map(|x| x * x).sum::<f64>();
        n += g.len();
        direction.insert(*id, TensorData::new(v, shape.clone()));
    }
    let at = |scale: f64| {
        let shifted = module.clone().map(&mut Shift { direction: &direction, scale });
        loss(&shifted).into_data().convert::<f64>().to_vec::<f64>().expect("converted to f64 just above")[0]
    };
    let numeric = (at(h) - at(-h)) / (2.0 * h);
    let typical = (g_norm * v_norm).sqrt() / (n.max(1) as f64).sqrt();
    DirectionalCheck { analytic, numeric, params_with_grad: collect.out.len(), typical }
}
