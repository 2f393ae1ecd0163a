//! Rows with a known sparse structure, for checking that a sparse autoencoder finds
//! it: each row is a sparse non-negative combination of known unit-norm features plus
//! Gaussian noise (the standard synthetic check of the SAE literature). A trained
//! decoder recovers the features when each has a decoder row (or column) close to it in
//! cosine; [`recovery`] measures that.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SuperpositionSpec {
    /// Width of a row.
    pub dim: usize,
    /// Number of true features (may exceed `dim`: superposition).
    pub features: usize,
    /// Rows to generate.
    pub rows: usize,
    /// Mean number of features active in a row (each is active independently with
    /// probability `active / features`).
    pub active: f64,
    /// Standard deviation of the Gaussian noise added to every value.
    pub noise: f32,
    /// Seeds the features, the codes and the noise.
    pub seed: u64,
}

/// Generated rows and the truth behind them.
#[derive(Clone, Debug, PartialEq)]
pub struct Superposition {
    /// The true features, `features x dim`, each of unit norm.
    pub features: Vec<f32>,
    /// The rows, `rows x dim`.
    pub rows: Vec<f32>,
    /// Each row's active features as `(feature, coefficient)`, coefficients in
    /// `(0, 1]`.
    pub codes: Vec<Vec<(usize, f32)>>,
}

/// A standard normal sample (Box-Muller).
fn normal(rng: &mut impl Rng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random::<f64>();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Rows as `spec` describes them.
///
/// # Panics
/// If `dim` or `features` is 0, or `active` is not in `[0, features]`.
pub fn superposition(spec: SuperpositionSpec) -> Superposition {
    let SuperpositionSpec {
        dim,
        features,
        rows,
        active,
        noise,
        seed,
    } = spec;
    assert!(dim > 0 && features > 0, "superposition: empty shape");
    assert!(
        (0.0..=features as f64).contains(&active),
        "superposition: {active} active of {features} features"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut truth = vec![0.0f32; features * dim];
    for feature in truth.chunks_exact_mut(dim) {
        let values: Vec<f64> = (0..dim).map(|_| normal(&mut rng)).collect();
        let norm = values
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt()
            .max(f64::MIN_POSITIVE);
        for (out, v) in feature.iter_mut().zip(values) {
            *out = (v / norm) as f32;
        }
    }
    let p = active / features as f64;
    let mut data = vec![0.0f32; rows * dim];
    let mut codes = Vec::with_capacity(rows);
    for row in data.chunks_exact_mut(dim) {
        let mut code = Vec::new();
        let mut sum = vec![0.0f64; dim];
        for (f, feature) in truth.chunks_exact(dim).enumerate() {
            if rng.random::<f64>() < p {
                let c = 1.0 - rng.random::<f32>();
                code.push((f, c));
                for (s, &v) in sum.iter_mut().zip(feature) {
                    *s += f64::from(c) * f64::from(v);
                }
            }
        }
        for (out, s) in row.iter_mut().zip(sum) {
            *out = (s + f64::from(noise) * normal(&mut rng)) as f32;
        }
        codes.push(code);
    }
    Superposition {
        features: truth,
        rows: data,
        codes,
    }
}

/// How well `learned` (`n x dim`, one candidate direction per row, e.g. a decoder's
/// rows) recovers `truth` (`m x dim`): for each true feature the largest cosine
/// similarity with any learned row, averaged over the true features. 1 is perfect.
///
/// # Panics
/// If `dim` is 0 or does not divide both lengths.
pub fn recovery(truth: &[f32], learned: &[f32], dim: usize) -> f64 {
    assert!(
        dim > 0 && truth.len() % dim == 0 && learned.len() % dim == 0,
        "recovery: ragged rows"
    );
    let norm = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let learned: Vec<(&[f32], f64)> = learned.chunks_exact(dim).map(|r| (r, norm(r))).collect();
    let count = truth.len() / dim;
    if count == 0 {
        return 0.0;
    }
    let total: f64 = truth
        .chunks_exact(dim)
        .map(|t| {
            let t_norm = norm(t);
            learned
                .iter()
                .filter(|(_, n)| *n > 0.0 && t_norm > 0.0)
                .map(|(r, n)| {
                    let dot: f64 = t
                        .iter()
                        .zip(*r)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum();
                    dot / (n * t_norm)
                })
                .fold(f64::NEG_INFINITY, f64::max)
                .max(-1.0)
        })
        .sum();
    total / count as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SuperpositionSpec {
        SuperpositionSpec {
            dim: 16,
            features: 40,
            rows: 3000,
            active: 3.0,
            noise: 0.0,
            seed: 5,
        }
    }

    #[test]
    fn rows_are_the_stated_combinations_of_unit_features() {
        let s = superposition(spec());
        let dim = 16;
        for f in s.features.chunks_exact(dim) {
            let n: f32 = f.iter().map(|v| v * v).sum();
            assert!((n - 1.0).abs() < 1e-5, "{n}");
        }
        for (row, code) in s.rows.chunks_exact(dim).zip(&s.codes) {
            for (j, &value) in row.iter().enumerate() {
                let want: f32 = code.iter().map(|&(f, c)| c * s.features[f * dim + j]).sum();
                assert!((value - want).abs() < 1e-5);
            }
            assert!(code.iter().all(|&(_, c)| c > 0.0 && c <= 1.0));
        }
        let mean_active = s.codes.iter().map(Vec::len).sum::<usize>() as f64 / s.codes.len() as f64;
        assert!((mean_active - 3.0).abs() < 0.2, "{mean_active}");
        assert_eq!(superposition(spec()), s, "same seed, same rows");
    }

    #[test]
    fn recovery_is_one_for_the_truth_and_low_for_noise() {
        let s = superposition(spec());
        assert!((recovery(&s.features, &s.features, 16) - 1.0).abs() < 1e-9);
        // Scaled and shuffled rows recover as well: cosine ignores the norm.
        let mut scaled: Vec<f32> = s.features.iter().map(|v| v * 3.0).collect();
        scaled.rotate_left(16 * 7);
        assert!((recovery(&s.features, &scaled, 16) - 1.0).abs() < 1e-6);
        let other = superposition(SuperpositionSpec { seed: 6, ..spec() });
        let chance = recovery(&s.features, &other.features, 16);
        assert!(chance < 0.8, "{chance}");
    }
}
