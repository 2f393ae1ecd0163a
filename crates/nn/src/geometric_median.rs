//! The geometric median of a set of rows, by Weiszfeld's iteration: the point that
//! minimises the sum of Euclidean distances to the rows. Sparse autoencoders start their
//! decoder bias there (it is robust to the few rows of very large norm that
//! activations hold, where the mean is not).

/// Weiszfeld's iteration stops after this many steps at most.
pub const MAX_ITERATIONS: usize = 100;

/// ... or once a step moves the estimate by less than this, relative to its norm.
pub const TOLERANCE: f64 = 1e-5;

/// The geometric median of the rows of `rows` (`n x dim`), from their mean, in f64;
/// `None` for no rows.
///
/// # Panics
/// If `dim` is 0 or does not divide `rows.len()`.
pub fn geometric_median(rows: &[f32], dim: usize) -> Option<Vec<f32>> {
    assert!(
        dim > 0 && rows.len() % dim == 0,
        "geometric_median: ragged rows"
    );
    let n = rows.len() / dim;
    if n == 0 {
        return None;
    }
    let mut estimate = vec![0.0f64; dim];
    for row in rows.chunks_exact(dim) {
        for (e, &v) in estimate.iter_mut().zip(row) {
            *e += f64::from(v) / n as f64;
        }
    }
    let mut next = vec![0.0f64; dim];
    for _ in 0..MAX_ITERATIONS {
        next.fill(0.0);
        let mut weights = 0.0f64;
        for row in rows.chunks_exact(dim) {
            let distance = row
                .iter()
                .zip(&estimate)
                .map(|(&v, e)| (f64::from(v) - e).powi(2))
                .sum::<f64>()
                .sqrt();
            // A row at the estimate itself would get an infinite weight; the usual
            // guard gives it a large finite one.
            let w = 1.0 / distance.max(1e-12);
            weights += w;
            for (s, &v) in next.iter_mut().zip(row) {
                *s += w * f64::from(v);
            }
        }
        for s in &mut next {
            *s /= weights;
        }
        let moved = next
            .iter()
            .zip(&estimate)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = estimate.iter().map(|e| e * e).sum::<f64>().sqrt();
        std::mem::swap(&mut estimate, &mut next);
        if moved <= TOLERANCE * norm.max(1.0) {
            break;
        }
    }
    Some(estimate.into_iter().map(|e| e as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_dimension_gives_the_median() {
        let m = geometric_median(&[1.0, 2.0, 3.0, 100.0, 4.0], 1).unwrap();
        assert!((m[0] - 3.0).abs() < 0.05, "{m:?}");
        assert_eq!(geometric_median(&[], 3), None);
    }

    #[test]
    fn outliers_barely_move_it_where_they_drag_the_mean() {
        // Points around (1, -2) and two far outliers.
        let mut rows = Vec::new();
        for i in 0..50 {
            let t = i as f32 * 0.7;
            rows.extend_from_slice(&[1.0 + 0.1 * t.cos(), -2.0 + 0.1 * t.sin()]);
        }
        rows.extend_from_slice(&[1000.0, 1000.0, -900.0, 1200.0]);
        let m = geometric_median(&rows, 2).unwrap();
        assert!(
            (m[0] - 1.0).abs() < 0.1 && (m[1] + 2.0).abs() < 0.1,
            "{m:?}"
        );
        // Its defining property: no nearby point has a smaller sum of distances.
        let cost = |p: &[f32]| -> f64 {
            rows.chunks_exact(2)
                .map(|r| (f64::from(r[0] - p[0]).powi(2) + f64::from(r[1] - p[1]).powi(2)).sqrt())
                .sum()
        };
        for (dx, dy) in [(0.01, 0.0), (-0.01, 0.0), (0.0, 0.01), (0.0, -0.01)] {
            assert!(cost(&m) <= cost(&[m[0] + dx, m[1] + dy]) + 1e-6);
        }
    }
}
