//! `exp`, `ln`, sigmoid, SELU and rounding against the standard library and f64.

use crate::common::*;
use kernels::activation::{activation_forward, reference, Activation};
use kernels::math::{self, EXP_MAX_ULP, SELU_LAMBDA_ALPHA};
use proptest::prelude::*;

/// Every `STRIDE`-th bit pattern of the whole f32 range (about 70 million values), plus
/// infinities and NaN.
fn sweep(stride: u32) -> Vec<f32> {
    let mut values: Vec<f32> = (0..=u32::MAX)
        .step_by(stride as usize)
        .map(f32::from_bits)
        .collect();
    values.extend([
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        f32::MIN,
    ]);
    values.extend(crate::common::EXTREMES);
    values
}

#[test]
fn exp_is_within_its_stated_ulp_bound_over_the_whole_f32_range() {
    let x = sweep(61);
    let mut want = vec![0.0; x.len()];
    math::reference::exp(&x, &mut want);
    for_each_arch(|arch| {
        let mut got = vec![0.0; x.len()];
        math::exp(&x, &mut got);
        let (worst, at) = got
            .iter()
            .zip(&want)
            .zip(&x)
            .map(|((&g, &w), &v)| (ulp_distance(g, w), v))
            .max_by_key(|&(d, _)| d)
            .unwrap();
        assert!(
            worst <= u64::from(EXP_MAX_ULP),
            "{arch}: exp off by {worst} ulp at x = {at:e}"
        );
    });
}

#[test]
fn exp_handles_infinities_nan_and_the_overflow_edges() {
    let x = [
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        88.73,
        89.0,
        -104.0,
        -1e30,
        1e30,
    ];
    for_each_arch(|arch| {
        let mut got = [0.0; 8];
        math::exp(&x, &mut got);
        assert_eq!(got[0], f32::INFINITY, "{arch}");
        assert_eq!(got[1], 0.0, "{arch}");
        assert!(got[2].is_nan(), "{arch}");
        assert_eq!(got[3], f32::INFINITY, "{arch}");
        assert_eq!(got[4], f32::INFINITY, "{arch}");
        assert_eq!(got[5], 0.0, "{arch}");
        assert_eq!(got[6], 0.0, "{arch}");
        assert_eq!(got[7], f32::INFINITY, "{arch}");
    });
}

#[test]
fn ln_is_accurate_over_positive_normal_floats() {
    let x: Vec<f32> = sweep(29)
        .into_iter()
        .filter(|v| v.is_normal() && *v > 0.0)
        .collect();
    for_each_arch(|arch| {
        let mut got = vec![0.0; x.len()];
        math::ln(&x, &mut got);
        for (&g, &v) in got.iter().zip(&x) {
            let w = v.ln();
            let ok = ulp_distance(g, w) <= 2 || (g - w).abs() <= math::LN_MAX_ABS_ERROR;
            assert!(ok, "{arch}: ln({v:e}) = {g:e}, want {w:e}");
        }
    });
}

#[test]
fn exp_of_nonpositive_inputs_is_within_the_ulp_bound_and_floors_below_minus_87() {
    // Every f32 in [-87, 0] at a stride of bit patterns, plus the edges.
    let floor = math::EXP_NONPOSITIVE_FLOOR;
    let mut x: Vec<f32> = (0..=u32::MAX)
        .step_by(13)
        .map(f32::from_bits)
        .filter(|v| (floor..=0.0).contains(v))
        .collect();
    x.extend([0.0, -0.0, floor, -1e-45, -0.3465736, -0.3465737, -86.99999]);
    let far = [-87.00001f32, -100.0, -1e30, f32::MIN, f32::NEG_INFINITY];
    let at_floor = floor.exp();
    for_each_arch(|arch| {
        let mut got = vec![0.0; x.len()];
        math::exp_nonpositive(&x, &mut got);
        for (&g, &v) in got.iter().zip(&x) {
            let d = ulp_distance(g, v.exp());
            assert!(
                d <= u64::from(EXP_MAX_ULP),
                "{arch}: exp({v:e}) = {g:e}, {d} ulp from {:e}",
                v.exp()
            );
        }
        let mut got = [0.0; 5];
        math::exp_nonpositive(&far, &mut got);
        for (&g, &v) in got.iter().zip(&far) {
            assert!(
                ulp_distance(g, at_floor) <= u64::from(EXP_MAX_ULP),
                "{arch}: exp({v:e}) gave {g:e}, want the floor's {at_floor:e}"
            );
        }
        let mut nan = [0.0];
        math::exp_nonpositive(&[f32::NAN], &mut nan);
        assert!(nan[0].is_finite(), "{arch}: NaN gave {}", nan[0]);
    });
}

#[test]
fn ln_1p_of_the_unit_interval_keeps_relative_accuracy() {
    // Every f32 in [0, 1] at a stride of bit patterns: from subnormals, where
    // ln(1 + e) = e, to 1.
    let mut e: Vec<f32> = (0..=1.0f32.to_bits())
        .step_by(7)
        .map(f32::from_bits)
        .collect();
    e.extend([
        0.0,
        1.0,
        std::f32::consts::SQRT_2 - 1.0,
        0.41421357,
        0.4142135,
    ]);
    for_each_arch(|arch| {
        let mut got = vec![0.0; e.len()];
        math::ln_1p_unit(&e, &mut got);
        for (&g, &v) in got.iter().zip(&e) {
            let want = f64::from(v).ln_1p() as f32;
            let d = ulp_distance(g, want);
            assert!(
                d <= 2,
                "{arch}: ln(1 + {v:e}) = {g:e}, {d} ulp from {want:e}"
            );
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sigmoid_matches_f64_and_stays_in_unit_interval(x in finite_vec(3000)) {
        let want: Vec<f32> = x.iter().map(|&v| reference::forward(Activation::Sigmoid, v)).collect();
        for arch in arches() {
            let mut got = x.clone();
            kernels::isa::with_arch(arch, || activation_forward(Activation::Sigmoid, &mut got));
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                prop_assert!((0.0..=1.0).contains(&g), "sigmoid({}) = {} outside [0, 1]", x[i], g);
                // 4 ulp, or absolute 1e-45 for results in the subnormal range.
                prop_assert!(ulp_distance(g, w) <= 4 || (g - w).abs() <= 1e-44,
                    "{}: sigmoid({:e}) = {:e}, want {:e}", kernels::isa::name(arch), x[i], g, w);
            }
        }
    }

    #[test]
    fn selu_matches_f64_and_saturates(x in finite_vec(3000)) {
        let want: Vec<f32> = x.iter().map(|&v| reference::forward(Activation::Selu, v)).collect();
        for arch in arches() {
            let mut got = x.clone();
            kernels::isa::with_arch(arch, || activation_forward(Activation::Selu, &mut got));
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                prop_assert!(!g.is_nan(), "selu({}) is NaN", x[i]);
                prop_assert!(g >= -SELU_LAMBDA_ALPHA, "selu({}) = {} below -lambda*alpha", x[i], g);
                prop_assert!(ulp_distance(g, w) <= 4 || (g - w).abs() <= 1e-44,
                    "{}: selu({:e}) = {:e}, want {:e}", kernels::isa::name(arch), x[i], g, w);
            }
        }
    }
}

/// SELU through the general `expm1_simd`, as `selu_each` computed it before its
/// exponential was specialised to the lanes it keeps.
struct SeluThroughGeneralExpm1<'a>(&'a mut [f32]);

impl pulp::WithSimd for SeluThroughGeneralExpm1<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let selu = |z: S::f32s| {
            simd.select_f32s(
                simd.greater_than_f32s(z, simd.splat_f32s(0.0)),
                simd.mul_f32s(simd.splat_f32s(math::SELU_LAMBDA), z),
                simd.mul_f32s(
                    simd.splat_f32s(SELU_LAMBDA_ALPHA),
                    math::expm1_simd(simd, z),
                ),
            )
        };
        let (head, tail) = S::as_mut_simd_f32s(self.0);
        for v in head {
            *v = selu(*v);
        }
        let last = selu(simd.partial_load_f32s(tail));
        simd.partial_store_f32s(tail, last);
    }
}

#[test]
fn selu_gives_the_bits_of_the_general_expm1_everywhere() {
    // Every 13th negative f32 down to -200, every pattern within half a unit of the -87
    // floor, every 4099th over the whole range, and the extremes. A million at a time:
    // the sweep has ninety million.
    let every_13th = ((-0.0f32).to_bits()..=(-200.0f32).to_bits()).step_by(13);
    let near_floor = (-86.5f32).to_bits()..=(-87.5f32).to_bits();
    // Negative floats' bits grow with their magnitude.
    assert_eq!(near_floor.clone().count(), (1 << 17) + 1);
    let mut values = every_13th
        .chain(near_floor)
        .map(f32::from_bits)
        .chain(sweep(4099));
    loop {
        let x: Vec<f32> = values.by_ref().take(1 << 20).collect();
        if x.is_empty() {
            break;
        }
        for_each_arch(|arch| {
            let mut want = x.clone();
            kernels::isa::current().dispatch(SeluThroughGeneralExpm1(&mut want));
            let mut got = x.clone();
            activation_forward(Activation::Selu, &mut got);
            // Any NaN for NaN: the general path quiets a signalling NaN, SELU passes it.
            for ((&g, &w), &v) in got.iter().zip(&want).zip(&x) {
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "{arch}: selu({v:e}) = {g:e} ({:#x}), through expm1 {w:e} ({:#x})",
                    g.to_bits(),
                    w.to_bits()
                );
            }
        });
    }
}

#[test]
fn activations_saturate_far_out() {
    let mut far = [
        -1e30f32,
        -200.0,
        -88.0,
        88.0,
        200.0,
        1e30,
        f32::MAX,
        f32::MIN,
    ];
    let mut sig = far;
    activation_forward(Activation::Sigmoid, &mut sig);
    assert_eq!(&sig[3..6], &[1.0, 1.0, 1.0]);
    assert_eq!(sig[0], 0.0);
    assert!(sig[2] > 0.0 && sig[2] < 1e-37);
    assert_eq!(sig[6], 1.0);
    assert_eq!(sig[7], 0.0);
    activation_forward(Activation::Selu, &mut far);
    assert_eq!(far[0], -SELU_LAMBDA_ALPHA);
    assert_eq!(far[1], -SELU_LAMBDA_ALPHA);
    assert!(far[6].is_infinite() || far[6] > 1e38);
}
