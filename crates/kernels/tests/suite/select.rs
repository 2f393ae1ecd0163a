//! Row-wise top-k against the sorting reference, over shapes, ties and extreme values.

use kernels::select::{keep_largest_per_row, reference};
use kernels::Layout;

fn values(rows: usize, cols: usize, seed: u64, levels: u64) -> Vec<f32> {
    // A few distinct levels make ties common; a spread of magnitudes and signs.
    (0..rows * cols)
        .map(|i| {
            let h = (i as u64 + 1)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(seed)
                >> 33;
            let level = (h % levels) as f32 - (levels / 3) as f32;
            match h % 7 {
                0 => level * 1e30,
                1 => level * 1e-30,
                _ => level,
            }
        })
        .collect()
}

#[test]
fn matches_the_reference_over_shapes_ks_and_ties() {
    for &(rows, cols) in &[
        (1usize, 1usize),
        (1, 7),
        (3, 17),
        (5, 64),
        (2, 300),
        (4, 1000),
    ] {
        for k in [0, 1, 2, 3, cols / 2, cols.saturating_sub(1), cols, cols + 5] {
            for (seed, levels) in [(1, 3), (2, 11), (3, 1 << 20)] {
                let layout = Layout::contiguous(rows, cols);
                let mut got = values(rows, cols, seed, levels);
                let mut want = got.clone();
                keep_largest_per_row(layout, &mut got, k, &mut vec![0.0; cols]);
                reference::keep_largest_per_row(layout, &mut want, k);
                assert_eq!(got, want, "{rows} x {cols}, k {k}, levels {levels}");
                for row in got.chunks_exact(cols) {
                    assert!(row.iter().filter(|v| **v != 0.0).count() <= k);
                }
            }
        }
    }
}

#[test]
fn strided_rows_leave_their_padding_alone() {
    let layout = Layout::strided(3, 5, 8);
    let mut data: Vec<f32> = (0..24).map(|i| (i * 7 % 13) as f32).collect();
    let before = data.clone();
    keep_largest_per_row(layout, &mut data, 2, &mut [0.0; 5]);
    for i in 0..3 {
        assert_eq!(&data[i * 8 + 5..i * 8 + 8], &before[i * 8 + 5..i * 8 + 8]);
        assert_eq!(
            data[i * 8..i * 8 + 5].iter().filter(|v| **v != 0.0).count(),
            2
        );
    }
}

#[test]
#[should_panic(expected = "NaN")]
fn nan_is_refused() {
    let mut data = [1.0, f32::NAN, 0.5];
    keep_largest_per_row(Layout::contiguous(1, 3), &mut data, 1, &mut [0.0; 3]);
}
