//! Row-wise selection: keep the `k` largest values of each row and zero the rest (a
//! k-sparse coding layer). Ties go to the lower index, so the kept set is deterministic.
//!
//! The `k`-th largest value `t` of a row is found by introselect on a copy of the row
//! (`select_nth_unstable_by`, linear on average); then one pass keeps every value above
//! `t` and the first values equal to `t` until `k` are kept. A row with fewer than `k`
//! values keeps them all.

use crate::layout::Layout;

/// Zeroes all but the `k` largest values of each row of `values` (ties to the lower
/// index). `scratch` holds at least `layout.cols` values.
///
/// # Panics
/// If `values` or `scratch` is too short, or a value is NaN.
pub fn keep_largest_per_row(layout: Layout, values: &mut [f32], k: usize, scratch: &mut [f32]) {
    layout.check(values.len(), "keep_largest_per_row: values");
    assert!(
        scratch.len() >= layout.cols,
        "keep_largest_per_row: scratch shorter than a row"
    );
    if k >= layout.cols {
        return;
    }
    for i in 0..layout.rows {
        let row = &mut values[layout.row(i)];
        if k == 0 {
            row.fill(0.0);
            continue;
        }
        let copy = &mut scratch[..row.len()];
        copy.copy_from_slice(row);
        assert!(
            copy.iter().all(|v| !v.is_nan()),
            "keep_largest_per_row: NaN in row {i}"
        );
        // Descending: the k-th largest lands at k - 1.
        let (_, &mut threshold, _) = copy.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        let above = row.iter().filter(|&&v| v > threshold).count();
        let mut equal_kept = k - above;
        for v in row.iter_mut() {
            if *v > threshold {
                continue;
            }
            if *v == threshold && equal_kept > 0 {
                equal_kept -= 1;
                continue;
            }
            *v = 0.0;
        }
    }
}

/// Scalar references for this module's kernels.
pub mod reference {
    use crate::layout::Layout;

    /// [`super::keep_largest_per_row`] by sorting each row's indices.
    pub fn keep_largest_per_row(layout: Layout, values: &mut [f32], k: usize) {
        for i in 0..layout.rows {
            let row = &mut values[layout.row(i)];
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            for &j in order.iter().skip(k) {
                row[j] = 0.0;
            }
        }
    }
}
