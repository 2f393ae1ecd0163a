//! How the team splits each layer over its parts, and the copies of each part's blocks
//! of the weights into its shard and back.

use super::Team;
use crate::model::Autoencoder;
use std::ops::Range;
use std::sync::PoisonError;

/// Parts are cut at multiples of this many units: no register tile is split.
const ALIGN: usize = 8;

/// Whether a layer's parts own rows (input units) or columns (output units) of `W`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Split {
    Inputs,
    Outputs,
}

/// Even layers split by inputs, odd ones by outputs, so that each odd layer's output
/// parts are the next layer's input parts.
pub(super) fn split_of(layer: usize) -> Split {
    if layer % 2 == 0 {
        Split::Inputs
    } else {
        Split::Outputs
    }
}

/// Whether [`Team`] can train `model`: an even number of layers (so the output layer
/// splits by outputs), as every autoencoder with a mirrored decoder has, and no
/// parameters but the dense layers' (the shards hold only those), and a coding layer
/// whose columns are independent (the team splits it by columns).
pub(crate) fn suits(model: &Autoencoder) -> bool {
    let layers = model.layer_count();
    layers >= 2
        && layers % 2 == 0
        && model.parameters().len() == 2 * layers
        && model.config().coding.columns_independent()
}

/// The cut points of `n` items into `parts` aligned runs: `parts + 1` increasing values
/// from 0 to `n` (runs may be empty when `n` is small). Each cut is the multiple of
/// [`ALIGN`] nearest to an even share: 300 units cut at 152 leave both parts 10
/// register tiles wide, where 144 would leave one 9 and the other 10.
pub(super) fn cuts(n: usize, parts: usize) -> Vec<usize> {
    let mut at: Vec<usize> = (0..=parts)
        .map(|t| ((n * t / parts + ALIGN / 2) / ALIGN * ALIGN).min(n))
        .collect();
    at[parts] = n;
    at
}

/// One layer's shape and how it is split.
#[derive(Clone, Debug)]
pub(super) struct LayerPlan {
    pub(super) inputs: usize,
    pub(super) units: usize,
    pub(super) split: Split,
    /// Cut points of the split dimension (`inputs` or `units`).
    pub(super) cuts: Vec<usize>,
}

impl LayerPlan {
    pub(super) fn part(&self, t: usize) -> Range<usize> {
        self.cuts[t]..self.cuts[t + 1]
    }

    /// Rows and columns of part `t`'s block of `W`.
    pub(super) fn block(&self, t: usize) -> (usize, usize) {
        match self.split {
            Split::Inputs => (self.part(t).len(), self.units),
            Split::Outputs => (self.inputs, self.part(t).len()),
        }
    }

    /// Columns of the output part `t` holds: all of them when split by inputs.
    pub(super) fn output_width(&self, t: usize) -> usize {
        match self.split {
            Split::Inputs => self.units,
            Split::Outputs => self.part(t).len(),
        }
    }
}

impl Team {
    /// Copies each part's blocks of the model's parameters into its shard.
    pub(super) fn load(&mut self, model: &Autoencoder) {
        for (t, shard) in self.shards.iter_mut().enumerate() {
            let shard = shard.get_mut().unwrap_or_else(PoisonError::into_inner);
            for (l, (plan, layer)) in self.layers.iter().zip(model.layers()).enumerate() {
                let part = plan.part(t);
                match plan.split {
                    Split::Inputs => {
                        let rows = &layer.weight[part.start * plan.units..part.end * plan.units];
                        shard.weights[l].copy_from_slice(rows);
                        shard.biases[l].copy_from_slice(layer.bias);
                    }
                    Split::Outputs => {
                        let width = part.len();
                        for (i, row) in layer.weight.chunks_exact(plan.units).enumerate() {
                            shard.weights[l][i * width..(i + 1) * width]
                                .copy_from_slice(&row[part.clone()]);
                        }
                        shard.biases[l].copy_from_slice(&layer.bias[part]);
                    }
                }
            }
        }
    }

    /// Copies the shards' parameters back into the model.
    pub(super) fn store(&mut self, model: &mut Autoencoder) {
        for (t, shard) in self.shards.iter_mut().enumerate() {
            let shard = shard.get_mut().unwrap_or_else(PoisonError::into_inner);
            for (l, plan) in self.layers.iter().enumerate() {
                let layer = model.layer_mut(l);
                let part = plan.part(t);
                match plan.split {
                    Split::Inputs => {
                        layer.weight[part.start * plan.units..part.end * plan.units]
                            .copy_from_slice(&shard.weights[l]);
                        // Every part holds the same whole bias.
                        if t == 0 {
                            layer.bias.copy_from_slice(&shard.biases[l]);
                        }
                    }
                    Split::Outputs => {
                        let width = part.len();
                        for (i, row) in layer.weight.chunks_exact_mut(plan.units).enumerate() {
                            row[part.clone()]
                                .copy_from_slice(&shard.weights[l][i * width..(i + 1) * width]);
                        }
                        layer.bias[part].copy_from_slice(&shard.biases[l]);
                    }
                }
            }
        }
    }
}
