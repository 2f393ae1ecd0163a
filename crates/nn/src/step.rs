//! The mathematics of one training step, written once. The engines (the forked step in
//! [`crate::trainer`], the team in `team`) decide only which thread computes which rows
//! or columns, and when; the arithmetic of each stage is one of these calls:
//!
//! - forward, after each product `Z = X W`: [`StepPlan::forward_epilogue`], the bias and
//!   the activation (the output layer keeps its logits under BCE), and the coding
//!   layer's transform (through [`crate::coding`]);
//! - the output step: [`StepPlan::output_step`], the loss's gradient `dZ` of the output
//!   layer and its statistics (through [`Loss`]);
//! - backward, after each input gradient `dA = dZ W^T` (with the layer's weights before
//!   their update): [`StepPlan::to_dz`], the activation's derivative, fused with the
//!   penalty's gradient at the coding layer (through [`crate::coding`]);
//! - the parameter gradients `dW = X^T dZ` and `db = colsum(dZ)`, or plain SGD fused
//!   into them, are single products every engine schedules itself;
//! - the batch's loss: [`StepPlan::batch_loss`].
//!
//! `tests/suite/gradients.rs` checks these against finite differences through the forked
//! step, and `tests/suite/engines.rs` checks every engine against that step.

use crate::coding::Coding;
use crate::config::ModelConfig;
use crate::loss::Loss;
use crate::penalty::Penalty;
use kernels::activation::{activation_backward, bias_activation_forward};
use kernels::output::OutputStats;
use kernels::{Activation, Layout};

/// One layer's shape and activations, as the step needs them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LayerMath {
    /// Input width.
    pub inputs: usize,
    /// Output width.
    pub units: usize,
    /// The layer's activation, whose derivative the backward pass applies.
    pub activation: Activation,
    /// The activation applied in the forward buffers (logits are kept for BCE outputs).
    pub stored: Activation,
}

/// The step of one architecture: its layers, which is the coding layer, its penalty
/// and its loss.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StepPlan {
    layers: Vec<LayerMath>,
    coding_layer: usize,
    coding: Coding,
    penalty: Penalty,
    loss: Loss,
}

impl StepPlan {
    pub(crate) fn new(config: &ModelConfig) -> Self {
        let last = config.layers.len().saturating_sub(1);
        let layers = config
            .layers
            .iter()
            .enumerate()
            .map(|(l, spec)| LayerMath {
                inputs: spec.inputs,
                units: spec.units,
                activation: spec.activation,
                stored: if l == last {
                    config.loss.stored_output_activation(spec.activation)
                } else {
                    spec.activation
                },
            })
            .collect();
        Self {
            layers,
            coding_layer: config.coding_layer,
            coding: config.coding,
            penalty: config.penalty,
            loss: config.loss,
        }
    }

    pub(crate) fn layer(&self, l: usize) -> LayerMath {
        self.layers[l]
    }

    /// Scratch values [`StepPlan::to_dz`] needs.
    pub(crate) fn scratch_len(&self) -> usize {
        let units = self.layers.get(self.coding_layer).map_or(0, |l| l.units);
        self.penalty.scratch_len(units)
    }

    /// `out <- stored_activation(out + bias)` on `rows` rows of layer `l`'s output, each
    /// as wide as `bias` (all of the layer's units, or, where the coding layer's columns
    /// are independent, one part of them), then the coding layer's transform.
    pub(crate) fn forward_epilogue(&self, l: usize, out: &mut [f32], rows: usize, bias: &[f32]) {
        self.forward_epilogue_with(l, out, rows, bias, &[]);
    }

    /// [`StepPlan::forward_epilogue`] of a coding layer whose transform reads the
    /// latents' `thresholds`.
    pub(crate) fn forward_epilogue_with(
        &self,
        l: usize,
        out: &mut [f32],
        rows: usize,
        bias: &[f32],
        thresholds: &[f32],
    ) {
        let layout = Layout::contiguous(rows, bias.len());
        bias_activation_forward(self.layers[l].stored, layout, out, bias);
        if l == self.coding_layer {
            self.coding.forward(layout, out, thresholds);
        }
    }

    /// The output step on rows of `width` of the output layer's columns, of a batch of
    /// `batch_rows` rows: turns the forward buffer `z` and the `targets` into `dz`, and
    /// returns the loss statistics.
    pub(crate) fn output_step(
        &self,
        z: &[f32],
        targets: &[f32],
        dz: &mut [f32],
        batch_rows: usize,
        width: usize,
    ) -> OutputStats {
        let output = self.layers[self.layers.len() - 1];
        let scale = Loss::scale(batch_rows, output.units);
        self.loss
            .output_step(output.activation, z, targets, dz, scale, width)
    }

    /// Turns `grad`, `dL/dA` of `rows` rows of `width` of layer `l`'s output columns
    /// (`act`), into `dL/dZ`; returns the penalty of those columns (0 below any layer
    /// but the coding one). Every row of the batch must be there.
    pub(crate) fn to_dz(
        &self,
        l: usize,
        act: &[f32],
        grad: &mut [f32],
        rows: usize,
        width: usize,
        scratch: &mut [f32],
    ) -> f64 {
        let layout = Layout::contiguous(rows, width);
        let act = &act[..rows * width];
        let activation = self.layers[l].activation;
        if l == self.coding_layer {
            crate::coding::backward(activation, &self.penalty, layout, act, grad, scratch)
        } else {
            activation_backward(activation, layout, act, grad);
            0.0
        }
    }

    /// Whether `to_dz` of layer `l` needs every column of it at once: below any layer
    /// but the coding one, each row's gradient turns into `dZ` on its own.
    pub(crate) fn to_dz_needs_whole_batch(&self, l: usize) -> bool {
        l == self.coding_layer
    }

    /// The loss of a batch of `rows` rows: mean reconstruction loss plus penalty.
    pub(crate) fn batch_loss(&self, stats: &OutputStats, penalty: f64, rows: usize) -> f64 {
        let width = self.layers.first().map_or(0, |l| l.inputs);
        Loss::batch_mean(stats, rows, width) + penalty
    }
}
