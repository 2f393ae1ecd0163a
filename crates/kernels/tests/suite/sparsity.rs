//! KL, L1, L2 and squared mean-target sparsity steps against the f64 references.

use crate::common::*;
use kernels::activation::reference::derivative_from_output;
use kernels::isa;
use kernels::sparsity::{self, reference};
use kernels::{Activation, Layout};
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

/// L2 and squared mean-target steps: one check each, run by the property tests, the
/// shape grid and the extreme-value fills below, on every instruction set.
mod checks {
    use super::*;

    const EPS: f64 = f32::EPSILON as f64;
    /// Absolute slack for a result that rounds in the subnormal range.
    const TINY: f64 = f32::MIN_POSITIVE as f64;

    /// The L2 step against [`reference::l2_sparsity_backward`].
    ///
    /// Bounds: each row's squares are summed in f32, a relative error of at most
    /// `(cols - 1) u` for non-negative terms, plus `u` for each square and for `w / B`
    /// (`u = eps / 2`): `(cols + 2) eps` covers it twice, and squares that underflow lose
    /// at most the smallest subnormal each. Each `dz` rounds `w / B`, the fused
    /// `da + (2 w / B) a` and the product with `act'`: `4 eps (|da| + |g|) |act'|`.
    pub fn l2(
        act: Activation,
        layout: Layout,
        output: &[f32],
        grad: &[f32],
        weight: f32,
    ) -> Result<(), String> {
        let scale = f64::from(weight) / layout.rows.max(1) as f64;
        let reference_step = |want: &mut [f32]| {
            let p = reference::l2_sparsity_backward(act, layout, output, want, weight);
            (p, reference::l2_sparsity_penalty(layout, output, weight))
        };
        let penalty_tol = |want_penalty: f64| {
            (layout.cols + 2) as f64 * EPS * want_penalty.abs()
                + scale * layout.len() as f64 * f64::from(f32::from_bits(1))
                + 1e-300
        };
        let step = |got: &mut [f32]| {
            let p = sparsity::l2_sparsity_backward(act, layout, output, got, weight);
            (p, sparsity::l2_sparsity_penalty(layout, output, weight))
        };
        let tol = |k: usize, _column: usize| {
            let d = f64::from(derivative_from_output(act, output[k]).abs());
            let penalty_grad = 2.0 * scale * f64::from(output[k]);
            4.0 * EPS * (f64::from(grad[k]).abs() + penalty_grad.abs()) * d + TINY * (1.0 + d)
        };
        on_every_arch(act, layout, grad, reference_step, penalty_tol, step, tol)
    }

    /// The squared mean-target step against [`reference::squared_sparsity_backward`].
    ///
    /// Bounds: a column's sum in f32, scaled by `1 / B`, is off by at most `(rows + 1) u`
    /// times `sum_i |a_ij| / B` (`u = eps / 2`); `dq` below is twice that. Then
    /// `q - p` rounds (`u |q - p|`), the gradient `(2 w / B^2) (q - p)` twice more, and
    /// `dz` twice (`da + g`, then `act'`). The penalty's terms `(q - p)^2` move by
    /// `2 |q - p| dq + dq^2` each and are summed in f32 over at most `cols` terms a lane.
    pub fn squared(
        act: Activation,
        layout: Layout,
        output: &[f32],
        grad: &[f32],
        target: f32,
        weight: f32,
    ) -> Result<(), String> {
        let reference_step = |want: &mut [f32]| {
            let penalty =
                reference::squared_sparsity_backward(act, layout, output, want, target, weight);
            let value = reference::squared_sparsity_penalty(layout, output, target, weight);
            (penalty, value)
        };
        let batch = layout.rows.max(1) as f64;
        let (p, w) = (f64::from(target), f64::from(weight));
        let grad_scale = 2.0 * w / (batch * batch);
        // Per column: the exact difference `q - p` and the bound on its error.
        let columns: Vec<(f64, f64)> = (0..layout.cols)
            .map(|j| {
                let values = (0..layout.rows).map(|i| f64::from(output[i * layout.row_stride + j]));
                let q = values.clone().sum::<f64>() / batch;
                let abs = values.map(f64::abs).sum::<f64>() / batch;
                let dq = (layout.rows + 2) as f64 * EPS * abs;
                (q - p, dq + EPS * (q - p).abs())
            })
            .collect();
        let penalty_tol = |want_penalty: f64| {
            w / batch
                * columns
                    .iter()
                    .map(|&(diff, d)| 2.0 * diff.abs() * d + d * d)
                    .sum::<f64>()
                + (layout.cols + 2) as f64 * EPS * want_penalty.abs()
                + 1e-300
        };
        let step = |got: &mut [f32]| {
            let mut scratch = vec![f32::NAN; layout.cols];
            let penalty = sparsity::squared_sparsity_backward(
                act,
                layout,
                output,
                got,
                target,
                weight,
                &mut scratch,
            );
            let value =
                sparsity::squared_sparsity_penalty(layout, output, target, weight, &mut scratch);
            (penalty, value)
        };
        let tol = |k: usize, column: usize| {
            let (diff, d_diff) = columns[column];
            let penalty_grad = grad_scale * diff;
            let grad_tol = grad_scale * (d_diff + 2.0 * EPS * diff.abs());
            let d = f64::from(derivative_from_output(act, output[k]).abs());
            d * (grad_tol + 2.0 * EPS * (f64::from(grad[k]).abs() + penalty_grad.abs()))
                + TINY * (1.0 + d)
        };
        on_every_arch(act, layout, grad, reference_step, penalty_tol, step, tol)
    }

    /// A step against its reference, from `da = grad`. `reference_step` and `step` each
    /// turn `da` into `dz` and return their backward's penalty and their value-only
    /// penalty. The reference's two penalties are equal; on every instruction set the
    /// kernels' two have the same bits and are within `penalty_tol(reference's penalty)`
    /// of the reference's; each `dz[k]`, of column `column`, is within `tol(k, column)`
    /// of the reference's; and the padding between rows is neither read nor written.
    fn on_every_arch(
        act: Activation,
        layout: Layout,
        grad: &[f32],
        reference_step: impl FnOnce(&mut [f32]) -> (f64, f64),
        penalty_tol: impl FnOnce(f64) -> f64,
        step: impl Fn(&mut [f32]) -> (f64, f64),
        tol: impl Fn(usize, usize) -> f64,
    ) -> Result<(), String> {
        let mut want = grad.to_vec();
        let (want_penalty, want_value) = reference_step(&mut want);
        if want_value != want_penalty {
            return Err(format!("reference value {want_value} != {want_penalty}"));
        }
        let penalty_tol = penalty_tol(want_penalty);
        for arch in arches() {
            let name = isa::name(arch);
            let mut got = grad.to_vec();
            let (penalty, value_only) = isa::with_arch(arch, || step(&mut got));
            if penalty.to_bits() != value_only.to_bits() {
                return Err(format!(
                    "{name}: backward's penalty {penalty:e} != value-only {value_only:e}"
                ));
            }
            if !(penalty == want_penalty || (penalty - want_penalty).abs() <= penalty_tol) {
                return Err(format!(
                    "{name} {act:?} {layout:?}: penalty {penalty:e}, want {want_penalty:e} (tolerance {penalty_tol:e})"
                ));
            }
            for (k, (&g, &want_k)) in got.iter().zip(&want).enumerate() {
                let column = k % layout.row_stride.max(1);
                if column >= layout.cols {
                    // Padding between rows is neither read nor written.
                    if g.to_bits() != grad[k].to_bits() {
                        return Err(format!("{name}: padding element {k} was written"));
                    }
                    continue;
                }
                let tol = tol(k, column);
                if !(g == want_k || (f64::from(g) - f64::from(want_k)).abs() <= tol) {
                    return Err(format!(
                        "{name} {act:?} {layout:?} at {k}: got {g:e}, want {want_k:e} (tolerance {tol:e})"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Activations for the L2 penalty: moderate values of either sign, and sometimes zero,
/// one, a subnormal, a square that underflows, or a large value whose square does not
/// overflow a row's f32 sum.
fn l2_f32() -> impl Strategy<Value = f32> + Clone {
    prop_oneof![
        6 => -2.0f32..2.0,
        2 => proptest::sample::select(LARGE_AND_TINY),
    ]
}

/// Activations for the squared mean-target penalty: mostly in `[0, 1]` as a sigmoid gives
/// them, sometimes one of the awkward values.
fn squared_f32() -> impl Strategy<Value = f32> + Clone {
    prop_oneof![
        6 => unit_f32(),
        1 => proptest::sample::select(LARGE_AND_TINY),
    ]
}

/// Zero, one, tiny and large values for the L2 and squared penalties.
const LARGE_AND_TINY: &[f32] = &[
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    1e-40,
    -1e-40,
    f32::MIN_POSITIVE,
    1e-20,
    -1e-20,
    1e12,
    -1e12,
    1e15,
    -1e15,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn l2_step_matches_reference(
        act in any_activation(),
        // Half the cases without the large values, whose squares would swamp the rest.
        (layout, output) in prop_oneof![matrix(40, 400, -2.0f32..2.0), matrix(40, 400, l2_f32())],
        grad_seed in proptest::collection::vec(-1.0f32..1.0, 40 * 404),
        weight in 0.0f32..2.0,
    ) {
        let grad = grad_seed[..output.len()].to_vec();
        if let Err(e) = checks::l2(act, layout, &output, &grad, weight) {
            prop_assert!(false, "{}", e);
        }
    }

    #[test]
    fn squared_step_matches_reference(
        act in any_activation(),
        // Half the cases in [0, 1] alone: a large value makes its column's mean, and the
        // tolerance of the penalty, swamp the other columns'.
        (layout, output) in prop_oneof![matrix(40, 400, unit_f32()), matrix(40, 400, squared_f32())],
        grad_seed in proptest::collection::vec(-1.0f32..1.0, 40 * 404),
        target in 0.0f32..1.0,
        weight in 0.0f32..2.0,
    ) {
        let grad = grad_seed[..output.len()].to_vec();
        if let Err(e) = checks::squared(act, layout, &output, &grad, target, weight) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// `len` values in `[lo, hi)` in a fixed pattern that `salt` shifts.
fn patterned(len: usize, lo: f32, hi: f32, salt: usize) -> Vec<f32> {
    (0..len)
        .map(|i| lo + (hi - lo) * (((i * 7919 + salt) % 1013) as f32 / 1013.0))
        .collect()
}

/// Shapes at the edges of the vector loops: one element, a ragged tail shorter than a
/// vector, exactly one and two AVX-512 vectors, a tail after several, the reference
/// model's 32 x 300 and one more of each, and empty batches; with and without padding
/// between rows (NaN there, which must stay untouched).
fn edge_shapes() -> Vec<Layout> {
    let mut layouts = vec![];
    for (rows, cols) in [
        (1, 1),
        (1, 7),
        (7, 13),
        (3, 16),
        (2, 17),
        (5, 32),
        (4, 33),
        (32, 300),
        (33, 301),
        (0, 5),
        (5, 0),
    ] {
        for pad in [0, 3] {
            layouts.push(Layout::strided(rows, cols, cols + pad));
        }
    }
    layouts
}

/// A buffer for `layout` holding `values` in its elements and NaN in the padding.
fn fill(layout: Layout, values: &[f32]) -> Vec<f32> {
    let mut data = vec![f32::NAN; layout.required_len()];
    for i in 0..layout.rows {
        for k in layout.row(i) {
            data[k] = values[k];
        }
    }
    data
}

const ACTIVATIONS: [Activation; 4] = [
    Activation::Linear,
    Activation::Relu,
    Activation::Selu,
    Activation::Sigmoid,
];

#[test]
fn l2_and_squared_steps_match_reference_at_edge_shapes() {
    let mut checked = 0;
    for layout in edge_shapes() {
        let len = layout.required_len();
        let grad = fill(layout, &patterned(len, -1.0, 1.0, 1));
        let signed = fill(layout, &patterned(len, -2.0, 2.0, 2));
        let unit = fill(layout, &patterned(len, 0.0, 1.0, 3));
        for act in ACTIVATIONS {
            for weight in [0.0, 1e-3, 0.05, 1.5] {
                checks::l2(act, layout, &signed, &grad, weight).unwrap_or_else(|e| panic!("{e}"));
                for target in [0.0, 0.1, 0.9] {
                    checks::squared(act, layout, &unit, &grad, target, weight)
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 22 * 4 * 4);
}

/// Every element one awkward value (0, 1, tiny, subnormal, large), and those values side
/// by side, at a ragged shape.
#[test]
fn l2_and_squared_steps_match_reference_at_extreme_values() {
    for layout in [
        Layout::contiguous(7, 13),
        Layout::strided(33, 301, 304),
        Layout::contiguous(1, 1),
    ] {
        let len = layout.required_len();
        let grad = fill(layout, &patterned(len, -1.0, 1.0, 4));
        let mut fills: Vec<Vec<f32>> = LARGE_AND_TINY
            .iter()
            .map(|&v| fill(layout, &vec![v; len]))
            .collect();
        let mixed: Vec<f32> = (0..len)
            .map(|k| LARGE_AND_TINY[k * 5 % LARGE_AND_TINY.len()])
            .collect();
        fills.push(fill(layout, &mixed));
        for output in &fills {
            for act in ACTIVATIONS {
                checks::l2(act, layout, output, &grad, 0.05).unwrap_or_else(|e| panic!("{e}"));
                checks::squared(act, layout, output, &grad, 0.1, 0.05)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
}

/// For a linear activation `dz - da` is the penalty's own gradient: on every instruction
/// set, it matches a central difference of the f64 reference penalty. Both penalties are
/// quadratic in each `a_ij`, so the central difference is exact but for rounding; the
/// step is taken as the f32 values actually differ.
#[test]
fn l2_and_squared_gradients_are_the_derivatives_of_their_penalties() {
    let layout = Layout::strided(5, 7, 9);
    let len = layout.required_len();
    let output = fill(layout, &patterned(len, 0.02, 0.6, 5));
    let da = fill(layout, &patterned(len, -0.05, 0.05, 6));
    let (target, weight) = (0.1f32, 0.5f32);
    type Penalty = Box<dyn Fn(&[f32]) -> f64>;
    type Backward = Box<dyn Fn(&[f32], &mut [f32]) -> f64>;
    let cases: [(&str, Penalty, Backward); 2] = [
        (
            "l2",
            Box::new(move |a| reference::l2_sparsity_penalty(layout, a, weight)),
            Box::new(move |a, g| {
                sparsity::l2_sparsity_backward(Activation::Linear, layout, a, g, weight)
            }),
        ),
        (
            "squared",
            Box::new(move |a| reference::squared_sparsity_penalty(layout, a, target, weight)),
            Box::new(move |a, g| {
                let mut scratch = vec![0.0; layout.cols];
                sparsity::squared_sparsity_backward(
                    Activation::Linear,
                    layout,
                    a,
                    g,
                    target,
                    weight,
                    &mut scratch,
                )
            }),
        ),
    ];
    for (name, penalty, backward) in &cases {
        for arch in arches() {
            let mut dz = da.clone();
            isa::with_arch(arch, || backward(&output, &mut dz));
            for i in 0..layout.rows {
                for k in layout.row(i) {
                    let h = 1e-2f32;
                    let mut plus = output.clone();
                    plus[k] += h;
                    let mut minus = output.clone();
                    minus[k] -= h;
                    let step = f64::from(plus[k]) - f64::from(minus[k]);
                    let numeric = (penalty(&plus) - penalty(&minus)) / step;
                    let analytic = f64::from(dz[k]) - f64::from(da[k]);
                    // `dz` is `da + g` rounded once (after `g`'s own few roundings).
                    let tol =
                        4.0 * f64::from(f32::EPSILON) * (f64::from(da[k]).abs() + numeric.abs())
                            + 1e-12;
                    assert!(
                        (numeric - analytic).abs() <= tol,
                        "{name} on {} at {k}: analytic {analytic:e}, numeric {numeric:e}",
                        isa::name(arch)
                    );
                }
            }
        }
    }
}

/// The ReLU + L1 codes pass gives its reference's bits on every instruction set: widths
/// from 0 to past two AVX-512 vectors and a wide row with a ragged tail, three rows added
/// into the same sums, counts and bias gradient, codes mixing moderate values with
/// signed zeros, subnormals and huge values, and an L1 weight of zero or not. It also
/// leaves nothing unmasked: every gradient where a code is not positive is zero.
#[test]
fn relu_l1_codes_row_matches_reference_bit_for_bit() {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let mut checked = 0;
    let widths: Vec<usize> = (0..=40).chain([63, 64, 65, 4096 + 7]).collect();
    for width in widths {
        for lambda in [0.0f32, 3e-4, 2.5] {
            let norms = patterned(width, 0.0, 2.0, 5);
            let rows: Vec<(Vec<f32>, Vec<f32>)> = (0..3)
                .map(|r| {
                    let codes: Vec<f32> = patterned(width, -1.0, 3.0, r)
                        .into_iter()
                        .enumerate()
                        .map(|(j, v)| {
                            if (j + r) % 5 == 0 {
                                EXTREMES[(j + 3 * r) % EXTREMES.len()]
                            } else {
                                v
                            }
                        })
                        .collect();
                    (codes, patterned(width, -1e3, 1e3, 7 + r))
                })
                .collect();
            let mut want = (
                vec![0.5f32; width],
                vec![1u32; width],
                vec![-0.25f32; width],
            );
            let mut want_grads = Vec::new();
            for (codes, grad) in &rows {
                let mut grad = grad.clone();
                let (sums, counts, bias) = (&mut want.0, &mut want.1, &mut want.2);
                reference::relu_l1_codes_row(codes, &mut grad, &norms, lambda, sums, counts, bias);
                want_grads.push(grad);
            }
            for arch in arches() {
                let name = isa::name(arch);
                let mut got = (
                    vec![0.5f32; width],
                    vec![1u32; width],
                    vec![-0.25f32; width],
                );
                for ((codes, grad), want_grad) in rows.iter().zip(&want_grads) {
                    let mut grad = grad.clone();
                    let (sums, counts, bias) = (&mut got.0, &mut got.1, &mut got.2);
                    isa::with_arch(arch, || {
                        sparsity::relu_l1_codes_row(
                            codes, &mut grad, &norms, lambda, sums, counts, bias,
                        )
                    });
                    assert_eq!(
                        bits(&grad),
                        bits(want_grad),
                        "{name}: width {width}, gradient"
                    );
                    for (&f, &g) in codes.iter().zip(&grad) {
                        assert!(
                            f > 0.0 || g.to_bits() == 0,
                            "{name}: {g} where the code is {f}"
                        );
                    }
                }
                assert_eq!(bits(&got.0), bits(&want.0), "{name}: width {width}, sums");
                assert_eq!(got.1, want.1, "{name}: width {width}, counts");
                assert_eq!(
                    bits(&got.2),
                    bits(&want.2),
                    "{name}: width {width}, bias gradient"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 45 * 3, "only {checked} widths checked");
}

#[test]
#[should_panic(expected = "slices differ in length")]
fn relu_l1_codes_row_refuses_slices_of_different_lengths() {
    let (codes, norms) = ([1.0f32; 4], [1.0f32; 4]);
    let (mut grad, mut sums, mut counts, mut bias) =
        ([0.0f32; 4], [0.0f32; 3], [0u32; 4], [0.0f32; 4]);
    sparsity::relu_l1_codes_row(
        &codes,
        &mut grad,
        &norms,
        0.1,
        &mut sums,
        &mut counts,
        &mut bias,
    );
}
