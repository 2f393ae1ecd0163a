//! Fork-join for the splits inside a training step, with helpers that wait by spinning
//! in user space while a [`Team`] is active.
//!
//! A step at batch 32 takes about half a millisecond and forks some twenty times. A
//! helper that goes to sleep between forks (a `sched_yield`, then a futex) costs a
//! system call to fall asleep and tens of microseconds to wake, on every fork. So while
//! an epoch runs, the helpers spin on one cache line and pick an offered job up within
//! a few hundred nanoseconds. Between epochs they are back in their pool, asleep.
//!
//! Who runs which half of a fork never changes the result: each half writes its own
//! part of the output, and the caller combines the halves in a fixed order.

use std::cell::UnsafeCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;

/// Idle polls before a waiting thread starts yielding its core: about a hundred
/// microseconds, far longer than any gap between the forks of a step, short enough
/// that more threads than cores still make progress.
const SPINS_BEFORE_YIELDING: u32 = 1 << 14;

/// Keeps a hot atomic on a cache line (pair) of its own, so that spinning on it does
/// not slow down writes to its neighbours.
#[repr(align(128))]
struct Padded<T>(T);

/// The fork-join state shared by a caller and its helpers.
pub(crate) struct Team {
    /// Jobs offered by [`Team::join`] and not yet taken, oldest first.
    offered: Mutex<Vec<JobRef>>,
    /// `offered.len()`, readable without the lock: what idle helpers spin on.
    pending: Padded<AtomicUsize>,
    /// Whether helpers are serving jobs (between [`Team::begin`] and [`Team::end`]).
    active: Padded<AtomicBool>,
}

impl Team {
    /// A team whose joins nest up to about `threads` deep without allocating.
    pub(crate) fn new(threads: usize) -> Self {
        Self {
            offered: Mutex::new(Vec::with_capacity(16 * threads.max(1))),
            pending: Padded(AtomicUsize::new(0)),
            active: Padded(AtomicBool::new(false)),
        }
    }

    /// Marks the team active; false if it already was (another caller started it).
    pub(crate) fn begin(&self) -> bool {
        !self.active.0.swap(true, Ordering::AcqRel)
    }

    /// Whether helpers are serving jobs.
    pub(crate) fn is_active(&self) -> bool {
        self.active.0.load(Ordering::Acquire)
    }

    /// Tells the helpers to return from [`Team::serve`] once idle.
    pub(crate) fn end(&self) {
        self.active.0.store(false, Ordering::Release);
    }

    /// A helper's loop: runs offered jobs until the team is ended.
    pub(crate) fn serve(&self) {
        let mut idle = 0;
        while self.is_active() {
            match self.take() {
                Some(job) => {
                    // SAFETY: `take` removed the job from the queue, so this thread is
                    // the only one to run it, and its joiner keeps it alive until it
                    // sees it done.
                    unsafe { job.run() };
                    idle = 0;
                }
                None => back_off(&mut idle),
            }
        }
    }

    /// Runs `first` here and `second` on whichever thread gets to it first (a helper, or
    /// this one once `first` is done), and returns both results. A panic in either is
    /// re-raised here after both have finished.
    pub(crate) fn join<A, B, RA, RB>(&self, first: A, second: B) -> (RA, RB)
    where
        A: FnOnce() -> RA,
        B: FnOnce() -> RB + Send,
        RB: Send,
    {
        let job = StackJob {
            func: UnsafeCell::new(Some(second)),
            result: UnsafeCell::new(None),
            done: AtomicBool::new(false),
        };
        let job_ref = JobRef {
            job: (&job as *const StackJob<B, RB>).cast(),
            run: StackJob::<B, RB>::run_erased,
        };
        self.offer(job_ref);
        let first = panic::catch_unwind(AssertUnwindSafe(first));
        // `job` lives on this stack: whatever happened above, it must be withdrawn or
        // finished before this frame is left.
        let second = if self.withdraw(job_ref) {
            match job.func.into_inner() {
                Some(second) => panic::catch_unwind(AssertUnwindSafe(second)),
                None => unreachable!("a withdrawn job has not run"),
            }
        } else {
            self.wait_for(&job.done);
            match job.result.into_inner() {
                Some(result) => result,
                None => unreachable!("a finished job has stored its result"),
            }
        };
        match (first, second) {
            (Ok(first), Ok(second)) => (first, second),
            (Err(payload), _) | (_, Err(payload)) => panic::resume_unwind(payload),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Vec<JobRef>> {
        // Nothing panics while holding the lock, but a poisoned queue is still sound.
        self.offered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn offer(&self, job: JobRef) {
        let mut queue = self.queue();
        queue.push(job);
        self.pending.0.store(queue.len(), Ordering::Release);
    }

    /// Takes the oldest offered job (the largest part of the outermost fork).
    fn take(&self) -> Option<JobRef> {
        if self.pending.0.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut queue = self.queue();
        if queue.is_empty() {
            return None;
        }
        let job = queue.remove(0);
        self.pending.0.store(queue.len(), Ordering::Release);
        Some(job)
    }

    /// Takes `job` back if no thread has taken it yet.
    fn withdraw(&self, job: JobRef) -> bool {
        let mut queue = self.queue();
        let Some(at) = queue.iter().rposition(|offered| offered.is(job)) else {
            return false;
        };
        queue.remove(at);
        self.pending.0.store(queue.len(), Ordering::Release);
        true
    }

    /// Waits for a taken job to finish, running other offered jobs meanwhile.
    fn wait_for(&self, done: &AtomicBool) {
        let mut idle = 0;
        while !done.load(Ordering::Acquire) {
            match self.take() {
                Some(job) => {
                    // SAFETY: as in `serve`.
                    unsafe { job.run() };
                    idle = 0;
                }
                None => back_off(&mut idle),
            }
        }
    }
}

fn back_off(idle: &mut u32) {
    if *idle < SPINS_BEFORE_YIELDING {
        *idle += 1;
        std::hint::spin_loop();
    } else {
        thread::yield_now();
    }
}

/// The second half of a fork, on its joiner's stack.
struct StackJob<F, R> {
    func: UnsafeCell<Option<F>>,
    result: UnsafeCell<Option<thread::Result<R>>>,
    done: AtomicBool,
}

impl<F: FnOnce() -> R + Send, R: Send> StackJob<F, R> {
    /// # Safety
    /// `this` points to a live `StackJob<F, R>` that no other thread is running or
    /// reading, and whose joiner does not touch `func` or `result` until `done` is set.
    unsafe fn run_erased(this: *const ()) {
        // SAFETY: the caller's contract: the pointer is live and of this type.
        let job = unsafe { &*this.cast::<Self>() };
        // SAFETY: only the one thread that took the job reaches these cells before
        // `done` is set, and the joiner reads them only after it sees `done`.
        let (func, result) = unsafe { (&mut *job.func.get(), &mut *job.result.get()) };
        if let Some(func) = func.take() {
            *result = Some(panic::catch_unwind(AssertUnwindSafe(func)));
        }
        job.done.store(true, Ordering::Release);
    }
}

/// A type-erased pointer to a [`StackJob`], as queued.
#[derive(Clone, Copy)]
struct JobRef {
    job: *const (),
    run: unsafe fn(*const ()),
}

// SAFETY: a `JobRef` is made only in `Team::join`, for a job whose closure and result
// are `Send`; the job outlives every copy in the queue, because `join` withdraws it or
// waits for it to finish before returning or unwinding.
unsafe impl Send for JobRef {}

impl JobRef {
    /// Whether both point to the same job (no two live jobs share an address).
    fn is(self, other: JobRef) -> bool {
        std::ptr::eq(self.job, other.job)
    }

    /// # Safety
    /// This thread must have removed the job from the queue, so that no other thread
    /// runs it.
    unsafe fn run(self) {
        // SAFETY: `run` was made for the type `job` points to, its joiner keeps it
        // alive until `done`, and the caller holds the only claim to it.
        unsafe { (self.run)(self.job) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// Runs `work` on this thread with `helpers` threads serving `team`.
    fn with_helpers<R>(team: &Team, helpers: usize, work: impl FnOnce() -> R) -> R {
        assert!(team.begin());
        thread::scope(|scope| {
            for _ in 0..helpers {
                scope.spawn(|| team.serve());
            }
            let result = panic::catch_unwind(AssertUnwindSafe(work));
            team.end();
            result.unwrap_or_else(|payload| panic::resume_unwind(payload))
        })
    }

    fn sum(team: &Team, values: &[u64]) -> u64 {
        if values.len() <= 4 {
            return values.iter().sum();
        }
        let (left, right) = values.split_at(values.len() / 2);
        let (a, b) = team.join(|| sum(team, left), || sum(team, right));
        a + b
    }

    #[test]
    fn nested_joins_give_every_part_once_with_any_number_of_helpers() {
        let values: Vec<u64> = (1..=10_000).collect();
        let expected = values.iter().sum::<u64>();
        for helpers in 0..4 {
            let team = Team::new(helpers + 1);
            for _ in 0..20 {
                assert_eq!(
                    with_helpers(&team, helpers, || sum(&team, &values)),
                    expected
                );
            }
            assert_eq!(team.pending.0.load(Ordering::Acquire), 0);
            assert!(team.queue().is_empty());
        }
    }

    #[test]
    fn an_inactive_team_runs_both_halves_on_the_caller() {
        let team = Team::new(2);
        let caller = thread::current().id();
        let (a, b) = team.join(|| thread::current().id(), || thread::current().id());
        assert_eq!((a, b), (caller, caller));
    }

    #[test]
    fn helpers_take_offered_halves() {
        let team = Team::new(2);
        let elsewhere = AtomicU64::new(0);
        let caller = thread::current().id();
        with_helpers(&team, 1, || {
            for _ in 0..200 {
                let ((), ran_on) = team.join(
                    || {
                        // Long enough for the spinning helper to pick the other half up.
                        let start = std::time::Instant::now();
                        while start.elapsed() < std::time::Duration::from_micros(50) {}
                    },
                    || thread::current().id(),
                );
                if ran_on != caller {
                    elsewhere.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        assert!(
            elsewhere.load(Ordering::Relaxed) > 0,
            "no half ran on the helper"
        );
    }

    #[test]
    fn a_panic_in_either_half_reaches_the_caller_after_both_finish() {
        let team = Team::new(2);
        for panics_first in [true, false] {
            let finished = AtomicU64::new(0);
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                with_helpers(&team, 1, || {
                    team.join(
                        || {
                            if panics_first {
                                panic!("first half failed");
                            }
                            finished.fetch_add(1, Ordering::SeqCst);
                        },
                        || {
                            if !panics_first {
                                panic!("second half failed");
                            }
                            finished.fetch_add(1, Ordering::SeqCst);
                        },
                    )
                })
            }));
            let payload = outcome.expect_err("the panic was lost");
            let message = payload.downcast_ref::<&str>().copied();
            let expected = if panics_first {
                "first half failed"
            } else {
                "second half failed"
            };
            assert_eq!(message, Some(expected));
            assert_eq!(finished.load(Ordering::SeqCst), 1);
            assert!(team.queue().is_empty());
            // The team still works afterwards.
            assert_eq!(with_helpers(&team, 1, || sum(&team, &[1; 100])), 100);
        }
    }
}
