//! Comparing numbers and reporting a component's result.

use std::fmt;

/// Worst absolute and relative errors over everything a check compared.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Errors {
    /// `max |ours − reference|`.
    pub max_abs: f64,
    /// The largest [`relative_error`] of any compared tensor.
    pub max_rel: f64,
}

impl Errors {
    /// Compares one tensor's values with the reference and returns its errors.
    pub fn between(ours: &[f64], reference: &[f64]) -> Self {
        Self { max_abs: max_abs_diff(ours, reference), max_rel: relative_error(ours, reference) }
    }

    /// The worse of two.
    pub fn max(self, other: Self) -> Self {
        Self { max_abs: nan_max(self.max_abs, other.max_abs), max_rel: nan_max(self.max_rel, other.max_rel) }
    }
}

/// `max(a, b)` where a NaN wins, so a NaN anywhere fails the check instead of vanishing.
fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

/// `max |a − b|` over two equally long slices (infinite when the lengths differ; NaN wins).
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, nan_max)
}

/// A tensor's values as f64, whatever its dtype (Flex reads an F64 tensor as f32 through
/// `into_scalar`; this does not).
pub fn values<B: burn::tensor::backend::Backend, const D: usize>(t: burn::tensor::Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec::<f64>().expect("converted to f64 just above")
}

/// Normwise relative error of a tensor: `max_i |a_i − b_i| / max_i |b_i|` (infinity norms), or the
/// absolute error when the reference is all zeros.
///
/// Elementwise relative errors are meaningless for gradients with entries that cancel to ~1e-17;
/// the infinity-norm ratio is the standard measure for them. Lengths must match (a mismatch is
/// infinitely wrong).
pub fn relative_error(ours: &[f64], reference: &[f64]) -> f64 {
    if ours.len() != reference.len() {
        return f64::INFINITY;
    }
    let diff = ours.iter().zip(reference).map(|(a, b)| (a - b).abs()).fold(0.0, nan_max);
    let scale = reference.iter().map(|b| b.abs()).fold(0.0, f64::max);
    if scale > 0.0 { diff / scale } else { diff }
}

/// One component's result.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentReport {
    /// The component's name.
    pub component: &'static str,
    /// Worst errors over all its cases.
    pub errors: Errors,
    /// The tolerance it was held to.
    pub tolerance: f64,
    /// Whether the tolerance bounds the absolute error (`max_abs`) rather than the relative one.
    pub absolute: bool,
    /// How many cases were compared.
    pub cases: usize,
    /// The names of the cases over tolerance, with their errors.
    pub failures: Vec<(String, Errors)>,
}

impl ComponentReport {
    /// Whether every case is within tolerance (and there was at least one).
    pub fn passed(&self) -> bool {
        let judged = if self.absolute { self.errors.max_abs } else { self.errors.max_rel };
        self.cases > 0 && self.failures.is_empty() && judged <= self.tolerance
    }
}

impl fmt::Display for ComponentReport {
    /// `COMPONENT: ok|FAIL max_abs_err=... max_rel_err=...`, then one line per failed case.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} max_abs_err={:.3e} max_rel_err={:.3e} cases={} tolerance={:.0e} ({})",
            self.component,
            if self.passed() { "ok" } else { "FAIL" },
            self.errors.max_abs,
            self.errors.max_rel,
            self.cases,
            self.tolerance,
            if self.absolute { "absolute" } else { "relative" },
        )?;
        for (name, errors) in &self.failures {
            write!(f, "\n  {name}: max_abs_err={:.3e} max_rel_err={:.3e}", errors.max_abs, errors.max_rel)?;
        }
        Ok(())
    }
}
