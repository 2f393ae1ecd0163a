//! The sparse-times-dense products against their f64 references, over ragged shapes and
//! extreme magnitudes, on every instruction set.

use crate::common::*;
use crate::sae_data::*;
use kernels::isa;
use kernels::sparse::{self, reference};
use kernels::sparse_rows::{LatentIndex, SparseRows};
use kernels::Layout;
use proptest::prelude::*;

/// `|got - want| <= terms * eps * magnitude + terms * 2^-149 + extra` per element: each
/// of the `terms` roundings of an f32 accumulation costs at most an ulp of the running
/// magnitude, or of the subnormal grid.
#[track_caller]
fn assert_within(got: f32, want: f32, magnitude: f64, terms: usize, what: &str) {
    assert_within_plus(got, want, magnitude, terms, 0.0, what);
}

#[track_caller]
fn assert_within_plus(got: f32, want: f32, magnitude: f64, terms: usize, extra: f64, what: &str) {
    let terms = terms as f64 + 2.0;
    let tol = terms * f64::from(f32::EPSILON) * magnitude + terms * 2f64.powi(-149) + extra;
    assert!(
        (f64::from(got) - f64::from(want)).abs() <= tol,
        "{what}: got {got:e}, want {want:e}, tolerance {tol:e}"
    );
}

/// One random problem: a sparse batch, a dense `N x d` matrix and the dense `B x d`
/// operands, with padded row strides and independent magnitudes.
#[derive(Debug, Clone)]
struct Problem {
    codes: SparseRows,
    w: Vec<f32>,
    w_layout: Layout,
    x: Vec<f32>,
    x_layout: Layout,
    bias: Vec<f32>,
    g: Vec<f32>,
    g_layout: Layout,
    split: usize,
}

fn problem() -> impl Strategy<Value = Problem> {
    (
        0usize..6,
        prop_oneof![
            2 => proptest::sample::select(&[1usize, 7, 17, 33, 100, 300, 2000][..]),
            1 => 1usize..50,
        ],
        prop_oneof![
            3 => proptest::sample::select(&[1usize, 7, 17, 33, 100, 512][..]),
            1 => 1usize..70,
        ],
        proptest::sample::select(&[0usize, 1, 3, 32, usize::MAX][..]),
        (0usize..3, 0usize..3, 0usize..3),
        (
            0..MAGNITUDES.len(),
            0..MAGNITUDES.len(),
            0..MAGNITUDES.len(),
        ),
        any::<u64>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(
            |(rows, cols, d, per_row, (pw, px, pg), (mw, mv, mx), seed, split)| {
                let scale_v = MAGNITUDES[mv];
                let codes = sparse_batch(rows, cols, per_row, seed, |s| {
                    let v = s.gaussian() * scale_v;
                    if s.uniform() < 0.1 {
                        0.0
                    } else {
                        v
                    }
                });
                let w_layout = Layout::strided(cols, d, d + pw);
                let x_layout = Layout::strided(rows, d, d + px);
                let g_layout = Layout::strided(cols, d, d + pg);
                Problem {
                    w: fill(w_layout.required_len(), seed ^ 1, MAGNITUDES[mw]),
                    x: fill(x_layout.required_len(), seed ^ 2, MAGNITUDES[mx]),
                    bias: fill(d, seed ^ 3, MAGNITUDES[mx]),
                    g: fill(g_layout.required_len(), seed ^ 4, MAGNITUDES[mx]),
                    codes,
                    w_layout,
                    x_layout,
                    g_layout,
                    split: split.index(cols + 1),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sparse_times_dense_matches_reference(p in problem()) {
        let out_layout = p.x_layout;
        for bias in [Some(&p.bias[..]), None] {
            let mut want = p.x.clone();
            reference::sparse_times_dense(&p.codes, &p.w, p.w_layout, bias, &mut want, out_layout);
            for arch in arches() {
                // The rows are never read (NaN stays out); the padding must stay as it was.
                let mut got = p.x.clone();
                for b in 0..out_layout.rows {
                    got[out_layout.row(b)].fill(f32::NAN);
                }
                isa::with_arch(arch, || {
                    sparse::sparse_times_dense(&p.codes, &p.w, p.w_layout, bias, &mut got, out_layout)
                });
                for b in 0..out_layout.rows {
                    let (indices, values) = p.codes.row(b);
                    for c in 0..out_layout.cols {
                        let k = b * out_layout.row_stride + c;
                        let magnitude = bias.map_or(0.0, |bias| f64::from(bias[c].abs()))
                            + indices.iter().zip(values).map(|(&j, &v)| {
                                f64::from(v.abs()) * f64::from(p.w[j as usize * p.w_layout.row_stride + c].abs())
                            }).sum::<f64>();
                        assert_within(got[k], want[k], magnitude, indices.len(),
                            &format!("{} row {b} col {c}", isa::name(arch)));
                    }
                }
                for (k, (&g, &x)) in got.iter().zip(&p.x).enumerate() {
                    if k % out_layout.row_stride >= out_layout.cols {
                        prop_assert_eq!(g.to_bits(), x.to_bits(), "padding at {}", k);
                    }
                }
            }
        }
    }

    #[test]
    fn dots_at_entries_match_reference(p in problem()) {
        let mut want = vec![0.0; p.codes.nnz()];
        reference::dots_at_entries(&p.codes, &p.x, p.x_layout, &p.w, p.w_layout, &mut want);
        for arch in arches() {
            let mut got = vec![f32::NAN; p.codes.nnz()];
            isa::with_arch(arch, || {
                sparse::dots_at_entries(&p.codes, &p.x, p.x_layout, &p.w, p.w_layout, &mut got)
            });
            for b in 0..p.codes.rows() {
                for e in p.codes.row_range(b) {
                    let j = p.codes.indices()[e] as usize;
                    let magnitude: f64 = (0..p.x_layout.cols).map(|c| {
                        f64::from(p.x[b * p.x_layout.row_stride + c].abs())
                            * f64::from(p.w[j * p.w_layout.row_stride + c].abs())
                    }).sum();
                    assert_within(got[e], want[e], magnitude, p.x_layout.cols,
                        &format!("{} entry {e}", isa::name(arch)));
                }
            }
        }
    }

    #[test]
    fn scatter_outer_add_matches_reference_for_any_split(
        p in problem(),
        alpha in proptest::sample::select(&[1.0f32, -0.5, 1e-3][..]),
    ) {
        let cols = p.codes.cols();
        let values: Vec<f32> = p.codes.values().iter().map(|v| v * 0.75).collect();
        let index = LatentIndex::of(&p.codes);
        let mut want = p.g.clone();
        reference::scatter_outer_add(&p.codes, &values, &p.x, p.x_layout, alpha, 0..cols, &mut want, p.g_layout);
        let mut want_sums = p.bias.iter().copied().cycle().take(cols).collect::<Vec<f32>>();
        let initial_sums = want_sums.clone();
        reference::sum_by_latent(&p.codes, &values, alpha, 0..cols, &mut want_sums);
        for arch in arches() {
            let name = isa::name(arch);
            let mut whole = p.g.clone();
            isa::with_arch(arch, || {
                sparse::scatter_outer_add(&index, &values, &p.x, p.x_layout, alpha, 0..cols, &mut whole, p.g_layout)
            });
            // Two "threads": latents 0..split and split..cols, each with its own rows of g.
            let mut halves = p.g.clone();
            let cut = (p.split * p.g_layout.row_stride).min(halves.len());
            let (low, high) = halves.split_at_mut(cut);
            isa::with_arch(arch, || {
                let low_layout = Layout::strided(p.split, p.g_layout.cols, p.g_layout.row_stride);
                let high_layout = Layout::strided(cols - p.split, p.g_layout.cols, p.g_layout.row_stride);
                sparse::scatter_outer_add(&index, &values, &p.x, p.x_layout, alpha, 0..p.split, low, low_layout);
                sparse::scatter_outer_add(&index, &values, &p.x, p.x_layout, alpha, p.split..cols, high, high_layout);
            });
            prop_assert!(
                whole.iter().zip(&halves).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{}: the split changed the result", name
            );
            for j in 0..cols {
                let (rows, entries) = index.latent(j);
                for c in 0..p.g_layout.cols {
                    let k = j * p.g_layout.row_stride + c;
                    let magnitude = f64::from(p.g[k].abs()) + rows.iter().zip(entries).map(|(&b, &e)| {
                        f64::from((alpha * values[e as usize]).abs())
                            * f64::from(p.x[b as usize * p.x_layout.row_stride + c].abs())
                    }).sum::<f64>();
                    // `alpha * v` is rounded to f32 first: on the subnormal grid that is
                    // an absolute error of up to 2^-150 times |x|.
                    let extra: f64 = rows.iter().map(|&b| {
                        f64::from(p.x[b as usize * p.x_layout.row_stride + c].abs()) * 2f64.powi(-149)
                    }).sum();
                    assert_within_plus(whole[k], want[k], magnitude, rows.len() + 1, extra,
                        &format!("{name} latent {j} col {c}"));
                }
            }
            for (k, (&g, &initial)) in whole.iter().zip(&p.g).enumerate() {
                if k % p.g_layout.row_stride >= p.g_layout.cols {
                    prop_assert_eq!(g.to_bits(), initial.to_bits(), "padding at {}", k);
                }
            }
            let mut sums = initial_sums.clone();
            sparse::sum_by_latent(&index, &values, alpha, 0..cols, &mut sums);
            for j in 0..cols {
                let (_, entries) = index.latent(j);
                let magnitude = f64::from(initial_sums[j].abs())
                    + entries.iter().map(|&e| f64::from((alpha * values[e as usize]).abs())).sum::<f64>();
                assert_within(sums[j], want_sums[j], magnitude, entries.len() + 1, &format!("sum {j}"));
            }
        }
    }
}

/// The training shape's products (d 512, N 8192, k 32) on a few rows.
#[test]
fn training_shapes_match_reference() {
    let (rows, cols, d, k) = (6, 8192, 512, 32);
    let codes = sparse_batch(rows, cols, k, 11, |s| s.uniform() * 3.0);
    let w_layout = Layout::contiguous(cols, d);
    let w = fill(w_layout.len(), 12, 0.05);
    let x_layout = Layout::contiguous(rows, d);
    let x = fill(x_layout.len(), 13, 1.0);
    let bias = fill(d, 14, 0.1);
    let index = LatentIndex::of(&codes);
    let mut want_out = vec![0.0; x.len()];
    reference::sparse_times_dense(&codes, &w, w_layout, Some(&bias), &mut want_out, x_layout);
    let mut want_dots = vec![0.0; codes.nnz()];
    reference::dots_at_entries(&codes, &x, x_layout, &w, w_layout, &mut want_dots);
    let mut want_g = w.clone();
    reference::scatter_outer_add(
        &codes,
        codes.values(),
        &x,
        x_layout,
        -1e-3,
        0..cols,
        &mut want_g,
        w_layout,
    );
    for_each_arch(|name| {
        let mut out = vec![0.0; x.len()];
        sparse::sparse_times_dense(&codes, &w, w_layout, Some(&bias), &mut out, x_layout);
        assert_close(&out, &want_out, 1e-6, 1e-5, name);
        let mut dots = vec![0.0; codes.nnz()];
        sparse::dots_at_entries(&codes, &x, x_layout, &w, w_layout, &mut dots);
        assert_close(&dots, &want_dots, 1e-5, 1e-4, name);
        let mut g = w.clone();
        sparse::scatter_outer_add(
            &index,
            codes.values(),
            &x,
            x_layout,
            -1e-3,
            0..cols,
            &mut g,
            w_layout,
        );
        assert_close(&g, &want_g, 1e-7, 1e-5, name);
    });
}

#[test]
#[should_panic(expected = "g rows != latents")]
fn scatter_outer_add_rejects_rows_that_do_not_match_the_range() {
    let codes = sparse_batch(2, 10, 3, 1, |s| s.gaussian());
    let index = LatentIndex::of(&codes);
    let mut g = vec![0.0; 10 * 4];
    sparse::scatter_outer_add(
        &index,
        codes.values(),
        &[0.0; 8],
        Layout::contiguous(2, 4),
        1.0,
        2..5,
        &mut g,
        Layout::contiguous(10, 4),
    );
}
