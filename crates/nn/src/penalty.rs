//! The sparsity penalty on the coding layer's activations: its settings, its value, and
//! its gradient fused with the coding layer's activation backward. Each penalty is one
//! kernel of `kernels::sparsity`; this is the one place that dispatches between them.
//!
//! Every penalty follows Keras' activity-regularizer semantics: its value is divided by
//! the batch size `B` (see `kernels::sparsity` for the formulas). Each depends on the
//! whole batch's rows of a column only, never on other columns, so any engine may split
//! the coding layer by columns.

use kernels::activation::activation_backward;
use kernels::sparsity::{
    kl_sparsity_backward, kl_sparsity_penalty, l1_sparsity_backward, l1_sparsity_penalty,
    l2_sparsity_backward, l2_sparsity_penalty, squared_sparsity_backward, squared_sparsity_penalty,
};
use kernels::{Activation, Layout};
use serde::{Deserialize, Serialize};

/// The sparsity penalty on the coding layer's activations.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Penalty {
    /// KL divergence between a target activation and each unit's mean activation.
    Kl {
        /// Target mean activation, in (0, 1).
        target: f32,
        /// Weight of the penalty.
        weight: f32,
    },
    /// L1 norm of the activations.
    L1 {
        /// Weight of the penalty.
        weight: f32,
    },
    /// Squared L2 norm of the activations (Keras' `activity_regularizer=l2`).
    L2 {
        /// Weight of the penalty.
        weight: f32,
    },
    /// The squared difference of each unit's mean activation from a target: the
    /// simpler penalty the book describes before KL.
    Squared {
        /// Target mean activation.
        target: f32,
        /// Weight of the penalty.
        weight: f32,
    },
    /// No penalty.
    None,
}

impl Penalty {
    /// The name in configs and on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Kl { .. } => "kl",
            Self::L1 { .. } => "l1",
            Self::L2 { .. } => "l2",
            Self::Squared { .. } => "squared",
            Self::None => "none",
        }
    }

    /// Scratch values [`Penalty::value`] and [`Penalty::backward`] need for a coding
    /// layer `units` wide.
    pub(crate) fn scratch_len(&self, units: usize) -> usize {
        units
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        let weight = match *self {
            Self::Kl { target, weight } => {
                if !(target > 0.0 && target < 1.0) {
                    return Err(format!(
                        "KL sparsity target {target} must lie strictly between 0 and 1"
                    ));
                }
                weight
            }
            Self::Squared { target, weight } => {
                if !target.is_finite() {
                    return Err(format!("sparsity target {target} must be finite"));
                }
                weight
            }
            Self::L1 { weight } | Self::L2 { weight } => weight,
            Self::None => return Ok(()),
        };
        if !(weight >= 0.0 && weight.is_finite()) {
            return Err(format!(
                "sparsity weight {weight} must be finite and non-negative"
            ));
        }
        Ok(())
    }

    /// The penalty of a batch of coding activations `coding` (no gradient).
    pub(crate) fn value(&self, layout: Layout, coding: &[f32], scratch: &mut [f32]) -> f64 {
        match *self {
            Self::Kl { target, weight } | Self::Squared { target, weight } => {
                let of_means = match self {
                    Self::Kl { .. } => kl_sparsity_penalty,
                    _ => squared_sparsity_penalty,
                };
                of_means(layout, coding, target, weight, &mut scratch[..layout.cols])
            }
            Self::L1 { weight } => l1_sparsity_penalty(layout, coding, weight),
            Self::L2 { weight } => l2_sparsity_penalty(layout, coding, weight),
            Self::None => 0.0,
        }
    }

    /// Turns `grad` from `dL/da` at the coding layer's output `a = activation(z)` into
    /// `dL/dz`, the penalty's gradient added first; returns the penalty's value. `layout`
    /// may hold any subset of the columns, but every row of the batch.
    pub(crate) fn backward(
        &self,
        activation: Activation,
        layout: Layout,
        a: &[f32],
        grad: &mut [f32],
        scratch: &mut [f32],
    ) -> f64 {
        match *self {
            Self::Kl { target, weight } | Self::Squared { target, weight } => {
                let of_means = match self {
                    Self::Kl { .. } => kl_sparsity_backward,
                    _ => squared_sparsity_backward,
                };
                let scratch = &mut scratch[..layout.cols];
                of_means(activation, layout, a, grad, target, weight, scratch)
            }
            Self::L1 { weight } | Self::L2 { weight } => {
                let elementwise = match self {
                    Self::L1 { .. } => l1_sparsity_backward,
                    _ => l2_sparsity_backward,
                };
                elementwise(activation, layout, a, grad, weight)
            }
            Self::None => {
                activation_backward(activation, layout, a, grad);
                0.0
            }
        }
    }
}
