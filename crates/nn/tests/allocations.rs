//! What a training step allocates, counted by a global allocator: after the first step,
//! nothing, at one thread or two. A new allocation anywhere in the step makes this fail.

use nn::config::{ModelConfig, Penalty};
use nn::{Autoencoder, Control, Dataset, Observer, Optimizer, StepProgress, TrainConfig, Trainer};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread is the test harness's own (`main`), whose bookkeeping can
    /// land in the middle of a step on a loaded machine; unknown until its first
    /// allocation.
    static HARNESS: Cell<Option<bool>> = const { Cell::new(None) };
    /// Set while `HARNESS` is being worked out, which may itself allocate.
    static CHECKING: Cell<bool> = const { Cell::new(false) };
}

/// Counts an allocation unless the harness's thread made it.
fn count() {
    let harness = HARNESS
        .try_with(|harness| match harness.get() {
            Some(known) => known,
            None if CHECKING.with(|checking| checking.replace(true)) => false,
            None => {
                let known = std::thread::current().name() == Some("main");
                harness.set(Some(known));
                CHECKING.with(|checking| checking.set(false));
                known
            }
        })
        .unwrap_or(false);
    if !harness {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to the system allocator unchanged; the counter is the
// only addition.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
}

/// Threads of this process, from `/proc` (Linux).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |tasks| tasks.count())
}

/// Waits until at most `threads` threads are left: a dropped pool's threads free their
/// thread-local state (and allocate doing so) as they exit, which must not land in
/// the next run's steps.
fn wait_for_threads(threads: usize) {
    let started = std::time::Instant::now();
    while thread_count() > threads {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "a dropped pool's threads did not exit"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
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
    // The reference architecture, smaller but with every dimension over 64 (so that
    // batches of 128 rows meet no product of the small kind), with the KL penalty.
    let config = ModelConfig::autoencoder(
        96,
        &[(72, nn::Activation::Selu), (80, nn::Activation::Sigmoid)],
        None,
        Penalty::Kl {
            target: 0.1,
            weight: 0.05,
        },
        nn::config::Loss::Bce,
    );
    let pixels: Vec<u8> = (0..1400 * 96).map(|i| (i * 37 % 256) as u8).collect();
    let data = Dataset::from_u8(pixels, 96);
    for (optimizer, threads, batch_size) in [
        (Optimizer::sgd(1.0), 1, 16),
        (Optimizer::adam(1e-3), 1, 16),
        (Optimizer::sgd(1.0), 2, 16),
        (
            Optimizer::Sgd {
                lr: 0.1,
                momentum: 0.9,
                nesterov: true,
            },
            2,
            16,
        ),
        // Larger batches train as a team too, their products in the tiled GEMM.
        (Optimizer::sgd(1.0), 1, 128),
        (Optimizer::sgd(1.0), 2, 128),
    ] {
        let threads_before = thread_count();
        let settings = TrainConfig {
            epochs: 1,
            batch_size,
            shuffle: true,
            shuffle_window_bytes: None,
            seed: 3,
            optimizer,
            threads,
        };
        let mut trainer =
            Trainer::new(Autoencoder::new(config.clone(), 1).unwrap(), settings).unwrap();
        let mut per_step = PerStep {
            counts: Vec::with_capacity(128),
            ..PerStep::default()
        };
        // On a thread of its own: the harness's thread, were the test run on it, would
        // not be counted.
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("training".into())
                .spawn_scoped(scope, || trainer.fit_epoch(&data, None, &mut per_step))
                .unwrap()
                .join()
                .unwrap()
        })
        .unwrap();
        assert!(per_step.counts.len() >= 10, "{:?}", per_step.counts);
        assert!(
            per_step.counts.iter().all(|&count| count == 0),
            "{optimizer:?}, {threads} threads, batch {batch_size}: allocations per step after the first: {:?}",
            per_step.counts
        );
        drop(trainer);
        wait_for_threads(threads_before);
    }
}
