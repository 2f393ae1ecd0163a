//! What a training step allocates, counted by a global allocator: after the first step,
//! nothing, at one thread or two. A new allocation anywhere in the step makes this fail.

use nn::config::{ModelConfig, Penalty};
use nn::{Autoencoder, Control, Dataset, Observer, Optimizer, StepProgress, TrainConfig, Trainer};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; the counter is the
// only addition.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Allocations between consecutive steps.
#[derive(Default)]
struct PerStep {
    last: Option<usize>,
    counts: Vec<usize>,
}

impl Observer for PerStep {
    fn step_end(&mut self, _progress: &StepProgress) -> Control {
        let now = ALLOCATIONS.load(Ordering::Relaxed);
        if let Some(last) = self.last {
            self.counts.push(now - last);
        }
        // Read again: pushing may itself have allocated.
        self.last = Some(ALLOCATIONS.load(Ordering::Relaxed));
        Control::Continue
    }
}

#[test]
fn a_training_step_allocates_nothing_after_the_first() {
    // The reference architecture at a tenth of the width, with the KL penalty.
    let config = ModelConfig::autoencoder(
        64,
        &[(30, nn::Activation::Selu), (40, nn::Activation::Sigmoid)],
        None,
        Penalty::Kl {
            target: 0.1,
            weight: 0.05,
        },
        nn::config::Loss::Bce,
    );
    let pixels: Vec<u8> = (0..200 * 64).map(|i| (i * 37 % 256) as u8).collect();
    let data = Dataset::from_u8(pixels, 64);
    for (optimizer, threads) in [
        (Optimizer::sgd(1.0), 1),
        (Optimizer::adam(1e-3), 1),
        (Optimizer::sgd(1.0), 2),
        (
            Optimizer::Sgd {
                lr: 0.1,
                momentum: 0.9,
                nesterov: true,
            },
            2,
        ),
    ] {
        let settings = TrainConfig {
            epochs: 1,
            batch_size: 16,
            shuffle: true,
            seed: 3,
            optimizer,
            threads,
        };
        let mut trainer =
            Trainer::new(Autoencoder::new(config.clone(), 1).unwrap(), settings).unwrap();
        let mut per_step = PerStep {
            counts: Vec::with_capacity(64),
            ..PerStep::default()
        };
        trainer.fit_epoch(&data, None, &mut per_step).unwrap();
        assert!(per_step.counts.len() >= 10, "{:?}", per_step.counts);
        assert!(
            per_step.counts.iter().all(|&count| count == 0),
            "{optimizer:?}, {threads} threads: allocations per step after the first: {:?}",
            per_step.counts
        );
    }
}
