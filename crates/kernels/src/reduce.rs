//! Reductions and axpy-style updates: column sums (bias gradients), sums, `y += alpha x`.

use crate::isa::dispatch;
use crate::layout::Layout;
use pulp::{Simd, WithSimd};

struct ColumnSums<'a> {
    layout: Layout,
    matrix: &'a [f32],
    alpha: f32,
    beta: f32,
    out: &'a mut [f32],
}

impl WithSimd for ColumnSums<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            layout,
            matrix,
            alpha,
            beta,
            out,
        } = self;
        if beta == 0.0 {
            out.fill(0.0);
        } else if beta != 1.0 {
            let beta = simd.splat_f32s(beta);
            let (head, tail) = S::as_mut_simd_f32s(out);
            for v in head {
                *v = simd.mul_f32s(*v, beta);
            }
            if !tail.is_empty() {
                let v = simd.partial_load_f32s(tail);
                simd.partial_store_f32s(tail, simd.mul_f32s(v, beta));
            }
        }
        if layout.cols == 0 {
            return;
        }
        let alpha_v = simd.splat_f32s(alpha);
        let (out_head, out_tail) = S::as_mut_simd_f32s(out);
        // Rows in groups: each register of `out` is loaded once, takes the group's rows
        // one after another, and is stored once. Added row by row, `out` made a chain
        // through memory at every row (a store, then its reload), which bounded a
        // batch of 32 narrow rows by latency. The same FMA on each element, in the same
        // order of rows, so the same bits.
        let whole_groups = layout.rows / GROUP_ROWS * GROUP_ROWS;
        for first in (0..whole_groups).step_by(GROUP_ROWS) {
            let rows: [(&[S::f32s], &[f32]); GROUP_ROWS] =
                core::array::from_fn(|r| S::as_simd_f32s(&matrix[layout.row(first + r)]));
            let width = out_head.len();
            let heads: [&[S::f32s]; GROUP_ROWS] = core::array::from_fn(|r| &rows[r].0[..width]);
            for (v, o) in out_head.iter_mut().enumerate() {
                let mut sum = *o;
                for head in &heads {
                    sum = simd.mul_add_f32s(alpha_v, head[v], sum);
                }
                *o = sum;
            }
            if !out_tail.is_empty() {
                let mut sum = simd.partial_load_f32s(out_tail);
                for (_, tail) in &rows {
                    sum = simd.mul_add_f32s(alpha_v, simd.partial_load_f32s(tail), sum);
                }
                simd.partial_store_f32s(out_tail, sum);
            }
        }
        for i in whole_groups..layout.rows {
            let (row_head, row_tail) = S::as_simd_f32s(&matrix[layout.row(i)]);
            for (o, &r) in out_head.iter_mut().zip(row_head) {
                *o = simd.mul_add_f32s(alpha_v, r, *o);
            }
            if !out_tail.is_empty() {
                let r = simd.partial_load_f32s(row_tail);
                let o = simd.partial_load_f32s(out_tail);
                simd.partial_store_f32s(out_tail, simd.mul_add_f32s(alpha_v, r, o));
            }
        }
    }
}

/// Rows [`column_sums`] adds to `out` at a time.
const GROUP_ROWS: usize = 8;

/// `out[j] = beta * out[j] + alpha * sum_i matrix[i, j]`. With `beta == 0`, `out` is not read.
///
/// With `alpha = -lr, beta = 1` this is the SGD step of a bias from the layer's `dZ`.
///
/// # Panics
/// If `out.len() != layout.cols` or `matrix` is too short for `layout`.
pub fn column_sums(layout: Layout, matrix: &[f32], alpha: f32, beta: f32, out: &mut [f32]) {
    layout.check(matrix.len(), "column_sums: matrix");
    assert_eq!(out.len(), layout.cols, "column_sums: out length != cols");
    dispatch(ColumnSums {
        layout,
        matrix,
        alpha,
        beta,
        out,
    });
}

struct Sum<'a> {
    x: &'a [f32],
}

impl WithSimd for Sum<'_> {
    type Output = f64;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f64 {
        // Blocks keep the f32 partial sums short; blocks are added in f64.
        const BLOCK: usize = 1024;
        let mut total = 0.0f64;
        for block in self.x.chunks(BLOCK) {
            let (head, tail) = S::as_simd_f32s(block);
            let mut acc = [simd.splat_f32s(0.0); 4];
            let mut quads = head.chunks_exact(4);
            for quad in &mut quads {
                for (a, &v) in acc.iter_mut().zip(quad) {
                    *a = simd.add_f32s(*a, v);
                }
            }
            for &v in quads.remainder() {
                acc[0] = simd.add_f32s(acc[0], v);
            }
            acc[0] = simd.add_f32s(acc[0], simd.partial_load_f32s(tail));
            let pair = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
            total += f64::from(simd.reduce_sum_f32s(pair));
        }
        total
    }
}

/// `sum_i x[i]`, accumulated in f32 over blocks of 1024 and in f64 across blocks.
pub fn sum(x: &[f32]) -> f64 {
    dispatch(Sum { x })
}

struct ScaledAdd<'a> {
    alpha: f32,
    x: &'a [f32],
    y: &'a mut [f32],
}

impl WithSimd for ScaledAdd<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let alpha = simd.splat_f32s(self.alpha);
        let (x_head, x_tail) = S::as_simd_f32s(self.x);
        let (y_head, y_tail) = S::as_mut_simd_f32s(self.y);
        for (y, &x) in y_head.iter_mut().zip(x_head) {
            *y = simd.mul_add_f32s(alpha, x, *y);
        }
        if !y_tail.is_empty() {
            let y = simd.partial_load_f32s(y_tail);
            let x = simd.partial_load_f32s(x_tail);
            simd.partial_store_f32s(y_tail, simd.mul_add_f32s(alpha, x, y));
        }
    }
}

/// `y[i] += alpha * x[i]` (the plain SGD step with `alpha = -lr`).
///
/// # Panics
/// If `x` and `y` differ in length.
pub fn scaled_add(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "scaled_add: lengths differ");
    dispatch(ScaledAdd { alpha, x, y });
}

/// Scalar references for this module's kernels.
pub mod reference {
    use super::*;

    /// Reference for [`super::column_sums`], accumulated in f64.
    pub fn column_sums(layout: Layout, matrix: &[f32], alpha: f32, beta: f32, out: &mut [f32]) {
        for (j, o) in out.iter_mut().enumerate() {
            let s: f64 = (0..layout.rows)
                .map(|i| f64::from(matrix[i * layout.row_stride + j]))
                .sum();
            let prior = if beta == 0.0 {
                0.0
            } else {
                f64::from(beta) * f64::from(*o)
            };
            *o = (prior + f64::from(alpha) * s) as f32;
        }
    }

    /// Reference for [`super::sum`], accumulated in f64.
    pub fn sum(x: &[f32]) -> f64 {
        x.iter().map(|&v| f64::from(v)).sum()
    }

    /// Reference for [`super::scaled_add`].
    pub fn scaled_add(alpha: f32, x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = alpha.mul_add(x, *y);
        }
    }
}
