//! Run-time choice of instruction set.
//!
//! Every kernel is written once, generic over [`pulp::Simd`], and run through
//! `dispatch`, which picks the widest instruction set the CPU offers. Tests and
//! benchmarks can pin a thread to a narrower one with [`with_arch`] to compare
//! every code path against the scalar reference.

use std::cell::Cell;
use std::sync::OnceLock;

pub use pulp::Arch;
use pulp::WithSimd;

thread_local! {
    static FORCED: Cell<Option<Arch>> = const { Cell::new(None) };
}

fn detected() -> Arch {
    static BEST: OnceLock<Arch> = OnceLock::new();
    *BEST.get_or_init(Arch::new)
}

/// Runs `op` with the instruction set pinned by [`with_arch`] on this thread,
/// or else the best one the CPU supports.
#[inline]
pub(crate) fn dispatch<Op: WithSimd>(op: Op) -> Op::Output {
    let arch = FORCED.with(Cell::get).unwrap_or_else(detected);
    arch.dispatch(op)
}

/// Every instruction set this CPU can run, narrowest first (always starts with scalar).
pub fn available() -> Vec<Arch> {
    let mut arches = vec![Arch::Scalar];
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(simd) = pulp::x86::V3::try_new() {
            arches.push(Arch::V3(simd));
        }
        if let Some(simd) = pulp::x86::V4::try_new() {
            arches.push(Arch::V4(simd));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let best = Arch::new();
        if !matches!(best, Arch::Scalar) {
            arches.push(best);
        }
    }
    arches
}

/// A short human-readable name of an instruction set, e.g. `"x86-v3 (AVX2+FMA)"`.
pub fn name(arch: Arch) -> &'static str {
    match arch {
        Arch::Scalar => "scalar",
        #[cfg(target_arch = "x86_64")]
        Arch::V3(_) => "x86-v3 (AVX2+FMA)",
        #[cfg(target_arch = "x86_64")]
        Arch::V4(_) => "x86-v4 (AVX-512)",
        #[allow(unreachable_patterns)]
        _ => "native SIMD",
    }
}

/// The instruction set kernels use on this thread right now.
pub fn current() -> Arch {
    FORCED.with(Cell::get).unwrap_or_else(detected)
}

/// Runs `f` with every kernel called from this thread pinned to `arch`.
///
/// Restores the previous choice afterwards, even if `f` panics.
pub fn with_arch<R>(arch: Arch, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arch>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.with(|forced| forced.set(self.0));
        }
    }
    let _restore = Restore(FORCED.with(|forced| forced.replace(Some(arch))));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_is_always_available_and_first() {
        let arches = available();
        assert!(matches!(arches[0], Arch::Scalar));
    }

    #[test]
    fn with_arch_pins_and_restores() {
        let before = name(current());
        with_arch(Arch::Scalar, || assert_eq!(name(current()), "scalar"));
        assert_eq!(name(current()), before);
    }
}
