//! The fused output step against the f64 reference.

use crate::common::*;
use kernels::isa;
use kernels::output::{self, reference, OutputLoss};
use proptest::prelude::*;

fn loss_kind() -> impl Strategy<Value = OutputLoss> {
    proptest::sample::select(
        &[
            OutputLoss::SigmoidBinaryCrossEntropy,
            OutputLoss::LinearSquaredError,
        ][..],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn output_step_matches_reference(
        loss in loss_kind(),
        pairs in proptest::collection::vec((finite_f32().prop_map(|v| v.clamp(-1e15, 1e15)), unit_f32()), 0..3000),
        scale in 1e-6f32..1.0,
    ) {
        let z: Vec<f32> = pairs.iter().map(|p| p.0).collect();
        let x: Vec<f32> = pairs.iter().map(|p| p.1).collect();
        let mut want_grad = vec![0.0; z.len()];
        let want = reference::output_backward(loss, &z, &x, Some(&mut want_grad), scale);
        // Where the sigmoid sits within an ulp of 0.5, f32 and f64 may round differently.
        let ambiguous = z.iter().filter(|v| v.abs() < 1e-6).count() as u64;
        for arch in arches() {
            let mut grad = vec![f32::NAN; z.len()];
            let (stats, eval) = isa::with_arch(arch, || {
                (output::output_backward(loss, &z, &x, &mut grad, scale), output::output_stats(loss, &z, &x))
            });
            prop_assert_eq!(stats, eval, "backward and evaluation disagree");
            prop_assert!((stats.loss_sum - want.loss_sum).abs() <= 1e-5 * want.loss_sum.abs() + 1e-6,
                "{} {:?}: loss {} vs {}", isa::name(arch), loss, stats.loss_sum, want.loss_sum);
            prop_assert!(stats.rounded_equal.abs_diff(want.rounded_equal) <= ambiguous,
                "{} {:?}: rounded_equal {} vs {}", isa::name(arch), loss, stats.rounded_equal, want.rounded_equal);
            for (k, (&g, &w)) in grad.iter().zip(&want_grad).enumerate() {
                let tol = 2e-7 * scale + 4.0 * f32::EPSILON * w.abs();
                prop_assert!((g - w).abs() <= tol, "{} {:?} at {} (z={}, x={}): got {:e}, want {:e}",
                    isa::name(arch), loss, k, z[k], x[k], g, w);
            }
        }
    }
}

#[test]
fn rounding_is_half_to_even_like_tensorflow() {
    // Linear output: the prediction is the value itself, so rounding is all that is tested.
    let z = [
        0.5f32,
        1.5,
        2.5,
        -0.5,
        -1.5,
        0.49999997,
        0.50000006,
        1e9 + 0.5,
        8388607.5,
    ];
    let x = [0.0f32, 2.0, 2.0, -0.0, -2.0, 0.0, 1.0, 1e9, 8388608.0];
    for_each_arch(|arch| {
        let stats = output::output_stats(OutputLoss::LinearSquaredError, &z, &x);
        assert_eq!(stats.rounded_equal, z.len() as u64, "{arch}");
    });
}

#[test]
fn bce_of_confident_correct_logits_is_near_zero_and_never_nan() {
    let z = [100.0f32, -100.0, 1e30, -1e30, 88.8, -88.8];
    let x = [1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0];
    for_each_arch(|arch| {
        let mut grad = [0.0; 6];
        let stats = output::output_backward(
            OutputLoss::SigmoidBinaryCrossEntropy,
            &z,
            &x,
            &mut grad,
            1.0,
        );
        assert!(
            stats.loss_sum >= 0.0 && stats.loss_sum < 1e-30,
            "{arch}: {}",
            stats.loss_sum
        );
        assert_eq!(stats.rounded_equal, 6, "{arch}");
        assert!(
            grad.iter().all(|g| g.is_finite() && g.abs() < 1e-30),
            "{arch}: {grad:?}"
        );
    });
}
