//! Batch gather: selected rows of a u8 matrix (a memory-mapped image file) converted to
//! scaled f32 rows of a contiguous batch buffer, in one pass.

use crate::isa::dispatch;
use pulp::{Simd, WithSimd};

struct GatherU8<'a> {
    source: &'a [u8],
    row_len: usize,
    rows: &'a [usize],
    scale: f32,
    out: &'a mut [f32],
}

impl WithSimd for GatherU8<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        // pulp has no u8 -> f32 conversion; this loop runs inside the dispatched
        // function, compiled for the chosen instruction set, where LLVM widens it
        // into vector conversions itself.
        for (out_row, &row) in self.out.chunks_exact_mut(self.row_len).zip(self.rows) {
            let start = row * self.row_len;
            let source_row = &self.source[start..start + self.row_len];
            for (o, &b) in out_row.iter_mut().zip(source_row) {
                *o = f32::from(b) * self.scale;
            }
        }
    }
}

/// `out[k * row_len + j] = source[rows[k] * row_len + j] as f32 * scale` for every `k` in
/// `rows` and `j < row_len`: rows of `source` picked in the order `rows` gives.
///
/// # Panics
/// If `out.len() != rows.len() * row_len`, or a row index points past the end of `source`.
pub fn gather_u8_rows(source: &[u8], row_len: usize, rows: &[usize], scale: f32, out: &mut [f32]) {
    assert_eq!(
        Some(out.len()),
        rows.len().checked_mul(row_len),
        "gather_u8_rows: out length != rows * row_len"
    );
    if row_len == 0 {
        return;
    }
    let available = source.len() / row_len;
    if let Some(&bad) = rows.iter().find(|&&r| r >= available) {
        panic!("gather_u8_rows: row {bad} out of range for {available} rows");
    }
    dispatch(GatherU8 {
        source,
        row_len,
        rows,
        scale,
        out,
    });
}

/// Scalar references for this module's kernels.
pub mod reference {
    /// Reference for [`super::gather_u8_rows`].
    pub fn gather_u8_rows(
        source: &[u8],
        row_len: usize,
        rows: &[usize],
        scale: f32,
        out: &mut [f32],
    ) {
        for (k, &row) in rows.iter().enumerate() {
            for j in 0..row_len {
                out[k * row_len + j] = f32::from(source[row * row_len + j]) * scale;
            }
        }
    }
}
