//! Copying a matrix into its transpose, by 8 x 8 blocks: through registers (AVX's unpacks
//! and shuffles, on x86-v3 and on each 8-lane half of x86-v4), or element by element
//! without AVX; the ragged edges element by element. A sparse autoencoder's encoder
//! gradient is built latent by latent (`N x d`, the rows of the kept latents scattered
//! into it) and stored `d x N`, as the encoder multiplies: a copy of the whole matrix every
//! step.
//!
//! Only copies: the result holds the same bits on every instruction set.

use crate::isa::dispatch;
use crate::layout::Layout;
use pulp::{Simd, WithSimd};

/// Writes the transpose of the `from.rows x from.cols` matrix `src` into `dst`:
/// `dst[j * to_stride + i] = src[i * from.row_stride + j]`. Nothing else of `dst` is
/// written.
///
/// # Panics
/// If `src` is too short for `from`, `to_stride < from.rows`, or `dst` is too short for
/// `from.cols` rows of `to_stride`.
pub fn transpose(from: Layout, src: &[f32], to_stride: usize, dst: &mut [f32]) {
    if from.is_empty() {
        return;
    }
    assert!(
        src.len() >= from.required_len(),
        "transpose: src holds {} values, the layout needs {}",
        src.len(),
        from.required_len()
    );
    assert!(
        to_stride >= from.rows,
        "transpose: to_stride {to_stride} is less than the transpose's {} columns",
        from.rows
    );
    let to = Layout::strided(from.cols, from.rows, to_stride);
    assert!(
        dst.len() >= to.required_len(),
        "transpose: dst holds {} values, the transpose needs {}",
        dst.len(),
        to.required_len()
    );
    dispatch(Transpose {
        from,
        src,
        to_stride,
        dst,
    });
}

struct Transpose<'a> {
    from: Layout,
    src: &'a [f32],
    to_stride: usize,
    dst: &'a mut [f32],
}

impl WithSimd for Transpose<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Self {
            from,
            src,
            to_stride,
            dst,
        } = self;
        let (rows, cols, stride) = (from.rows, from.cols, from.row_stride);
        let (block_rows, block_cols) = (rows / 8 * 8, cols / 8 * 8);
        let registers = block8::fits::<S>();
        // Columns of `src` outside, sixteen at a time where they are (two blocks, a
        // whole cache line of each row of `src`): the sixteen rows of `dst` they become are
        // each written on along their length, and each line of `src` is read once. With
        // rows of blocks outside instead, the rows of `dst` a row of blocks writes lie a
        // whole `dst` row apart, the same cache set when that is a power of two, and the
        // copy ran slower than element by element.
        let mut j0 = 0;
        while j0 < block_cols {
            let width = if j0 + 16 <= block_cols { 16 } else { 8 };
            for i0 in (0..block_rows).step_by(8) {
                for j in (j0..j0 + width).step_by(8) {
                    let (from, to) = (i0 * stride + j, j * to_stride + i0);
                    if registers {
                        // SAFETY: `S` passes `block8::fits`, so the CPU runs AVX. Rows `i0..i0
                        // + 8` (`<= rows`) at columns `j..j + 8` (`<= cols`) are in `src`,
                        // which holds `from.required_len()`; rows `j..j + 8` of `dst` at
                        // columns `i0..i0 + 8` are in `dst`, which holds the transpose's
                        // required length (both checked in `transpose`); `src` and `dst`
                        // are distinct borrows.
                        unsafe {
                            block8::copy(
                                src.as_ptr().add(from),
                                stride,
                                dst.as_mut_ptr().add(to),
                                to_stride,
                            )
                        };
                    } else {
                        for r in 0..8 {
                            for c in 0..8 {
                                dst[to + c * to_stride + r] = src[from + r * stride + c];
                            }
                        }
                    }
                }
            }
            j0 += width;
        }
        // The edges: columns past the blocks in every row, then rows past the blocks.
        for i in 0..block_rows {
            for j in block_cols..cols {
                dst[j * to_stride + i] = src[i * stride + j];
            }
        }
        for i in block_rows..rows {
            for j in 0..cols {
                dst[j * to_stride + i] = src[i * stride + j];
            }
        }
    }
}

/// The element-by-element loop [`transpose`] is tested and timed against.
pub mod reference {
    use crate::layout::Layout;

    /// As [`super::transpose`], one element at a time.
    ///
    /// # Panics
    /// If an index falls outside `src` or `dst`.
    pub fn transpose(from: Layout, src: &[f32], to_stride: usize, dst: &mut [f32]) {
        for i in 0..from.rows {
            for j in 0..from.cols {
                dst[j * to_stride + i] = src[i * from.row_stride + j];
            }
        }
    }
}

/// 8 x 8 transposes in registers, where the instruction set has them: AVX's, for the
/// 8-lane registers of x86-v3 and the 8-lane halves of x86-v4's. The GEMM's transposed
/// products use them too.
pub(crate) mod block8 {
    use pulp::Simd;

    /// Whether `S`'s registers are made of 8-lane AVX halves: x86-v3's (one) and
    /// x86-v4's (two).
    #[inline(always)]
    pub(crate) fn fits<S: Simd>() -> bool {
        cfg!(target_arch = "x86_64") && (S::F32_LANES == 8 || S::F32_LANES == 16)
    }

    #[cfg(target_arch = "x86_64")]
    pub(crate) use x86::copy;

    #[cfg(not(target_arch = "x86_64"))]
    pub(crate) use elsewhere::copy;

    #[cfg(not(target_arch = "x86_64"))]
    mod elsewhere {
        //! Never called: [`super::fits`] is false on this architecture.

        pub(crate) unsafe fn copy(_: *const f32, _: usize, _: *mut f32, _: usize) {
            unreachable!("no 8 x 8 transpose on this architecture")
        }
    }

    #[cfg(target_arch = "x86_64")]
    pub(crate) mod x86 {
        use core::arch::x86_64::*;

        /// Row `i` of the result is column `i` of `r`.
        ///
        /// # Safety
        /// The CPU runs AVX.
        #[inline]
        #[target_feature(enable = "avx")]
        // The block below is redundant since Rust 1.87, which made these intrinsics safe to
        // call where AVX is enabled; `rust-version` (1.85) still needs it.
        #[allow(unused_unsafe)]
        pub(crate) unsafe fn transpose(r: [__m256; 8]) -> [__m256; 8] {
            // SAFETY: this function enables AVX, all these intrinsics need.
            unsafe {
                // Pairs of rows interleaved, then pairs of pairs, then the 128-bit halves
                // swapped.
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                [
                    _mm256_permute2f128_ps::<0x20>(s0, s4),
                    _mm256_permute2f128_ps::<0x20>(s1, s5),
                    _mm256_permute2f128_ps::<0x20>(s2, s6),
                    _mm256_permute2f128_ps::<0x20>(s3, s7),
                    _mm256_permute2f128_ps::<0x31>(s0, s4),
                    _mm256_permute2f128_ps::<0x31>(s1, s5),
                    _mm256_permute2f128_ps::<0x31>(s2, s6),
                    _mm256_permute2f128_ps::<0x31>(s3, s7),
                ]
            }
        }

        /// Writes the transpose of the 8 x 8 floats at `from` (row `i` at `from + i
        /// from_stride`) to `to` (row `i` at `to + i to_stride`).
        ///
        /// # Safety
        /// The CPU runs AVX; the 8 rows of 8 floats at either end are in bounds, and do
        /// not overlap.
        #[inline]
        #[target_feature(enable = "avx")]
        #[allow(unused_unsafe)]
        pub(crate) unsafe fn copy(
            from: *const f32,
            from_stride: usize,
            to: *mut f32,
            to_stride: usize,
        ) {
            // SAFETY: the 8 rows of 8 floats at `from` are readable (the contract).
            let rows: [__m256; 8] =
                core::array::from_fn(|i| unsafe { _mm256_loadu_ps(from.add(i * from_stride)) });
            // SAFETY: this function enables AVX.
            let columns = unsafe { transpose(rows) };
            for (i, column) in columns.into_iter().enumerate() {
                // SAFETY: the 8 rows of 8 floats at `to` are writable (the contract).
                unsafe { _mm256_storeu_ps(to.add(i * to_stride), column) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::block8;

    #[test]
    fn block8_moves_every_element_across_the_diagonal() {
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = pulp::x86::V3::try_new() {
            let rows: Vec<f32> = (0..64).map(|i| (10 * (i / 8) + i % 8) as f32).collect();
            let mut columns = vec![-1.0f32; 8 * 11];
            // SAFETY: `V3::try_new` found AVX2 on this CPU; 8 rows of 8 floats at both
            // ends, the output's 11 apart.
            simd.vectorize(|| unsafe { block8::copy(rows.as_ptr(), 8, columns.as_mut_ptr(), 11) });
            for c in 0..8 {
                let expected: Vec<f32> = (0..8).map(|r| (10 * r + c) as f32).collect();
                assert_eq!(columns[c * 11..c * 11 + 8], expected[..], "column {c}");
                assert!(columns[c * 11 + 8..(c * 11 + 11).min(88)]
                    .iter()
                    .all(|&v| v == -1.0));
            }
            assert!(block8::fits::<pulp::x86::V3>());
            assert!(block8::fits::<pulp::x86::V4>());
            return;
        }
        assert!(!block8::fits::<pulp::Scalar>());
    }
}
