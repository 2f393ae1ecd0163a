//! Helpers shared by the kernel tests: every instruction set, awkward values, error measures.
#![allow(dead_code)]

use kernels::isa::{self, Arch};
use proptest::prelude::*;

/// Runs `f` once per instruction set this CPU supports, with kernels pinned to it.
pub fn for_each_arch(mut f: impl FnMut(&'static str)) {
    for arch in isa::available() {
        isa::with_arch(arch, || f(isa::name(arch)));
    }
}

pub fn arches() -> Vec<Arch> {
    isa::available()
}

/// Values that break naive kernels: signed zeros, subnormals, the exp overflow edge, huge.
pub const EXTREMES: &[f32] = &[
    0.0,
    -0.0,
    1e-40,
    -1e-40,
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    88.0,
    -88.0,
    88.72,
    -88.72,
    89.0,
    -104.0,
    1e30,
    -1e30,
    f32::MAX,
    f32::MIN,
    0.5,
    -0.5,
    1.0,
    -1.0,
];

/// A finite f32: mostly moderate, sometimes one of [`EXTREMES`], sometimes any bit pattern.
pub fn finite_f32() -> impl Strategy<Value = f32> + Clone {
    prop_oneof![
        6 => -12.0f32..12.0,
        2 => proptest::sample::select(EXTREMES),
        1 => any::<u32>().prop_map(f32::from_bits).prop_filter("finite", |v| v.is_finite()),
    ]
}

/// A vector of `0..=max_len` finite values.
pub fn finite_vec(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    proptest::collection::vec(finite_f32(), 0..=max_len)
}

/// Distance in representable f32 values between `a` and `b` (0 when both are the same NaN class).
pub fn ulp_distance(a: f32, b: f32) -> u64 {
    if a.is_nan() && b.is_nan() {
        return 0;
    }
    if a.is_nan() || b.is_nan() {
        return u64::MAX;
    }
    fn ordered(v: f32) -> i64 {
        let bits = v.to_bits() as i32;
        i64::from(if bits < 0 { i32::MIN - bits } else { bits })
    }
    (ordered(a) - ordered(b)).unsigned_abs()
}

/// Asserts `|got - want| <= abs + rel * |want|` element by element, naming the first failure.
#[track_caller]
pub fn assert_close(got: &[f32], want: &[f32], abs: f32, rel: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g == w) || (g - w).abs() <= abs + rel * w.abs() || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}: element {i}: got {g:e}, want {w:e}");
    }
}

/// A finite f32 of magnitude at most 1e30, so sums of a few thousand stay finite in f32.
pub fn bounded_f32() -> impl Strategy<Value = f32> + Clone {
    finite_f32().prop_map(|v| v.clamp(-1e30, 1e30))
}

/// A value in `[0, 1]` as a sigmoid produces: mostly uniform, sometimes exactly 0, 1, 0.5
/// or vanishingly small.
pub fn unit_f32() -> impl Strategy<Value = f32> + Clone {
    prop_oneof![
        6 => 0.0f32..=1.0,
        1 => proptest::sample::select(&[0.0f32, 1.0, 0.5, 1e-40, 1e-12, 1.0 - f32::EPSILON][..]),
    ]
}

/// A strided matrix shape: rows, cols, and a row stride of `cols` plus padding.
pub fn layout(max_rows: usize, max_cols: usize) -> impl Strategy<Value = kernels::Layout> {
    (0..=max_rows, 0..=max_cols, 0usize..4)
        .prop_map(|(rows, cols, pad)| kernels::Layout::strided(rows, cols, cols + pad))
}

/// A layout with a buffer of exactly the length it requires, filled from `values`.
pub fn matrix<S: Strategy<Value = f32> + Clone>(
    max_rows: usize,
    max_cols: usize,
    values: S,
) -> impl Strategy<Value = (kernels::Layout, Vec<f32>)> {
    layout(max_rows, max_cols).prop_flat_map(move |l| {
        (
            Just(l),
            proptest::collection::vec(values.clone(), l.required_len()),
        )
    })
}

pub fn any_activation() -> impl Strategy<Value = kernels::Activation> {
    use kernels::Activation::*;
    proptest::sample::select(&[Linear, Relu, Selu, Sigmoid][..])
}
