//! Row norms, normalisation and the parallel-gradient projection against f64 references,
//! over ragged widths and rows from subnormal to beyond `f32::MAX` in norm.

use crate::common::*;
use crate::sae_data::*;
use kernels::isa;
use kernels::unit_norm::{self, reference};
use kernels::Layout;
use proptest::prelude::*;

/// Per-row scales: moderate, zero rows, tiny, subnormal, huge, and large enough that the
/// sum of squares (or the norm itself) overflows f32.
const ROW_SCALES: &[f32] = &[1.0, 0.0, 1e-20, 1e-30, 1e-40, 1e15, 1e30, 3e37];

/// `(layout, w)` with each row at its own scale.
fn matrix_of_scaled_rows() -> impl Strategy<Value = (Layout, Vec<f32>)> {
    (
        0usize..7,
        prop_oneof![
            3 => proptest::sample::select(&[1usize, 7, 17, 33, 100, 512][..]),
            1 => 1usize..70,
        ],
        0usize..3,
        proptest::collection::vec(proptest::sample::select(ROW_SCALES), 7),
        any::<u64>(),
    )
        .prop_map(|(rows, cols, pad, scales, seed)| {
            let layout = Layout::strided(rows, cols, cols + pad);
            let mut w = fill(layout.required_len(), seed, 1.0);
            for (i, &scale) in scales.iter().enumerate().take(rows) {
                for v in &mut w[layout.row(i)] {
                    *v *= scale;
                }
            }
            (layout, w)
        })
}

/// Relative error allowed for a norm of `d` values summed in f32 (four accumulators,
/// each adding up to `d / 4` squares on the scalar path), then a square root.
fn norm_rel(d: usize) -> f64 {
    (d as f64 / 4.0 + 8.0) * f64::from(f32::EPSILON)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn row_norms_match_reference((layout, w) in matrix_of_scaled_rows()) {
        let mut want = vec![0.0; layout.rows];
        reference::row_norms(layout, &w, &mut want);
        for arch in arches() {
            let mut got = vec![f32::NAN; layout.rows];
            isa::with_arch(arch, || unit_norm::row_norms(layout, &w, &mut got));
            for i in 0..layout.rows {
                let tol = norm_rel(layout.cols) * f64::from(want[i]) + 2f64.powi(-149);
                prop_assert!(
                    got[i] == want[i] || (f64::from(got[i]) - f64::from(want[i])).abs() <= tol,
                    "{} row {}: got {:e}, want {:e}", isa::name(arch), i, got[i], want[i]
                );
            }
        }
    }

    #[test]
    fn normalize_rows_matches_reference((layout, w) in matrix_of_scaled_rows()) {
        let mut want = w.clone();
        reference::normalize_rows(layout, &mut want);
        for arch in arches() {
            let mut got = w.clone();
            isa::with_arch(arch, || unit_norm::normalize_rows(layout, &mut got));
            for i in 0..layout.rows {
                for k in layout.row(i) {
                    // The norm's relative error, one rounding of the division, and the
                    // subnormal grid for entries tiny against their row.
                    let tol = (norm_rel(layout.cols) + f64::from(f32::EPSILON)) * f64::from(want[k].abs())
                        + 2f64.powi(-149);
                    prop_assert!(
                        (f64::from(got[k]) - f64::from(want[k])).abs() <= tol,
                        "{} row {} at {}: got {:e}, want {:e}", isa::name(arch), i, k, got[k], want[k]
                    );
                }
            }
            // Padding untouched.
            for (k, (&g, &w)) in got.iter().zip(&w).enumerate() {
                if k % layout.row_stride >= layout.cols {
                    prop_assert_eq!(g.to_bits(), w.to_bits());
                }
            }
        }
    }

    #[test]
    fn remove_parallel_component_matches_reference(
        (layout, w) in matrix_of_scaled_rows(),
        g_scale in proptest::sample::select(&[1.0f32, 0.0, 1e-30, 1e-40, 1e20][..]),
        unit in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut w = w;
        if unit {
            reference::normalize_rows(layout, &mut w);
        }
        let g = fill(w.len(), seed, g_scale);
        let mut want = g.clone();
        reference::remove_parallel_component(layout, &w, &mut want);
        let d = layout.cols;
        for arch in arches() {
            let mut got = g.clone();
            isa::with_arch(arch, || unit_norm::remove_parallel_component(layout, &w, &mut got));
            for i in 0..layout.rows {
                let range = layout.row(i);
                let (wr, gr) = (&w[range.clone()], &g[range.clone()]);
                let ww: f64 = wr.iter().map(|&v| f64::from(v).powi(2)).sum();
                let gw_abs: f64 = gr.iter().zip(wr).map(|(&g, &w)| (f64::from(g) * f64::from(w)).abs()).sum();
                let gw: f64 = gr.iter().zip(wr).map(|(&g, &w)| f64::from(g) * f64::from(w)).sum();
                let c = if ww > 0.0 { gw / ww } else { 0.0 };
                let max_w = wr.iter().fold(0.0f64, |m, &v| m.max(f64::from(v.abs())));
                for k in range {
                    let wk = f64::from(w[k].abs());
                    // Errors of the two dots (d terms each) through c, then the FMA; the
                    // subnormal grid of the dots taken with w scaled to a maximum near 1.
                    let gamma = (d as f64 / 2.0 + 8.0) * f64::from(f32::EPSILON);
                    let through_c = if ww > 0.0 { gamma * (gw_abs / ww + 2.0 * c.abs()) * wk } else { 0.0 };
                    let grid = if max_w > 0.0 { (d as f64 + 4.0) * 2f64.powi(-147) * wk / max_w } else { 0.0 };
                    let tol = through_c + 2.0 * f64::from(f32::EPSILON) * f64::from(want[k].abs().max(g[k].abs()))
                        + grid + 2f64.powi(-148);
                    prop_assert!(
                        (f64::from(got[k]) - f64::from(want[k])).abs() <= tol,
                        "{} row {} at {}: got {:e}, want {:e}, tolerance {:e}", isa::name(arch), i, k, got[k], want[k], tol
                    );
                }
            }
        }
    }
}

/// After the projection, unit rows and their gradients are orthogonal; after
/// normalisation, rows have unit norm; zero rows stay zero and leave `g` alone.
#[test]
fn projection_and_normalisation_do_their_job() {
    for &(rows, d) in &[(3, 1), (5, 7), (4, 33), (64, 512), (2, 1000)] {
        let layout = Layout::contiguous(rows, d);
        let mut w: Vec<f32> = fill(layout.len(), d as u64, 0.3)
            .into_iter()
            .map(|v| if v == 0.0 { 0.1 } else { v })
            .collect();
        w[layout.row(1)].fill(0.0);
        let g0 = fill(layout.len(), 99, 1.0);
        for_each_arch(|name| {
            let mut unit = w.clone();
            unit_norm::normalize_rows(layout, &mut unit);
            let mut norms = vec![0.0; rows];
            unit_norm::row_norms(layout, &unit, &mut norms);
            for (i, &n) in norms.iter().enumerate() {
                let want = if i == 1 { 0.0 } else { 1.0 };
                assert!(
                    (n - want).abs() <= 4.0 * f32::EPSILON,
                    "{name} row {i}: norm {n}"
                );
            }
            let mut g = g0.clone();
            unit_norm::remove_parallel_component(layout, &unit, &mut g);
            assert_eq!(&g[layout.row(1)], &g0[layout.row(1)], "{name}: zero row");
            for i in 0..rows {
                let range = layout.row(i);
                let dot: f32 = g[range.clone()]
                    .iter()
                    .zip(&unit[range.clone()])
                    .map(|(a, b)| a * b)
                    .sum();
                let scale: f32 = g0[range].iter().map(|v| v.abs()).sum();
                assert!(dot.abs() <= 1e-5 * scale, "{name} row {i}: g . w = {dot:e}");
            }
        });
    }
}

/// Rows whose norm overflows f32 report `inf` and still normalise to unit rows.
#[test]
fn overflowing_rows_normalise() {
    let layout = Layout::contiguous(1, 17);
    let w = vec![f32::MAX; 17];
    for_each_arch(|name| {
        let mut norms = [0.0];
        unit_norm::row_norms(layout, &w, &mut norms);
        assert_eq!(norms[0], f32::INFINITY, "{name}");
        let mut unit = w.clone();
        unit_norm::normalize_rows(layout, &mut unit);
        let want = (1.0 / 17f64.sqrt()) as f32;
        assert_close(&unit, &[want; 17], 0.0, 4.0 * f32::EPSILON, name);
        let tiny = vec![f32::from_bits(1); 17];
        unit_norm::row_norms(layout, &tiny, &mut norms);
        assert_close(
            &norms,
            &[(17f64.sqrt() * 2f64.powi(-149)) as f32],
            0.0,
            1e-6,
            name,
        );
    });
}

/// The projection when the gradient is far smaller than the row, or both are subnormal:
/// the coefficient `g.w / w.w` taken unscaled would itself be subnormal and lose its bits.
#[test]
fn projection_survives_extreme_scale_ratios() {
    for d in [1, 7, 33] {
        let layout = Layout::contiguous(1, d);
        for (w_scale, g_scale) in [
            (1e15f32, 1e-30f32),
            (1e-40, 1e-40),
            (1e30, 1e-20),
            (1e-38, 1e20),
        ] {
            let w: Vec<f32> = fill(d, 5, 1.0)
                .into_iter()
                .map(|v| if v == 0.0 { w_scale } else { v * w_scale })
                .collect();
            let g = fill(d, 6, g_scale);
            let mut want = g.clone();
            reference::remove_parallel_component(layout, &w, &mut want);
            let largest = g.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for_each_arch(|name| {
                let mut got = g.clone();
                unit_norm::remove_parallel_component(layout, &w, &mut got);
                assert_close(&got, &want, 1e-5 * largest + 1e-43, 0.0, name);
            });
        }
    }
}
