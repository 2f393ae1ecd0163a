//! Products of a sparse batch ([`SparseRows`], `B x N` with about `k` entries a row) with
//! a dense row-major `N x d` matrix `w` (one contiguous row per latent), as a TopK sparse
//! autoencoder needs them after its encoder product:
//!
//! - [`sparse_times_dense`]: `out[b, :] = bias + sum_{(j, v) in row b} v w[j, :]`, the
//!   decoder's forward pass (`2 k d` FLOP a row instead of `2 N d`).
//! - [`dots_at_entries`]: `grads[e] = dout[b, :] . w[j, :]` for every entry `e = (b, j)`,
//!   the gradient with respect to the kept activations.
//! - [`scatter_outer_add`]: `g[j, :] += alpha v_e x[b, :]` for every entry, the weight
//!   gradients: `dW_dec` (`v` the activations, `x = dout`) and the transposed encoder
//!   gradient `dW_enc^T` (`v` the latent gradients, `x` the encoder's input rows), both
//!   `N x d`.
//! - [`sum_by_latent`]: `out[j] += alpha sum_{e of latent j} v_e`, the encoder bias's
//!   gradient.
//!
//! The first two walk the rows; the last two walk a [`LatentIndex`] (the entries grouped
//! by latent), so that each gradient row is read and written once per batch, with its
//! contributions added in register blocks in increasing row order.
//!
//! # Threads
//! - [`sparse_times_dense`] and [`dots_at_entries`] write per row and per entry: split the
//!   batch into blocks of rows, each with its own [`SparseRows`] (as the selection
//!   kernels' threads produce them) and its part of `out`/`dout`.
//! - [`scatter_outer_add`] and [`sum_by_latent`] take a range of latents and the rows of
//!   `g` (or of `out`) for that range only: split `0..N` into ranges, hand each thread its
//!   range and the disjoint slice of `g` that holds those rows (`split_at_mut`); no two
//!   threads write the same row, and each reads only its own latents' entries.
//!   [`LatentIndex::entries_in`] tells how much work a range holds. The result does not
//!   depend on the split: each row's sum runs in the same order whatever the ranges.
//!
//! Every accumulation is in f32; the tests bound the error against f64 references.

use crate::isa::dispatch;
use crate::layout::Layout;
use crate::sparse_rows::{LatentIndex, SparseRows};
use core::ops::Range;
use pulp::{Simd, WithSimd};

/// Registers of a row block kept in accumulators while the entries stream by: eight
/// independent FMA chains, enough to cover the FMA latency on the machines we target.
const BLOCK: usize = 8;

/// `acc[r] += s * x[r]` for the registers of one block.
#[inline(always)]
fn fma_block<S: Simd>(simd: S, acc: &mut [S::f32s; BLOCK], s: S::f32s, x: &[S::f32s; BLOCK]) {
    for (a, &x) in acc.iter_mut().zip(x) {
        *a = simd.mul_add_f32s(s, x, *a);
    }
}

/// Block `blk` of a row's full registers, as an array.
#[inline(always)]
fn block<S: Simd>(head: &[S::f32s], blk: usize) -> &[S::f32s; BLOCK] {
    head[blk * BLOCK..(blk + 1) * BLOCK].try_into().unwrap()
}

// ---------------------------------------------------------------------------------------
// Decoder forward.

struct SparseTimesDense<'a> {
    codes: &'a SparseRows,
    w: &'a [f32],
    w_layout: Layout,
    bias: Option<&'a [f32]>,
    out: &'a mut [f32],
    out_layout: Layout,
}

impl WithSimd for SparseTimesDense<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            codes,
            w,
            w_layout,
            bias,
            out,
            out_layout,
        } = self;
        let zero = simd.splat_f32s(0.0);
        for b in 0..out_layout.rows {
            let (indices, values) = codes.row(b);
            let out_row = &mut out[out_layout.row(b)];
            let (bias_head, bias_tail) = match bias {
                Some(bias) => S::as_simd_f32s(bias),
                None => (&[][..], &[][..]),
            };
            let w_row = |j: u32| S::as_simd_f32s(&w[w_layout.row(j as usize)]);
            let (o_head, o_tail) = S::as_mut_simd_f32s(out_row);
            let full = o_head.len() / BLOCK;
            for blk in 0..full {
                let mut acc = [zero; BLOCK];
                if bias.is_some() {
                    acc = *block::<S>(bias_head, blk);
                }
                for (&j, &v) in indices.iter().zip(values) {
                    fma_block(
                        simd,
                        &mut acc,
                        simd.splat_f32s(v),
                        block::<S>(w_row(j).0, blk),
                    );
                }
                o_head[blk * BLOCK..(blk + 1) * BLOCK].copy_from_slice(&acc);
            }
            for (r, o) in o_head.iter_mut().enumerate().skip(full * BLOCK) {
                let mut acc = bias_head.get(r).copied().unwrap_or(zero);
                for (&j, &v) in indices.iter().zip(values) {
                    acc = simd.mul_add_f32s(simd.splat_f32s(v), w_row(j).0[r], acc);
                }
                *o = acc;
            }
            if !o_tail.is_empty() {
                let mut acc = simd.partial_load_f32s(bias_tail);
                for (&j, &v) in indices.iter().zip(values) {
                    let x = simd.partial_load_f32s(w_row(j).1);
                    acc = simd.mul_add_f32s(simd.splat_f32s(v), x, acc);
                }
                simd.partial_store_f32s(o_tail, acc);
            }
        }
    }
}

#[track_caller]
fn check_codes_against_w(codes: &SparseRows, w: &[f32], w_layout: Layout, what: &str) {
    w_layout.check(w.len(), what);
    assert_eq!(
        w_layout.rows,
        codes.cols(),
        "{what}: w has {} rows for {} latents",
        w_layout.rows,
        codes.cols()
    );
}

/// `out[b, :] = bias + sum_{(j, v) in row b of codes} v w[j, :]` for every row `b`:
/// the sparse codes times the row-major `N x d` matrix `w` (the decoder's forward pass;
/// `bias = None` adds nothing). Row `b` of `out` is overwritten, never read.
///
/// # Panics
/// If `w` is too short for `w_layout`, `w_layout.rows != codes.cols()`,
/// `out_layout.rows != codes.rows()`, `out_layout.cols != w_layout.cols`, `out` is too
/// short for `out_layout`, or `bias` is not `w_layout.cols` long.
pub fn sparse_times_dense(
    codes: &SparseRows,
    w: &[f32],
    w_layout: Layout,
    bias: Option<&[f32]>,
    out: &mut [f32],
    out_layout: Layout,
) {
    check_codes_against_w(codes, w, w_layout, "sparse_times_dense: w");
    out_layout.check(out.len(), "sparse_times_dense: out");
    assert_eq!(
        out_layout.rows,
        codes.rows(),
        "sparse_times_dense: out rows != code rows"
    );
    assert_eq!(
        out_layout.cols, w_layout.cols,
        "sparse_times_dense: out cols != w cols"
    );
    if let Some(bias) = bias {
        assert_eq!(
            bias.len(),
            w_layout.cols,
            "sparse_times_dense: bias length != cols"
        );
    }
    if out_layout.is_empty() {
        return;
    }
    dispatch(SparseTimesDense {
        codes,
        w,
        w_layout,
        bias,
        out,
        out_layout,
    });
}

// ---------------------------------------------------------------------------------------
// Dots at the kept entries.

/// Entries whose dots share one pass over `dout`'s row.
const DOTS_AT_ONCE: usize = 4;

struct DotsAtEntries<'a> {
    codes: &'a SparseRows,
    dout: &'a [f32],
    dout_layout: Layout,
    w: &'a [f32],
    w_layout: Layout,
    grads: &'a mut [f32],
}

impl WithSimd for DotsAtEntries<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            codes,
            dout,
            dout_layout,
            w,
            w_layout,
            grads,
        } = self;
        let zero = simd.splat_f32s(0.0);
        let w_row = |j: u32| S::as_simd_f32s(&w[w_layout.row(j as usize)]);
        for b in 0..dout_layout.rows {
            let (d_head, d_tail) = S::as_simd_f32s(&dout[dout_layout.row(b)]);
            let d_tail = simd.partial_load_f32s(d_tail);
            let range = codes.row_range(b);
            let indices = &codes.indices()[range.clone()];
            let grads = &mut grads[range];
            let mut groups = indices.chunks_exact(DOTS_AT_ONCE);
            let mut out_groups = grads.chunks_exact_mut(DOTS_AT_ONCE);
            for (group, out) in (&mut groups).zip(&mut out_groups) {
                // Two accumulators per entry (even and odd registers): eight chains.
                let rows: [&[S::f32s]; DOTS_AT_ONCE] =
                    core::array::from_fn(|e| &w_row(group[e]).0[..d_head.len()]);
                let mut even = [zero; DOTS_AT_ONCE];
                let mut odd = [zero; DOTS_AT_ONCE];
                let mut pairs = d_head.chunks_exact(2);
                let mut r = 0;
                for pair in &mut pairs {
                    for e in 0..DOTS_AT_ONCE {
                        even[e] = simd.mul_add_f32s(pair[0], rows[e][r], even[e]);
                        odd[e] = simd.mul_add_f32s(pair[1], rows[e][r + 1], odd[e]);
                    }
                    r += 2;
                }
                for &x in pairs.remainder() {
                    for e in 0..DOTS_AT_ONCE {
                        even[e] = simd.mul_add_f32s(x, rows[e][r], even[e]);
                    }
                }
                for e in 0..DOTS_AT_ONCE {
                    let t = simd.partial_load_f32s(w_row(group[e]).1);
                    odd[e] = simd.mul_add_f32s(d_tail, t, odd[e]);
                    out[e] = simd.reduce_sum_f32s(simd.add_f32s(even[e], odd[e]));
                }
            }
            for (&j, out) in groups.remainder().iter().zip(out_groups.into_remainder()) {
                let (w_head, w_tail) = w_row(j);
                let mut even = zero;
                let mut odd = zero;
                let mut pairs = d_head.chunks_exact(2);
                let mut w_pairs = w_head.chunks_exact(2);
                for (x, y) in (&mut pairs).zip(&mut w_pairs) {
                    even = simd.mul_add_f32s(x[0], y[0], even);
                    odd = simd.mul_add_f32s(x[1], y[1], odd);
                }
                for (&x, &y) in pairs.remainder().iter().zip(w_pairs.remainder()) {
                    even = simd.mul_add_f32s(x, y, even);
                }
                odd = simd.mul_add_f32s(d_tail, simd.partial_load_f32s(w_tail), odd);
                *out = simd.reduce_sum_f32s(simd.add_f32s(even, odd));
            }
        }
    }
}

/// `grads[e] = dout[b, :] . w[j, :]` for every entry `e = (b, j)` of `codes` (entries
/// numbered as in [`SparseRows`]): the gradient with respect to the kept activations,
/// from the gradient `dout` (`B x d`) of the decoder's output and the row-major `N x d`
/// decoder `w`.
///
/// # Panics
/// If `w` is too short for `w_layout`, `w_layout.rows != codes.cols()`, `dout` is too
/// short for `dout_layout`, `dout_layout.rows != codes.rows()`,
/// `dout_layout.cols != w_layout.cols`, or `grads.len() != codes.nnz()`.
pub fn dots_at_entries(
    codes: &SparseRows,
    dout: &[f32],
    dout_layout: Layout,
    w: &[f32],
    w_layout: Layout,
    grads: &mut [f32],
) {
    check_codes_against_w(codes, w, w_layout, "dots_at_entries: w");
    dout_layout.check(dout.len(), "dots_at_entries: dout");
    assert_eq!(
        dout_layout.rows,
        codes.rows(),
        "dots_at_entries: dout rows != code rows"
    );
    assert_eq!(
        dout_layout.cols, w_layout.cols,
        "dots_at_entries: dout cols != w cols"
    );
    assert_eq!(
        grads.len(),
        codes.nnz(),
        "dots_at_entries: grads length != entries"
    );
    assert_eq!(
        codes.offsets()[codes.rows()],
        codes.nnz(),
        "dots_at_entries: codes has an open row"
    );
    dispatch(DotsAtEntries {
        codes,
        dout,
        dout_layout,
        w,
        w_layout,
        grads,
    });
}

// ---------------------------------------------------------------------------------------
// Scatter of outer products, by latent.

struct ScatterOuterAdd<'a> {
    index: &'a LatentIndex,
    values: &'a [f32],
    x: &'a [f32],
    x_layout: Layout,
    alpha: f32,
    latents: Range<usize>,
    g: &'a mut [f32],
    g_layout: Layout,
}

impl WithSimd for ScatterOuterAdd<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            index,
            values,
            x,
            x_layout,
            alpha,
            latents,
            g,
            g_layout,
        } = self;
        let x_row = |b: u32| S::as_simd_f32s(&x[x_layout.row(b as usize)]);
        for (r, j) in latents.enumerate() {
            let (rows, entries) = index.latent(j);
            if rows.is_empty() {
                continue;
            }
            let (g_head, g_tail) = S::as_mut_simd_f32s(&mut g[g_layout.row(r)]);
            let full = g_head.len() / BLOCK;
            for blk in 0..full {
                let g_block = &mut g_head[blk * BLOCK..(blk + 1) * BLOCK];
                let mut acc: [S::f32s; BLOCK] = (&*g_block).try_into().unwrap();
                for (&b, &e) in rows.iter().zip(entries) {
                    let s = simd.splat_f32s(alpha * values[e as usize]);
                    fma_block(simd, &mut acc, s, block::<S>(x_row(b).0, blk));
                }
                g_block.copy_from_slice(&acc);
            }
            for (reg, g) in g_head.iter_mut().enumerate().skip(full * BLOCK) {
                let mut acc = *g;
                for (&b, &e) in rows.iter().zip(entries) {
                    let s = simd.splat_f32s(alpha * values[e as usize]);
                    acc = simd.mul_add_f32s(s, x_row(b).0[reg], acc);
                }
                *g = acc;
            }
            if !g_tail.is_empty() {
                let mut acc = simd.partial_load_f32s(g_tail);
                for (&b, &e) in rows.iter().zip(entries) {
                    let s = simd.splat_f32s(alpha * values[e as usize]);
                    let x = simd.partial_load_f32s(x_row(b).1);
                    acc = simd.mul_add_f32s(s, x, acc);
                }
                simd.partial_store_f32s(g_tail, acc);
            }
        }
    }
}

#[track_caller]
fn check_latent_range(index: &LatentIndex, latents: &Range<usize>, what: &str) {
    assert!(
        latents.start <= latents.end && latents.end <= index.cols(),
        "{what}: latents {latents:?} outside 0..{}",
        index.cols()
    );
}

/// `g[j - latents.start, :] += alpha values[e] x[b, :]` for every entry `e = (b, j)` of the
/// indexed batch with `j` in `latents`: the rows `latents` of the `N x d` gradient
/// `alpha V^T X`, where `V` is the sparse batch with `values` in place of its own
/// (aligned with the entries of the [`SparseRows`] that `index` was built from).
///
/// `dW_dec`: `values` the activations (`codes.values()`), `x = dout`. `dW_enc^T`: `values`
/// the latent gradients, `x` the encoder's input rows. Pass `latents = 0..N` and all of
/// `g`, or give each thread a range and its rows (see the module documentation). Each
/// row of `g` receives its entries in increasing row order.
///
/// # Panics
/// If `latents` is not within `0..index.cols()`, `values.len() != index.nnz()`,
/// `x` is too short for `x_layout`, `x_layout.rows != index.source_rows()`,
/// `g` is too short for `g_layout`, `g_layout.rows != latents.len()`, or
/// `g_layout.cols != x_layout.cols`.
#[allow(clippy::too_many_arguments)]
pub fn scatter_outer_add(
    index: &LatentIndex,
    values: &[f32],
    x: &[f32],
    x_layout: Layout,
    alpha: f32,
    latents: Range<usize>,
    g: &mut [f32],
    g_layout: Layout,
) {
    check_latent_range(index, &latents, "scatter_outer_add");
    assert_eq!(
        values.len(),
        index.nnz(),
        "scatter_outer_add: values length != entries"
    );
    x_layout.check(x.len(), "scatter_outer_add: x");
    assert_eq!(
        x_layout.rows,
        index.source_rows(),
        "scatter_outer_add: x rows != code rows"
    );
    g_layout.check(g.len(), "scatter_outer_add: g");
    assert_eq!(
        g_layout.rows,
        latents.len(),
        "scatter_outer_add: g rows != latents in the range"
    );
    assert_eq!(
        g_layout.cols, x_layout.cols,
        "scatter_outer_add: g cols != x cols"
    );
    if g_layout.is_empty() {
        return;
    }
    dispatch(ScatterOuterAdd {
        index,
        values,
        x,
        x_layout,
        alpha,
        latents,
        g,
        g_layout,
    });
}

/// `out[j - latents.start] += alpha sum_{e of latent j} values[e]` for `j` in `latents`,
/// in increasing row order (the encoder bias's gradient from the latent gradients).
/// A scalar loop: one addition per entry.
///
/// # Panics
/// If `latents` is not within `0..index.cols()`, `values.len() != index.nnz()`, or
/// `out.len() != latents.len()`.
pub fn sum_by_latent(
    index: &LatentIndex,
    values: &[f32],
    alpha: f32,
    latents: Range<usize>,
    out: &mut [f32],
) {
    check_latent_range(index, &latents, "sum_by_latent");
    assert_eq!(
        values.len(),
        index.nnz(),
        "sum_by_latent: values length != entries"
    );
    assert_eq!(
        out.len(),
        latents.len(),
        "sum_by_latent: out length != latents in the range"
    );
    for (o, j) in out.iter_mut().zip(latents) {
        let (_, entries) = index.latent(j);
        let sum: f32 = entries.iter().map(|&e| values[e as usize]).sum();
        *o += alpha * sum;
    }
}

/// Scalar references for this module's kernels, accumulated in f64 and walking the rows
/// of the [`SparseRows`] directly.
pub mod reference {
    use super::*;

    /// Reference for [`super::sparse_times_dense`].
    pub fn sparse_times_dense(
        codes: &SparseRows,
        w: &[f32],
        w_layout: Layout,
        bias: Option<&[f32]>,
        out: &mut [f32],
        out_layout: Layout,
    ) {
        for b in 0..out_layout.rows {
            let (indices, values) = codes.row(b);
            for c in 0..out_layout.cols {
                let mut acc = bias.map_or(0.0, |bias| f64::from(bias[c]));
                for (&j, &v) in indices.iter().zip(values) {
                    let wv = w[j as usize * w_layout.row_stride + c];
                    acc += f64::from(v) * f64::from(wv);
                }
                out[b * out_layout.row_stride + c] = acc as f32;
            }
        }
    }

    /// Reference for [`super::dots_at_entries`].
    pub fn dots_at_entries(
        codes: &SparseRows,
        dout: &[f32],
        dout_layout: Layout,
        w: &[f32],
        w_layout: Layout,
        grads: &mut [f32],
    ) {
        for b in 0..dout_layout.rows {
            for e in codes.row_range(b) {
                let j = codes.indices()[e] as usize;
                grads[e] = (0..dout_layout.cols)
                    .map(|c| {
                        f64::from(dout[b * dout_layout.row_stride + c])
                            * f64::from(w[j * w_layout.row_stride + c])
                    })
                    .sum::<f64>() as f32;
            }
        }
    }

    /// Reference for [`super::scatter_outer_add`], from the [`SparseRows`] itself.
    #[allow(clippy::too_many_arguments)]
    pub fn scatter_outer_add(
        codes: &SparseRows,
        values: &[f32],
        x: &[f32],
        x_layout: Layout,
        alpha: f32,
        latents: Range<usize>,
        g: &mut [f32],
        g_layout: Layout,
    ) {
        let mut sums = vec![0.0f64; latents.len() * g_layout.cols];
        for b in 0..codes.rows() {
            for e in codes.row_range(b) {
                let j = codes.indices()[e] as usize;
                if !latents.contains(&j) {
                    continue;
                }
                let s = f64::from(alpha) * f64::from(values[e]);
                for c in 0..g_layout.cols {
                    sums[(j - latents.start) * g_layout.cols + c] +=
                        s * f64::from(x[b * x_layout.row_stride + c]);
                }
            }
        }
        for r in 0..latents.len() {
            for c in 0..g_layout.cols {
                let k = r * g_layout.row_stride + c;
                g[k] = (f64::from(g[k]) + sums[r * g_layout.cols + c]) as f32;
            }
        }
    }

    /// Reference for [`super::sum_by_latent`], from the [`SparseRows`] itself.
    pub fn sum_by_latent(
        codes: &SparseRows,
        values: &[f32],
        alpha: f32,
        latents: Range<usize>,
        out: &mut [f32],
    ) {
        let mut sums = vec![0.0f64; latents.len()];
        for (&j, &v) in codes.indices().iter().zip(values) {
            let j = j as usize;
            if latents.contains(&j) {
                sums[j - latents.start] += f64::from(v);
            }
        }
        for (o, s) in out.iter_mut().zip(sums) {
            *o = (f64::from(*o) + f64::from(alpha) * s) as f32;
        }
    }
}
