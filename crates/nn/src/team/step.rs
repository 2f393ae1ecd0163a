//! One step of one part of the team: its share of the forward products, the output
//! step on its columns, and its share of the backward products and updates, meeting the
//! other parts where partial sums are added.

use super::plan::Split;
use super::{PartResult, Shard, Stopped, Team};
use crate::phase_times::{timed, PhaseKind};
use kernels::reduce::{column_sums, scaled_add};
use kernels::{gemm, Layout, MatMut, MatRef};
use std::sync::atomic::Ordering;
use std::sync::PoisonError;

impl Team {
    /// One step of part `t` on the `rows` samples in its shard: returns its output
    /// statistics and penalty share, or `Err` when another part asked to stop.
    pub(super) fn step(
        &self,
        t: usize,
        shard: &mut Shard,
        rows: usize,
        lr: f32,
    ) -> Result<PartResult, Stopped> {
        let last = self.layers.len() - 1;
        // Forward.
        for (l, plan) in self.layers.iter().enumerate() {
            let (before, rest) = shard.acts.split_at_mut(l);
            let input: &[f32] = if l == 0 { &shard.x } else { &before[l - 1] };
            let (w_rows, w_cols) = plan.block(t);
            let weight = MatRef::row_major(&shard.weights[l], w_rows, w_cols).expect("sized");
            let input = MatRef::row_major(&input[..rows * w_rows], rows, w_rows).expect("sized");
            let out = &mut rest[0][..rows * plan.output_width(t)];
            match plan.split {
                Split::Inputs => {
                    {
                        let mut partial = self.partials[l][t]
                            .write()
                            .unwrap_or_else(PoisonError::into_inner);
                        let partial = &mut partial[..rows * plan.units];
                        let c = MatMut::row_major(partial, rows, plan.units).expect("sized");
                        timed(PhaseKind::Forward, Some(l), t, || {
                            gemm(1.0, input, weight, 0.0, c).expect("shapes chain")
                        });
                    }
                    timed(PhaseKind::Barrier, Some(l), t, || self.barrier.wait())?;
                    if l == 0 && self.stop.load(Ordering::Acquire) {
                        return Err(Stopped);
                    }
                    timed(PhaseKind::SumPartials, Some(l), t, || {
                        self.sum_partials(l, rows * plan.units, out)
                    });
                }
                Split::Outputs => {
                    let c = MatMut::row_major(out, rows, w_cols).expect("sized");
                    timed(PhaseKind::Forward, Some(l), t, || {
                        gemm(1.0, input, weight, 0.0, c).expect("shapes chain")
                    });
                }
            }
            timed(PhaseKind::ForwardEpilogue, Some(l), t, || {
                self.plan.forward_epilogue(l, out, rows, &shard.biases[l])
            });
        }

        // The output step on this part's columns.
        let output = &self.layers[last];
        let own = output.part(t).len();
        let z = &shard.acts[last][..rows * own];
        let dz = &mut shard.grads[last][..rows * own];
        let stats = timed(PhaseKind::OutputStep, Some(last), t, || {
            self.plan
                .output_step(z, &shard.x[..rows * own], dz, rows, own)
        });

        // Backward, from the last layer down.
        let mut penalty = 0.0;
        for l in (0..=last).rev() {
            let plan = &self.layers[l];
            let (w_rows, w_cols) = plan.block(t);
            let (lower, upper) = shard.grads.split_at_mut(l);
            let dz_width = plan.output_width(t);
            let dz = &upper[0][..rows * dz_width];
            let dz_view = MatRef::row_major(dz, rows, dz_width).expect("sized");
            let input: &[f32] = if l == 0 { &shard.x } else { &shard.acts[l - 1] };
            let input_t = MatRef::row_major(&input[..rows * w_rows], rows, w_rows)
                .expect("sized")
                .t();
            let weight = &mut shard.weights[l];
            match plan.split {
                Split::Outputs => {
                    if l > 0 {
                        let mut partial = self.partials[l][t]
                            .write()
                            .unwrap_or_else(PoisonError::into_inner);
                        let partial = &mut partial[..rows * plan.inputs];
                        let w = MatRef::row_major(weight, w_rows, w_cols).expect("sized");
                        let c = MatMut::row_major(partial, rows, plan.inputs).expect("sized");
                        timed(PhaseKind::InputGradient, Some(l), t, || {
                            gemm(1.0, dz_view, w.t(), 0.0, c).expect("shapes chain")
                        });
                    }
                    let w = MatMut::row_major(weight, w_rows, w_cols).expect("sized");
                    timed(PhaseKind::WeightGradient, Some(l), t, || {
                        gemm(-lr, input_t, dz_view, 1.0, w).expect("shapes chain")
                    });
                    let layout = Layout::contiguous(rows, dz_width);
                    timed(PhaseKind::BiasGradient, Some(l), t, || {
                        column_sums(layout, dz, -lr, 1.0, &mut shard.biases[l])
                    });
                    if l > 0 {
                        timed(PhaseKind::Barrier, Some(l), t, || self.barrier.wait())?;
                        let below = &self.layers[l - 1];
                        let da = &mut lower[l - 1][..rows * below.units];
                        timed(PhaseKind::SumPartials, Some(l), t, || {
                            self.sum_partials(l, rows * below.units, da)
                        });
                        // Every part holds the same whole `dZ` below; part 0 counts its
                        // penalty.
                        let value = timed(PhaseKind::ToDz, Some(l - 1), t, || {
                            self.plan.to_dz(
                                l - 1,
                                &shard.acts[l - 1],
                                da,
                                rows,
                                below.units,
                                &mut shard.scratch,
                            )
                        });
                        if t == 0 {
                            penalty += value;
                        }
                    }
                }
                Split::Inputs => {
                    if l > 0 {
                        // This part's columns of dA are the next layer down's own columns.
                        let own = plan.part(t).len();
                        let da = &mut lower[l - 1][..rows * own];
                        let w = MatRef::row_major(weight, w_rows, w_cols).expect("sized");
                        let c = MatMut::row_major(da, rows, own).expect("sized");
                        timed(PhaseKind::InputGradient, Some(l), t, || {
                            gemm(1.0, dz_view, w.t(), 0.0, c).expect("shapes chain")
                        });
                        penalty += timed(PhaseKind::ToDz, Some(l - 1), t, || {
                            self.plan.to_dz(
                                l - 1,
                                &shard.acts[l - 1],
                                da,
                                rows,
                                own,
                                &mut shard.scratch,
                            )
                        });
                    }
                    let w = MatMut::row_major(weight, w_rows, w_cols).expect("sized");
                    timed(PhaseKind::WeightGradient, Some(l), t, || {
                        gemm(-lr, input_t, dz_view, 1.0, w).expect("shapes chain")
                    });
                    let layout = Layout::contiguous(rows, plan.units);
                    timed(PhaseKind::BiasGradient, Some(l), t, || {
                        column_sums(layout, dz, -lr, 1.0, &mut shard.biases[l])
                    });
                }
            }
        }
        Ok(PartResult { stats, penalty })
    }

    /// `out = sum of the parts' partial sums of layer `l``, in part order.
    fn sum_partials(&self, l: usize, len: usize, out: &mut [f32]) {
        for (s, partial) in self.partials[l].iter().enumerate() {
            let partial = partial.read().unwrap_or_else(PoisonError::into_inner);
            if s == 0 {
                out.copy_from_slice(&partial[..len]);
            } else {
                scaled_add(1.0, &partial[..len], out);
            }
        }
    }
}
