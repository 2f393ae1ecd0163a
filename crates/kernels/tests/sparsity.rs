//! KL and L1 sparsity steps against the f64 references.

mod common;

use common::*;
use kernels::isa;
use kernels::sparsity::{self, reference};
use proptest::prelude::*;

fn close_penalty(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-5 * want.abs() + 1e-12
}

/// The KL penalty is summed in f32: each column's term carries an absolute error of a few
/// f32 ulps of its logarithms, scaled by `weight / B`.
fn close_kl_penalty(got: f64, want: f64, layout: kernels::Layout, weight: f32) -> bool {
    let per_column = 8.0 * f64::from(f32::EPSILON) * 17.0;
    let abs = per_column * layout.cols as f64 * f64::from(weight) / layout.rows.max(1) as f64;
    (got - want).abs() <= 1e-5 * want.abs() + abs + 1e-12
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn kl_step_matches_reference(
        act in any_activation(),
        (layout, output) in matrix(40, 400, unit_f32()),
        grad_seed in proptest::collection::vec(-1.0f32..1.0, 40 * 404),
        target in 0.01f32..0.99,
        weight in 0.0f32..2.0,
    ) {
        let grad = grad_seed[..output.len()].to_vec();
        let mut want = grad.clone();
        let want_penalty = reference::kl_sparsity_backward(act, layout, &output, &mut want, target, weight);
        // The penalty's own gradient alone (da = 0), to scale the tolerance.
        let mut penalty_only = vec![0.0; output.len()];
        reference::kl_sparsity_backward(act, layout, &output, &mut penalty_only, target, weight);
        for arch in arches() {
            let mut got = grad.clone();
            let mut scratch = vec![f32::NAN; layout.cols];
            let (penalty, value_only) = isa::with_arch(arch, || {
                let p = sparsity::kl_sparsity_backward(act, layout, &output, &mut got, target, weight, &mut scratch);
                let v = sparsity::kl_sparsity_penalty(layout, &output, target, weight, &mut scratch);
                (p, v)
            });
            prop_assert!(close_kl_penalty(penalty, want_penalty, layout, weight), "{}: penalty {} vs {}", isa::name(arch), penalty, want_penalty);
            prop_assert_eq!(penalty, value_only);
            let batch = layout.rows as f64;
            for i in 0..layout.rows {
                for k in layout.row(i) {
                    let j = k - i * layout.row_stride;
                    let d = kernels::activation::reference::derivative_from_output(act, output[k]);
                    // The kernel sums columns in f32: an error of rows * eps in q_j moves
                    // g_j = w/B^2 (-p/q + (1-p)/(1-q)) by |dg/dq| q rows eps.
                    let q = (0..layout.rows).map(|r| f64::from(output[r * layout.row_stride + j])).sum::<f64>() / batch;
                    let q = q.clamp(1e-7, 1.0 - 1e-7);
                    let p = f64::from(target);
                    let dg_dq = f64::from(weight) / (batch * batch) * (p / (q * q) + (1.0 - p) / ((1.0 - q) * (1.0 - q)));
                    let from_q = (dg_dq * q * batch * 2.0 * f64::from(f32::EPSILON) * f64::from(d.abs())) as f32;
                    let tol = 8.0 * f32::EPSILON * ((grad[k] * d).abs() + penalty_only[k].abs()) + from_q + 1e-37;
                    prop_assert!((got[k] - want[k]).abs() <= tol,
                        "{} {:?} at {}: got {:e}, want {:e}", isa::name(arch), act, k, got[k], want[k]);
                }
            }
        }
    }

    #[test]
    fn l1_step_matches_reference(
        act in any_activation(),
        (layout, output) in matrix(40, 400, bounded_f32()),
        grad_seed in proptest::collection::vec(-1.0f32..1.0, 40 * 404),
        weight in 0.0f32..0.1,
    ) {
        let grad = grad_seed[..output.len()].to_vec();
        let mut want = grad.clone();
        let want_penalty = reference::l1_sparsity_backward(act, layout, &output, &mut want, weight);
        for arch in arches() {
            let mut got = grad.clone();
            let (penalty, value_only) = isa::with_arch(arch, || {
                let p = sparsity::l1_sparsity_backward(act, layout, &output, &mut got, weight);
                (p, sparsity::l1_sparsity_penalty(layout, &output, weight))
            });
            prop_assert!(close_penalty(penalty, want_penalty), "{}: penalty {} vs {}", isa::name(arch), penalty, want_penalty);
            prop_assert!(close_penalty(value_only, want_penalty));
            for i in 0..layout.rows {
                for k in layout.row(i) {
                    let d = kernels::activation::reference::derivative_from_output(act, output[k]);
                    let scale = weight / layout.rows as f32;
                    let tol = 8.0 * f32::EPSILON * (grad[k].abs() + scale) * d.abs() + 1e-37;
                    prop_assert!(got[k] == want[k] || (got[k] - want[k]).abs() <= tol,
                        "{} {:?} at {}: got {:e}, want {:e}", isa::name(arch), act, k, got[k], want[k]);
                }
            }
        }
    }
}

/// The KL gradient of one column, checked against a central difference of the penalty.
#[test]
fn kl_gradient_is_the_derivative_of_the_penalty() {
    let layout = kernels::Layout::contiguous(5, 3);
    let output: Vec<f32> = (0..15).map(|i| 0.05 + 0.06 * i as f32).collect();
    let (target, weight) = (0.1, 0.05);
    let mut scratch = vec![0.0; 3];
    let mut grad = vec![0.0; 15];
    sparsity::kl_sparsity_backward(
        kernels::Activation::Linear,
        layout,
        &output,
        &mut grad,
        target,
        weight,
        &mut scratch,
    );
    for k in 0..15 {
        let h = 1e-3f32;
        let mut plus = output.clone();
        plus[k] += h;
        let mut minus = output.clone();
        minus[k] -= h;
        let numeric = (sparsity::kl_sparsity_penalty(layout, &plus, target, weight, &mut scratch)
            - sparsity::kl_sparsity_penalty(layout, &minus, target, weight, &mut scratch))
            / (2.0 * f64::from(h));
        let analytic = f64::from(grad[k]);
        assert!(
            (numeric - analytic).abs() <= 1e-3 * analytic.abs() + 1e-7,
            "element {k}: analytic {analytic:e}, numeric {numeric:e}"
        );
    }
}
