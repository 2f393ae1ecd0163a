//! Keeping the rows of a row-major `N x d` decoder at unit norm: each row's norm, the
//! gradient projection that removes the component along the row, and the renormalisation
//! (SAE.md's "decoder unit norm": project, step, renormalise).
//!
//! # Range
//! Squares are summed in f32 with four accumulators. When that sum overflows, or is so
//! small that squares may have lost bits below the normal range (under 2^-100), the row
//! is summed again scaled by the power of two that brings its largest magnitude into
//! `[1, 2)`, so norms are accurate from the smallest subnormal rows to rows whose norm
//! exceeds `f32::MAX` (reported as `inf` by [`row_norms`], normalised correctly by
//! [`normalize_rows`]). NaN in a row makes that row's result unspecified.

use crate::isa::dispatch;
use crate::layout::Layout;
use pulp::{Simd, WithSimd};

/// A sum of squares at least this large (2^-100) lost nothing that matters to squares in
/// the subnormal range: each of those is off by at most 2^-150.
const SAFE_MIN_SUM_SQUARES: f32 = f32::from_bits((127 - 100) << 23);

/// The power of two that brings a positive `m` into `[1, 2)`, kept normal: `[2, 4)` for
/// `m >= 2^127`, and `2^127` (so `m` lands in `[2^-22, 2)`) for subnormal `m`.
#[inline(always)]
fn pow2_scale(m: f32) -> f32 {
    let biased = ((m.to_bits() >> 23) & 0xff) as i32;
    f32::from_bits(((254 - biased).clamp(1, 254) as u32) << 23)
}

/// `sum_i (scale * row[i])^2` in f32, four accumulators.
#[inline(always)]
fn sum_squares<S: Simd>(simd: S, row: &[f32], scale: f32) -> f32 {
    let scale = simd.splat_f32s(scale);
    let (head, tail) = S::as_simd_f32s(row);
    let mut acc = [simd.splat_f32s(0.0); 4];
    let mut quads = head.chunks_exact(4);
    for quad in &mut quads {
        for (a, &v) in acc.iter_mut().zip(quad) {
            let v = simd.mul_f32s(v, scale);
            *a = simd.mul_add_f32s(v, v, *a);
        }
    }
    for (a, &v) in acc.iter_mut().zip(quads.remainder()) {
        let v = simd.mul_f32s(v, scale);
        *a = simd.mul_add_f32s(v, v, *a);
    }
    let v = simd.mul_f32s(simd.partial_load_f32s(tail), scale);
    acc[3] = simd.mul_add_f32s(v, v, acc[3]);
    let sum = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
    simd.reduce_sum_f32s(sum)
}

/// `max_i |row[i]|`.
#[inline(always)]
fn max_abs<S: Simd>(simd: S, row: &[f32]) -> f32 {
    let (head, tail) = S::as_simd_f32s(row);
    let mut acc = simd.abs_f32s(simd.partial_load_f32s(tail));
    for &v in head {
        acc = simd.max_f32s(acc, simd.abs_f32s(v));
    }
    simd.reduce_max_f32s(acc)
}

/// `(scale, scaled)` with `||row|| = scaled / scale`, `scale` a power of two (1 unless the
/// plain sum of squares overflowed or was tiny).
#[inline(always)]
fn scaled_norm<S: Simd>(simd: S, row: &[f32]) -> (f32, f32) {
    let squares = sum_squares(simd, row, 1.0);
    if squares.is_finite() && squares >= SAFE_MIN_SUM_SQUARES {
        return (1.0, squares.sqrt());
    }
    let m = max_abs(simd, row);
    // Zero, or NaN.
    let nonzero = m > 0.0;
    if !nonzero {
        return (1.0, squares.sqrt());
    }
    let scale = pow2_scale(m);
    (scale, sum_squares(simd, row, scale).sqrt())
}

struct RowNorms<'a> {
    layout: Layout,
    w: &'a [f32],
    out: &'a mut [f32],
}

impl WithSimd for RowNorms<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        for (i, out) in self.out.iter_mut().enumerate() {
            let (scale, scaled) = scaled_norm(simd, &self.w[self.layout.row(i)]);
            *out = scaled / scale;
        }
    }
}

/// `out[j] = ||w[j, :]||` (Euclidean) for every row of `w`.
///
/// # Panics
/// If `w` is too short for `layout` or `out.len() != layout.rows`.
pub fn row_norms(layout: Layout, w: &[f32], out: &mut [f32]) {
    layout.check(w.len(), "row_norms: w");
    assert_eq!(out.len(), layout.rows, "row_norms: out length != rows");
    dispatch(RowNorms { layout, w, out });
}

struct NormalizeRows<'a> {
    layout: Layout,
    w: &'a mut [f32],
}

impl WithSimd for NormalizeRows<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        for i in 0..self.layout.rows {
            let row = &mut self.w[self.layout.row(i)];
            let (scale, scaled) = scaled_norm(simd, row);
            let nonzero = scaled > 0.0;
            if !nonzero {
                continue;
            }
            // `w / ||w|| = (w scale) / (||w|| scale)`: both sides stay in range.
            let scale = simd.splat_f32s(scale);
            let norm = simd.splat_f32s(scaled);
            let (head, tail) = S::as_mut_simd_f32s(row);
            for v in head {
                *v = simd.div_f32s(simd.mul_f32s(*v, scale), norm);
            }
            if !tail.is_empty() {
                let v = simd.partial_load_f32s(tail);
                simd.partial_store_f32s(tail, simd.div_f32s(simd.mul_f32s(v, scale), norm));
            }
        }
    }
}

/// `w[j, :] /= ||w[j, :]||` for every row, leaving a row of zeros as it is.
///
/// # Panics
/// If `w` is too short for `layout`.
pub fn normalize_rows(layout: Layout, w: &mut [f32]) {
    layout.check(w.len(), "normalize_rows: w");
    if layout.is_empty() {
        return;
    }
    dispatch(NormalizeRows { layout, w });
}

/// Two powers of two whose product brings a positive `m` into `[1, 2)`: one factor
/// cannot lift a subnormal `m` that far (`2^127` is the largest normal power).
#[inline(always)]
fn pow2_scale_pair(m: f32) -> [f32; 2] {
    let first = pow2_scale(m);
    [first, pow2_scale(m * first)]
}

/// `w * scale[0] * scale[1]`, exact.
#[inline(always)]
fn scaled<S: Simd>(simd: S, w: S::f32s, scale: [S::f32s; 2]) -> S::f32s {
    simd.mul_f32s(simd.mul_f32s(w, scale[0]), scale[1])
}

/// `(g . w', w' . w')` with `w' = w scale[0] scale[1]`, in f32, two accumulators each.
#[inline(always)]
fn dots<S: Simd>(simd: S, g: &[f32], w: &[f32], scale: [S::f32s; 2]) -> (f32, f32) {
    let zero = simd.splat_f32s(0.0);
    let (g_head, g_tail) = S::as_simd_f32s(g);
    let (w_head, w_tail) = S::as_simd_f32s(w);
    let (mut gw, mut ww) = ([zero; 2], [zero; 2]);
    let mut g_pairs = g_head.chunks_exact(2);
    let mut w_pairs = w_head.chunks_exact(2);
    for (g, w) in (&mut g_pairs).zip(&mut w_pairs) {
        for i in 0..2 {
            let w = scaled(simd, w[i], scale);
            gw[i] = simd.mul_add_f32s(g[i], w, gw[i]);
            ww[i] = simd.mul_add_f32s(w, w, ww[i]);
        }
    }
    for (&g, &w) in g_pairs.remainder().iter().zip(w_pairs.remainder()) {
        let w = scaled(simd, w, scale);
        gw[0] = simd.mul_add_f32s(g, w, gw[0]);
        ww[0] = simd.mul_add_f32s(w, w, ww[0]);
    }
    let g = simd.partial_load_f32s(g_tail);
    let w = scaled(simd, simd.partial_load_f32s(w_tail), scale);
    gw[1] = simd.mul_add_f32s(g, w, gw[1]);
    ww[1] = simd.mul_add_f32s(w, w, ww[1]);
    (
        simd.reduce_sum_f32s(simd.add_f32s(gw[0], gw[1])),
        simd.reduce_sum_f32s(simd.add_f32s(ww[0], ww[1])),
    )
}

struct RemoveParallel<'a> {
    layout: Layout,
    w: &'a [f32],
    g: &'a mut [f32],
}

impl WithSimd for RemoveParallel<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        for i in 0..self.layout.rows {
            let range = self.layout.row(i);
            let w = &self.w[range.clone()];
            let g = &mut self.g[range];
            // Scaling w first keeps `c = g.w / w.w` in range: unscaled, a tiny g against a
            // large w makes it subnormal (and a tiny w makes w.w so), losing its bits.
            let m = max_abs(simd, w);
            let nonzero = m > 0.0;
            if !nonzero {
                continue;
            }
            let [first, second] = pow2_scale_pair(m);
            let scale = [simd.splat_f32s(first), simd.splat_f32s(second)];
            let (gw, ww) = dots(simd, g, w, scale);
            // g -= (g . w / w . w) w, with w scaled throughout.
            let minus_c = simd.splat_f32s(-(gw / ww));
            let (g_head, g_tail) = S::as_mut_simd_f32s(g);
            let (w_head, w_tail) = S::as_simd_f32s(w);
            for (g, &w) in g_head.iter_mut().zip(w_head) {
                *g = simd.mul_add_f32s(minus_c, scaled(simd, w, scale), *g);
            }
            if !g_tail.is_empty() {
                let w = scaled(simd, simd.partial_load_f32s(w_tail), scale);
                let g = simd.mul_add_f32s(minus_c, w, simd.partial_load_f32s(g_tail));
                simd.partial_store_f32s(g_tail, g);
            }
        }
    }
}

/// `g[j, :] -= (g[j, :] . w[j, :] / ||w[j, :]||^2) w[j, :]` for every row: removes from the
/// decoder's gradient the component along each row, so that a small step keeps unit rows
/// at unit norm to first order. For unit rows this is `g_j -= (g_j . w_j) w_j`; rows of
/// zeros leave `g_j` as it is. Each row of `w` is first scaled by the power of two that
/// brings its largest magnitude into `[1, 2)` (exactly), so the coefficient neither
/// overflows nor underflows unless `g_j` itself is near the end of the f32 range.
///
/// # Panics
/// If `w` or `g` is too short for `layout`.
pub fn remove_parallel_component(layout: Layout, w: &[f32], g: &mut [f32]) {
    layout.check(w.len(), "remove_parallel_component: w");
    layout.check(g.len(), "remove_parallel_component: g");
    if layout.is_empty() {
        return;
    }
    dispatch(RemoveParallel { layout, w, g });
}

/// Scalar references for this module's kernels, in f64.
pub mod reference {
    use super::*;

    fn norm(row: &[f32]) -> f64 {
        // f64 holds the square of every finite f32 (and sums of them) exactly enough.
        row.iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt()
    }

    /// Reference for [`super::row_norms`].
    pub fn row_norms(layout: Layout, w: &[f32], out: &mut [f32]) {
        for (i, out) in out.iter_mut().enumerate() {
            *out = norm(&w[layout.row(i)]) as f32;
        }
    }

    /// Reference for [`super::normalize_rows`].
    pub fn normalize_rows(layout: Layout, w: &mut [f32]) {
        for i in 0..layout.rows {
            let row = &mut w[layout.row(i)];
            let n = norm(row);
            if n > 0.0 {
                for v in row {
                    *v = (f64::from(*v) / n) as f32;
                }
            }
        }
    }

    /// Reference for [`super::remove_parallel_component`].
    pub fn remove_parallel_component(layout: Layout, w: &[f32], g: &mut [f32]) {
        for i in 0..layout.rows {
            let range = layout.row(i);
            let w = &w[range.clone()];
            let g = &mut g[range];
            let ww: f64 = w.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            if ww == 0.0 {
                continue;
            }
            let gw: f64 = g
                .iter()
                .zip(w)
                .map(|(&g, &w)| f64::from(g) * f64::from(w))
                .sum();
            let c = gw / ww;
            for (g, &w) in g.iter_mut().zip(w) {
                *g = (f64::from(*g) - c * f64::from(w)) as f32;
            }
        }
    }
}
