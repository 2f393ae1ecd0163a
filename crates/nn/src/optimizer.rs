//! Optimizers with Keras 3 semantics, and the per-parameter state they keep.

use crate::parallel::{cut_mut, cut_ref, Threads};
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
        let first = self.first.get_mut(slot).map(Vec::as_mut_slice);
        let second = self.second.get_mut(slot).map(Vec::as_mut_slice);
        update(optimizer, self.iterations, grad, first, second, param);
    }

    /// [`OptimizerState::apply`] with the tensor cut into one contiguous range per
    /// thread of `threads`, each range updated by its own thread: the same bits as
    /// `apply`, since every update is element by element. For tensors of millions of
    /// values (an SAE's weights), where one thread's pass over the parameter, its
    /// gradient and its slots would leave the other cores idle. Small tensors are
    /// updated by the caller alone.
    pub fn apply_split(
        &mut self,
        threads: &Threads,
        optimizer: &Optimizer,
        slot: usize,
        grad: &[f32],
        param: &mut [f32],
    ) {
        if threads.count() == 1 || param.len() < SPLIT_UPDATE_FROM {
            self.apply(optimizer, slot, grad, param);
            return;
        }
        assert_eq!(grad.len(), param.len(), "apply_split: gradient length");
        // Ranges start on cache lines (16 f32), so no two threads write one.
        let lines = param.len().div_ceil(16);
        let lengths: Vec<usize> = threads
            .ranges(lines)
            .into_iter()
            .map(|r| (r.end * 16).min(param.len()) - r.start * 16)
            .collect();
        let iterations = self.iterations;
        let pieces = || lengths.iter().copied();
        let grads = cut_ref(grad, pieces());
        let firsts = slot_pieces(&mut self.first, slot, &lengths);
        let seconds = slot_pieces(&mut self.second, slot, &lengths);
        let parts: Vec<_> = grads
            .zip(cut_mut(param, pieces()))
            .zip(firsts.into_iter().zip(seconds))
            .collect();
        threads.each(parts, &|_, ((grad, param), (first, second))| {
            update(optimizer, iterations, grad, first, second, param);
        });
    }

    /// Counts one more step.
    pub fn advance(&mut self) {
        self.iterations += 1;
    }
}

/// Tensors of at least this many values are updated by all threads
/// ([`OptimizerState::apply_split`]): below it, starting the threads costs more than the
/// pass saves.
pub const SPLIT_UPDATE_FROM: usize = 1 << 16;

/// Slot `slot` of `slots` cut into pieces of `lengths`, or no pieces for an optimizer
/// without that slot.
fn slot_pieces<'a>(
    slots: &'a mut [Vec<f32>],
    slot: usize,
    lengths: &[usize],
) -> Vec<Option<&'a mut [f32]>> {
    match slots.get_mut(slot) {
        Some(values) => cut_mut(values, lengths.iter().copied())
            .into_iter()
            .map(Some)
            .collect(),
        None => lengths.iter().map(|_| None).collect(),
    }
}

/// One update of `param` from `grad`, with the tensor's slots (velocity, or Adam's `m`
/// and `v`) as the optimizer keeps them, at Adam's iteration `iterations`.
fn update(
    optimizer: &Optimizer,
    iterations: u64,
    grad: &[f32],
    first: Option<&mut [f32]>,
    second: Option<&mut [f32]>,
    param: &mut [f32],
) {
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
                let velocity = first.expect("a velocity slot for momentum");
                momentum_update(step, grad, velocity, param);
            }
        }
        Optimizer::Adam {
            lr,
            beta1,
            beta2,
            epsilon,
        } => {
            let step = AdamStep::new(lr, beta1, beta2, epsilon, iterations);
            let m = first.expect("Adam's first moment");
            let v = second.expect("Adam's second moment");
            adam_update(step, grad, m, v, param);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Tensor;
    use rand::{Rng, SeedableRng};

    /// Values between -1 and 1, some of them 0, some tiny.
    fn values(rng: &mut impl Rng, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| match i % 13 {
                5 => 0.0,
                6 => 1e-30,
                _ => rng.random_range(-1.0..1.0),
            })
            .collect()
    }

    #[test]
    fn a_split_update_gives_the_bits_of_one_thread() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let optimizers = [
            Optimizer::Sgd {
                lr: 0.1,
                momentum: 0.0,
                nesterov: false,
            },
            Optimizer::Sgd {
                lr: 0.1,
                momentum: 0.9,
                nesterov: true,
            },
            Optimizer::Adam {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                epsilon: ADAM_EPSILON,
            },
        ];
        // Around the split threshold, with ragged ends of every width a vector has.
        let lengths = [
            1,
            SPLIT_UPDATE_FROM - 1,
            SPLIT_UPDATE_FROM,
            SPLIT_UPDATE_FROM + 1,
            SPLIT_UPDATE_FROM * 3 + 7,
            SPLIT_UPDATE_FROM * 2 + 15,
        ];
        for optimizer in optimizers {
            for &len in &lengths {
                let start = values(&mut rng, len);
                let params =
                    Parameters::new(vec![Tensor::new("w", vec![len], start.clone())]).unwrap();
                for threads in [2, 3] {
                    let pool = Threads::new(threads).unwrap();
                    let mut one = OptimizerState::new(&optimizer, &params);
                    let mut split = OptimizerState::new(&optimizer, &params);
                    let (mut param_one, mut param_split) = (start.clone(), start.clone());
                    for _ in 0..3 {
                        let grad = values(&mut rng, len);
                        one.advance();
                        split.advance();
                        one.apply(&optimizer, 0, &grad, &mut param_one);
                        split.apply_split(&pool, &optimizer, 0, &grad, &mut param_split);
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    let case = format!("{optimizer:?}, {len} values, {threads} threads");
                    assert_eq!(bits(&param_one), bits(&param_split), "{case}");
                    assert_eq!(one, split, "{case}");
                    assert_ne!(param_one, start, "{case}: the update moved nothing");
                }
            }
        }
    }
}
