//! Optimizers with Keras 3 semantics, and the per-parameter state they keep.

use crate::params::Parameters;
use kernels::optim::{adam_update, momentum_update, AdamStep, MomentumStep};
use serde::{Deserialize, Serialize};

/// Keras' default Adam `epsilon`.
pub const ADAM_EPSILON: f32 = 1e-7;

/// How parameters move along their gradients.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Optimizer {
    /// Stochastic gradient descent; with `momentum == 0` the plain step `w -= lr g`,
    /// which the trainer fuses into the weight-gradient GEMM.
    Sgd {
        /// Learning rate.
        lr: f32,
        /// Momentum coefficient (0 for none).
        momentum: f32,
        /// Nesterov's variant of momentum.
        nesterov: bool,
    },
    /// Adam (Kingma and Ba), with Keras' bias correction folded into the step size.
    Adam {
        /// Learning rate.
        lr: f32,
        /// First-moment decay (Keras: 0.9).
        beta1: f32,
        /// Second-moment decay (Keras: 0.999).
        beta2: f32,
        /// Denominator guard (Keras: 1e-7).
        epsilon: f32,
    },
}

impl Optimizer {
    /// Plain SGD at learning rate `lr` (the reference uses 1.0).
    pub fn sgd(lr: f32) -> Self {
        Self::Sgd {
            lr,
            momentum: 0.0,
            nesterov: false,
        }
    }

    /// Adam with Keras' defaults at learning rate `lr` (Keras: 0.001).
    pub fn adam(lr: f32) -> Self {
        Self::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: ADAM_EPSILON,
        }
    }

    /// The learning rate.
    pub fn learning_rate(&self) -> f32 {
        match *self {
            Self::Sgd { lr, .. } | Self::Adam { lr, .. } => lr,
        }
    }

    /// The same optimizer at learning rate `lr` (a schedule's step).
    pub fn with_learning_rate(&self, lr: f32) -> Self {
        let mut scaled = *self;
        match &mut scaled {
            Self::Sgd { lr: rate, .. } | Self::Adam { lr: rate, .. } => *rate = lr,
        }
        scaled
    }

    /// Whether the update is the plain `w -= lr g` that fuses into the GEMM.
    pub fn is_plain_sgd(&self) -> bool {
        matches!(self, Self::Sgd { momentum, .. } if *momentum == 0.0)
    }

    /// Checks the hyper-parameters.
    pub fn validate(&self) -> Result<(), String> {
        let lr = self.learning_rate();
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(format!("learning rate {lr} must be positive and finite"));
        }
        match *self {
            Self::Sgd { momentum, .. } if !(0.0..1.0).contains(&momentum) => {
                Err(format!("momentum {momentum} must lie in [0, 1)"))
            }
            Self::Adam { beta1, beta2, epsilon, .. }
                if !((0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2) && epsilon > 0.0) =>
            {
                Err(format!("Adam needs beta1, beta2 in [0, 1) and epsilon > 0 (got {beta1}, {beta2}, {epsilon})"))
            }
            _ => Ok(()),
        }
    }
}

/// Slots an optimizer keeps per parameter tensor (velocity, or Adam's two moments), in
/// the order of the model's [`Parameters`]: slot `k` belongs to its `k`-th tensor, and
/// checkpoints store it under that tensor's name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState {
    /// Updates applied so far (Adam's `t`).
    pub iterations: u64,
    /// First slot per tensor (velocity, or Adam's `m`); empty for plain SGD.
    pub first: Vec<Vec<f32>>,
    /// Second slot per tensor (Adam's `v`); empty otherwise.
    pub second: Vec<Vec<f32>>,
}

impl OptimizerState {
    /// Zeroed slots for `params` as `optimizer` needs them.
    pub fn new(optimizer: &Optimizer, params: &Parameters) -> Self {
        let zeros =
            || -> Vec<Vec<f32>> { params.iter().map(|t| vec![0.0; t.values.len()]).collect() };
        match optimizer {
            Optimizer::Sgd { momentum, .. } if *momentum == 0.0 => Self::default(),
            Optimizer::Sgd { .. } => Self {
                first: zeros(),
                ..Self::default()
            },
            Optimizer::Adam { .. } => Self {
                first: zeros(),
                second: zeros(),
                ..Self::default()
            },
        }
    }

    /// Applies one update to the parameter tensor at position `slot` from its gradient.
    /// Call [`OptimizerState::advance`] once per step, before the updates.
    pub fn apply(&mut self, optimizer: &Optimizer, slot: usize, grad: &[f32], param: &mut [f32]) {
        match *optimizer {
            Optimizer::Sgd {
                lr,
                momentum,
                nesterov,
            } => {
                if momentum == 0.0 {
                    kernels::reduce::scaled_add(-lr, grad, param);
                } else {
                    let step = MomentumStep {
                        lr,
                        momentum,
                        nesterov,
                    };
                    momentum_update(step, grad, &mut self.first[slot], param);
                }
            }
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                epsilon,
            } => {
                let step = AdamStep::new(lr, beta1, beta2, epsilon, self.iterations);
                adam_update(
                    step,
                    grad,
                    &mut self.first[slot],
                    &mut self.second[slot],
                    param,
                );
            }
        }
    }

    /// Counts one more step.
    pub fn advance(&mut self) {
        self.iterations += 1;
    }
}
