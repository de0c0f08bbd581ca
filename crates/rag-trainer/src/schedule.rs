//! Learning-rate schedules: linear warm-up, then constant, linear or cosine decay. The formulas
//! are HF transformers' `get_{constant,linear,cosine}_schedule_with_warmup`, so a recipe ported
//! from PyTorch sees the same learning rate at every step.

use serde::{Deserialize, Serialize};

/// What follows the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decay {
    /// Stays at the peak.
    Constant,
    /// Falls linearly to 0 at the last step.
    Linear,
    /// Half a cosine from the peak to 0 at the last step.
    Cosine,
}

/// A learning-rate multiplier per optimizer step, in `[0, 1]`; each parameter group's learning
/// rate is its peak times this.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Steps of linear warm-up from 0.
    pub warmup_steps: u64,
    /// Total optimizer steps of the run.
    pub total_steps: u64,
    /// The decay after warm-up.
    pub decay: Decay,
}

impl Schedule {
    /// The multiplier at optimizer step `step` (0-based), HF's formula: `step / warmup` during
    /// warm-up (so the first step has learning rate 0 when there is a warm-up), then
    /// `(total − step) / (total − warmup)` for linear and
    /// `½(1 + cos(π (step − warmup) / (total − warmup)))` for cosine, floored at 0.
    pub fn factor(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return step as f64 / self.warmup_steps.max(1) as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = (step - self.warmup_steps) as f64 / span;
        match self.decay {
            Decay::Constant => 1.0,
            Decay::Linear => (1.0 - progress).max(0.0),
            Decay::Cosine => (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hf_linear_and_cosine_with_warmup() {
        // transformers.get_linear_schedule_with_warmup(opt, 2, 6), lr 1: steps 0..7.
        let linear = Schedule { warmup_steps: 2, total_steps: 6, decay: Decay::Linear };
        let got: Vec<f64> = (0..7).map(|s| linear.factor(s)).collect();
        assert_eq!(got, vec![0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0]);
        // get_cosine_schedule_with_warmup(opt, 2, 6): 0, .5, 1, cos² steps, 0.
        let cosine = Schedule { warmup_steps: 2, total_steps: 6, decay: Decay::Cosine };
        let want = [0.0, 0.5, 1.0, 0.853_553_390_593_273_8, 0.5, 0.146_446_609_406_726_3, 0.0];
        for (s, w) in want.iter().enumerate() {
            assert!((cosine.factor(s as u64) - w).abs() < 1e-12, "step {s}: {} vs {w}", cosine.factor(s as u64));
        }
        let constant = Schedule { warmup_steps: 0, total_steps: 6, decay: Decay::Constant };
        assert!((0..9).all(|s| constant.factor(s) == 1.0));
    }
}
