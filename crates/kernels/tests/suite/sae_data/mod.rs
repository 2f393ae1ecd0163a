//! Reproducible data for the sparse-autoencoder kernels' tests and benchmarks: dense
//! fills of several magnitudes and random sparse batches, built from a seed (no RNG
//! dependency).
#![allow(dead_code)]

use kernels::sparse_rows::SparseRows;

/// A xorshift stream of uniforms in `[0, 1)`.
pub struct Stream(u64);

impl Stream {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Roughly Gaussian (a sum of four uniforms), standard deviation about 1.
    pub fn gaussian(&mut self) -> f32 {
        (self.uniform() + self.uniform() + self.uniform() + self.uniform() - 2.0) * 1.7
    }
}

/// `len` roughly Gaussian values around `mean`.
pub fn gaussian_like(len: usize, seed: u64, mean: f32) -> Vec<f32> {
    gaussian(len, seed, mean, 1.0)
}

/// `len` roughly Gaussian values around `mean`, with standard deviation about `sd`.
pub fn gaussian(len: usize, seed: u64, mean: f32, sd: f32) -> Vec<f32> {
    let mut s = Stream::new(seed);
    (0..len).map(|_| mean + sd * s.gaussian()).collect()
}

/// Magnitudes the products must survive: moderate, with exact zeros, huge (sums stay
/// finite), tiny, subnormal, all zero.
pub const MAGNITUDES: &[f32] = &[1.0, 1.0, 1e15, 1e-15, 1e-30, 1e-40, 0.0];

/// `len` values of magnitude about `scale`, a fifth of them exactly zero.
pub fn fill(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = Stream::new(seed);
    (0..len)
        .map(|_| {
            let v = s.gaussian() * scale;
            if s.uniform() < 0.2 {
                0.0
            } else {
                v
            }
        })
        .collect()
}

/// A batch of `rows` sparse rows over `cols` latents: each row keeps `per_row` distinct
/// latents (all of them if `per_row >= cols`) with values from `values`.
pub fn sparse_batch(
    rows: usize,
    cols: usize,
    per_row: usize,
    seed: u64,
    values: impl Fn(&mut Stream) -> f32,
) -> SparseRows {
    let mut s = Stream::new(seed);
    let mut out = SparseRows::new(cols);
    for _ in 0..rows {
        let mut picked: Vec<u32> = if per_row >= cols {
            (0..cols as u32).collect()
        } else {
            (0..per_row)
                .map(|_| (s.next_u64() % cols as u64) as u32)
                .collect()
        };
        picked.sort_unstable();
        picked.dedup();
        for j in picked {
            let v = values(&mut s);
            out.push(j, v);
        }
        out.end_row();
    }
    out
}
