//! Where the time of the team's training step goes: the wall time of each of its phases
//! (every product, epilogue, barrier, the output step, the gather), per part, added up
//! over the steps since the last [`take`]. Compiled in only with the `phase-times`
//! feature; without it the timing wrapper is the bare call. With it, each phase costs two clock
//! reads and two atomic adds to the part's own counters, about 30 of each a step of
//! the reference model.
//!
//! `cargo bench -p benches --bench phases --features phase-times` prints the table for
//! the reference model.

/// What a phase of a step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PhaseKind {
    /// Gathering the part's columns of the batch from the data set.
    Gather,
    /// Asking for the next batch ahead (cache prefetches).
    Prefetch,
    /// A layer's forward product (its partial sum, for a layer split by inputs).
    Forward,
    /// Adding up the parts' partial sums of a layer's output or of its input gradient.
    SumPartials,
    /// Bias, activation and the coding layer's transform after a forward product.
    ForwardEpilogue,
    /// The loss, its gradient and the accuracy count on the part's output columns.
    OutputStep,
    /// A layer's input gradient `dZ W^T` (or the part's share of it).
    InputGradient,
    /// The activation's derivative (and the penalty's gradient at the coding layer).
    ToDz,
    /// A layer's weight gradient fused with the SGD update.
    WeightGradient,
    /// A layer's bias gradient fused with the SGD update.
    BiasGradient,
    /// Waiting for the other parts inside a step.
    Barrier,
    /// Waiting for the other parts at the end of a step.
    StepBarrier,
}

impl PhaseKind {
    /// Every kind, in the order they come in a step.
    pub const ALL: [PhaseKind; 12] = [
        PhaseKind::Gather,
        PhaseKind::Prefetch,
        PhaseKind::Forward,
        PhaseKind::SumPartials,
        PhaseKind::ForwardEpilogue,
        PhaseKind::OutputStep,
        PhaseKind::InputGradient,
        PhaseKind::ToDz,
        PhaseKind::WeightGradient,
        PhaseKind::BiasGradient,
        PhaseKind::Barrier,
        PhaseKind::StepBarrier,
    ];
}

/// One phase's total over the steps since the last [`take`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhaseTime {
    /// What the phase does.
    pub kind: PhaseKind,
    /// The layer it belongs to (the last counted one for layers past it), if any.
    pub layer: Option<usize>,
    /// The team's part (thread) that ran it.
    pub part: usize,
    /// Its wall time, added up.
    pub seconds: f64,
    /// How many times it ran.
    pub calls: u64,
}

/// Parts counted apart; parts past them are counted with the last.
pub const PARTS: usize = 8;
/// Layers counted apart; layers past them are counted with the last.
pub const LAYERS: usize = 8;

#[cfg(feature = "phase-times")]
mod counters {
    use super::{PhaseKind, PhaseTime, LAYERS, PARTS};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Per layer slot (`LAYERS` of them, then one for phases of no layer).
    const SLOTS: usize = LAYERS + 1;
    const KINDS: usize = PhaseKind::ALL.len();

    type Table = [[[AtomicU64; SLOTS]; KINDS]; PARTS];
    /// Nanoseconds and calls of each phase, each part's counters together (the parts
    /// write only their own, so they share no cache line but at the edges).
    static NANOS: Table =
        [const { [const { [const { AtomicU64::new(0) }; SLOTS] }; KINDS] }; PARTS];
    static CALLS: Table =
        [const { [const { [const { AtomicU64::new(0) }; SLOTS] }; KINDS] }; PARTS];

    pub(super) fn add(kind: PhaseKind, layer: Option<usize>, part: usize, nanos: u64) {
        let slot = layer.map_or(LAYERS, |l| l.min(LAYERS - 1));
        // `ALL` lists the kinds in declaration order, so a kind's discriminant is its index.
        let (part, kind) = (part.min(PARTS - 1), kind as usize);
        NANOS[part][kind][slot].fetch_add(nanos, Ordering::Relaxed);
        CALLS[part][kind][slot].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn take() -> Vec<PhaseTime> {
        let mut times = Vec::new();
        for part in 0..PARTS {
            for (k, &kind) in PhaseKind::ALL.iter().enumerate() {
                for slot in 0..SLOTS {
                    let calls = CALLS[part][k][slot].swap(0, Ordering::Relaxed);
                    let nanos = NANOS[part][k][slot].swap(0, Ordering::Relaxed);
                    if calls > 0 {
                        times.push(PhaseTime {
                            kind,
                            layer: (slot < LAYERS).then_some(slot),
                            part,
                            seconds: nanos as f64 * 1e-9,
                            calls,
                        });
                    }
                }
            }
        }
        times
    }
}

/// Runs `f`, phase `kind` of `layer` on part `part`, adding its wall time to the phase's
/// total where the feature is on.
#[inline(always)]
pub(crate) fn timed<R>(
    kind: PhaseKind,
    layer: Option<usize>,
    part: usize,
    f: impl FnOnce() -> R,
) -> R {
    #[cfg(feature = "phase-times")]
    {
        let started = std::time::Instant::now();
        let result = f();
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        counters::add(kind, layer, part, nanos);
        result
    }
    #[cfg(not(feature = "phase-times"))]
    {
        let _ = (kind, layer, part);
        f()
    }
}

/// Every phase's totals since the last call (or the start), which it resets; empty
/// without the `phase-times` feature.
pub fn take() -> Vec<PhaseTime> {
    #[cfg(feature = "phase-times")]
    {
        counters::take()
    }
    #[cfg(not(feature = "phase-times"))]
    {
        Vec::new()
    }
}

/// Whether this build times the phases (the `phase-times` feature).
pub const ENABLED: bool = cfg!(feature = "phase-times");

#[cfg(all(test, feature = "phase-times"))]
mod tests {
    use super::*;
    use crate::{Activation, Autoencoder, Dataset, Loss, ModelConfig, Optimizer, Penalty};
    use crate::{TrainConfig, Trainer};

    /// Phases of parts and layers past the counted ones fold into the last, and `take`
    /// hands over what was added since the last one. Part `PARTS - 1` is used by no
    /// other test (they run at most 3 threads), so its counts are exactly these.
    #[test]
    fn timed_phases_add_up_and_take_resets_them() {
        let value = timed(PhaseKind::Gather, Some(LAYERS + 5), PARTS + 3, || {
            std::thread::sleep(std::time::Duration::from_millis(2));
            7
        });
        assert_eq!(value, 7);
        timed(PhaseKind::Gather, Some(LAYERS - 1), PARTS - 1, || ());
        let ours = |times: Vec<PhaseTime>| {
            times
                .into_iter()
                .find(|t| t.part == PARTS - 1 && t.kind == PhaseKind::Gather)
        };
        let gather = ours(take()).expect("the phase was counted");
        assert_eq!(gather.layer, Some(LAYERS - 1));
        assert_eq!(gather.calls, 2);
        assert!(gather.seconds >= 0.002, "{} s", gather.seconds);
        assert_eq!(ours(take()), None, "take reset the counts");
    }

    /// A team epoch of the reference model's kind at two threads counts every layer's
    /// forward product and weight gradient on both parts, once a step each, and the
    /// barriers and the output step too.
    #[test]
    fn a_team_epoch_counts_each_phase_of_each_part_every_step() {
        let config = ModelConfig::autoencoder(
            16,
            &[(8, Activation::Selu), (12, Activation::Sigmoid)],
            None,
            Penalty::Kl {
                target: 0.1,
                weight: 0.05,
            },
            Loss::Bce,
        );
        let data = Dataset::from_u8((0..64 * 16).map(|i| (i * 37 % 251) as u8).collect(), 16);
        let settings = TrainConfig {
            epochs: 1,
            batch_size: 8,
            shuffle: true,
            shuffle_window_bytes: None,
            seed: 1,
            optimizer: Optimizer::sgd(0.1),
            threads: 2,
        };
        let mut trainer = Trainer::new(Autoencoder::new(config, 1).unwrap(), settings).unwrap();
        take();
        trainer.fit_epoch(&data, None, &mut ()).unwrap();
        let times = take();
        let steps = 64 / 8;
        let calls = |kind: PhaseKind, layer: Option<usize>, part: usize| {
            times
                .iter()
                .filter(|t| t.kind == kind && t.layer == layer && t.part == part)
                .map(|t| t.calls)
                .sum::<u64>()
        };
        for part in 0..2 {
            for layer in 0..4 {
                for kind in [PhaseKind::Forward, PhaseKind::WeightGradient] {
                    assert!(
                        calls(kind, Some(layer), part) >= steps,
                        "{kind:?} of layer {layer} on part {part}"
                    );
                }
            }
            assert!(calls(PhaseKind::OutputStep, Some(3), part) >= steps);
            assert!(calls(PhaseKind::StepBarrier, None, part) >= steps);
            assert!(calls(PhaseKind::Gather, None, part) >= steps);
        }
    }
}

#[cfg(test)]
mod order {
    use super::PhaseKind;

    /// The counters index a kind by its discriminant, and the reports list kinds through
    /// `ALL`: the two orders must be one.
    #[test]
    fn all_lists_the_kinds_in_declaration_order() {
        for (index, &kind) in PhaseKind::ALL.iter().enumerate() {
            assert_eq!(kind as usize, index, "{kind:?}");
        }
    }
}
