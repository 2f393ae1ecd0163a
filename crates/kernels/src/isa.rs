//! Run-time choice of instruction set.
//!
//! Every kernel is written once, generic over [`pulp::Simd`], and run through
//! `dispatch`, which picks the widest instruction set the CPU offers. Tests and
//! benchmarks can pin a thread to a narrower one with [`with_arch`] to compare
//! every code path against the scalar reference, and the environment variable
//! `SAE_SIMD` (`scalar`, `avx2` or `avx512`) narrows the whole process, so that one
//! machine can show how a CPU without AVX-512 would run (see [`requested`]).

use std::cell::Cell;
use std::sync::OnceLock;

pub use pulp::Arch;
use pulp::WithSimd;

thread_local! {
    static FORCED: Cell<Option<Arch>> = const { Cell::new(None) };
}

/// The environment variable that narrows the instruction set of the whole process.
pub const SIMD_VARIABLE: &str = "SAE_SIMD";

fn detected() -> Arch {
    static BEST: OnceLock<Arch> = OnceLock::new();
    // An unusable request is reported by the programs that check `requested()` first;
    // here it leaves the best instruction set in place.
    *BEST.get_or_init(|| requested().ok().flatten().unwrap_or_default())
}

/// The instruction set `SAE_SIMD` asks for: `None` when it is unset or empty, an error
/// naming the problem when it names no instruction set or one this CPU lacks.
pub fn requested() -> Result<Option<Arch>, String> {
    let Some(value) = std::env::var_os(SIMD_VARIABLE).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    parse_request(&value.to_string_lossy()).map(Some)
}

/// The instruction set a value of `SAE_SIMD` names, if this CPU offers it.
fn parse_request(value: &str) -> Result<Arch, String> {
    let value = value.to_ascii_lowercase();
    let wanted = match value.as_str() {
        "scalar" => "scalar",
        "avx2" => "x86-v3 (AVX2+FMA)",
        "avx512" => "x86-v4 (AVX-512)",
        _ => {
            return Err(format!(
                "{SIMD_VARIABLE}={value}: expected scalar, avx2 or avx512"
            ))
        }
    };
    available()
        .into_iter()
        .find(|&arch| name(arch) == wanted)
        .ok_or_else(|| format!("{SIMD_VARIABLE}={value}: this CPU does not offer {wanted}"))
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
    with_override(&FORCED, arch, f)
}

/// Runs `f` with this thread's `slot` set to `value`, and the value before put back when
/// `f` returns or unwinds: the pinning of [`with_arch`] and of `gemm::with_kernel`.
pub(crate) fn with_override<T: Copy + 'static, R>(
    slot: &'static std::thread::LocalKey<Cell<Option<T>>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: Copy + 'static>(&'static std::thread::LocalKey<Cell<Option<T>>>, Option<T>);
    impl<T: Copy + 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            self.0.with(|slot| slot.set(self.1));
        }
    }
    let _restore = Restore(slot, slot.with(|slot| slot.replace(Some(value))));
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
    fn requests_name_an_available_instruction_set_or_fail() {
        assert_eq!(name(parse_request("scalar").unwrap()), "scalar");
        assert_eq!(name(parse_request("Scalar").unwrap()), "scalar");
        let offered: Vec<_> = available().into_iter().map(name).collect();
        for (value, wanted) in [
            ("avx2", "x86-v3 (AVX2+FMA)"),
            ("avx512", "x86-v4 (AVX-512)"),
        ] {
            match parse_request(value) {
                Ok(arch) => assert_eq!(name(arch), wanted),
                Err(e) => {
                    assert!(!offered.contains(&wanted), "{wanted} is offered: {e}");
                    assert!(e.contains("does not offer"), "{e}");
                }
            }
        }
        let e = parse_request("sse4").map(name).unwrap_err();
        assert!(e.contains("expected scalar, avx2 or avx512"), "{e}");
    }

    #[test]
    fn with_arch_pins_and_restores() {
        let before = name(current());
        with_arch(Arch::Scalar, || assert_eq!(name(current()), "scalar"));
        assert_eq!(name(current()), before);
    }
}
