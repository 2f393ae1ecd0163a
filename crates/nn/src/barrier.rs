//! A barrier for a team of threads that each have a core: it spins (a step's waits are
//! microseconds long), yields the core after a while, and is poisoned when a member
//! panics, so the others stop waiting instead of hanging.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// A member of the team panicked: waiting would never end.
#[derive(Debug)]
pub(crate) struct Poisoned;

/// A barrier for the team's threads that spins (they have a core each, and a step's
/// waits are microseconds long) and yields the core after a while.
pub(crate) struct SpinBarrier {
    parts: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    /// A part panicked: waiting would never end.
    poisoned: AtomicU8,
}

/// Spins (about 10-20 us) before a waiting thread starts yielding its core. Most waits
/// are shorter; a longer wait means the part waited for has no core (more threads than
/// cores), and yielding gives it one: with 16384 spins, 3 or 4 threads on this 2-core
/// machine took 5.7-5.9 s per epoch, with 512 1.1 s, while 2 threads ran as fast.
const SPINS_BEFORE_YIELD: u32 = 1 << 9;

impl SpinBarrier {
    pub(crate) fn new(parts: usize) -> Self {
        Self {
            parts,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicU8::new(0),
        }
    }

    pub(crate) fn reset(&self) {
        self.arrived.store(0, Ordering::Relaxed);
        self.poisoned.store(0, Ordering::Relaxed);
    }

    /// Waits until every part has arrived; `Err` if a part panicked instead.
    pub(crate) fn wait(&self) -> Result<(), Poisoned> {
        if self.parts == 1 {
            return Ok(());
        }
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parts {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return Ok(());
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if self.poisoned.load(Ordering::Relaxed) != 0 {
                return Err(Poisoned);
            }
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        Ok(())
    }
}

/// Poisons the barrier if its thread unwinds, so the others stop waiting for it.
pub(crate) struct PoisonOnPanic<'a>(pub(crate) &'a SpinBarrier);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poisoned.store(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_passes_together_generation_after_generation() {
        let barrier = SpinBarrier::new(3);
        let counter = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for round in 0..100 {
                        counter.fetch_add(1, Ordering::SeqCst);
                        barrier.wait().unwrap();
                        // Between the two waits nobody has started the next round.
                        assert_eq!(counter.load(Ordering::SeqCst), 3 * (round + 1));
                        barrier.wait().unwrap();
                    }
                });
            }
        });
        assert_eq!(counter.load(Ordering::SeqCst), 300);
    }

    #[test]
    fn a_panicking_member_releases_the_others() {
        let barrier = SpinBarrier::new(2);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| barrier.wait());
            let panicker = scope.spawn(|| {
                let _poison = PoisonOnPanic(&barrier);
                panic!("a member fails");
            });
            assert!(panicker.join().is_err());
            assert!(waiter.join().unwrap().is_err());
        });
    }
}
