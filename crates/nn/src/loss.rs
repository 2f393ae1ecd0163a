//! The reconstruction loss: what the output layer keeps in the forward buffers, the
//! fused output step, and the scale `1 / (B * D)` that turns the summed per-element
//! losses of `B` rows of `D` values into the batch mean. Every engine goes through here.

use kernels::activation::activation_backward;
use kernels::output::{output_backward, OutputLoss, OutputStats};
use kernels::{Activation, Layout};
use serde::{Deserialize, Serialize};

/// The reconstruction loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// Binary cross-entropy on a sigmoid output, computed from the logits.
    Bce,
    /// Mean squared error.
    Mse,
}

impl Loss {
    /// The name in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bce => "bce",
            Self::Mse => "mse",
        }
    }

    /// The output activation this loss goes with: sigmoid for BCE, linear for MSE.
    pub fn natural_output_activation(self) -> Activation {
        match self {
            Self::Bce => Activation::Sigmoid,
            Self::Mse => Activation::Linear,
        }
    }

    /// What the fused output kernel computes for this loss.
    pub(crate) fn kernel(self) -> OutputLoss {
        match self {
            Self::Bce => OutputLoss::SigmoidBinaryCrossEntropy,
            Self::Mse => OutputLoss::LinearSquaredError,
        }
    }

    /// The activation the forward buffers apply at the output layer: under BCE they
    /// keep the logits, since the sigmoid is fused into the loss.
    pub(crate) fn stored_output_activation(self, activation: Activation) -> Activation {
        match self {
            Self::Bce => Activation::Linear,
            Self::Mse => activation,
        }
    }

    /// The factor from summed per-element losses (and their gradients) to the mean over
    /// `rows x width` values.
    pub(crate) fn scale(rows: usize, width: usize) -> f32 {
        1.0 / (rows * width) as f32
    }

    /// The mean reconstruction loss of a batch of `rows x width` values from its stats.
    pub(crate) fn batch_mean(stats: &OutputStats, rows: usize, width: usize) -> f64 {
        stats.loss_sum / (rows * width) as f64
    }

    /// The output step on whole rows of `width` values (all of a batch's columns, or one
    /// part of them): the loss statistics, and `dz`, the loss's gradient with respect to
    /// the output layer's pre-activations, each scaled by `scale` ([`Loss::scale`] of the
    /// whole batch). `z` is the forward buffer: logits under BCE, activated outputs
    /// under MSE, whose activation's derivative (if not linear) is applied here.
    pub(crate) fn output_step(
        self,
        activation: Activation,
        z: &[f32],
        targets: &[f32],
        dz: &mut [f32],
        scale: f32,
        width: usize,
    ) -> OutputStats {
        let stats = output_backward(self.kernel(), z, targets, dz, scale);
        if self == Self::Mse && activation != Activation::Linear {
            let rows = z.len() / width.max(1);
            activation_backward(activation, Layout::contiguous(rows, width), z, dz);
        }
        stats
    }
}
