//! The sparse batch containers: filling, reading, joining, counting, and the index of
//! the entries by latent against a brute-force grouping.

use crate::sae_data::*;
use kernels::sparse_rows::{LatentIndex, SparseRows};

#[test]
fn rows_are_filled_and_read_back() {
    let mut codes = SparseRows::with_capacity(10, 4, 8);
    codes.push_row(&[1, 4, 9], &[0.5, 1.5, 2.5]);
    codes.end_row();
    codes.push(0, -1.0);
    codes.push(7, 3.0);
    codes.end_row();
    assert_eq!(codes.rows(), 3);
    assert_eq!(codes.nnz(), 5);
    assert_eq!(codes.offsets(), &[0, 3, 3, 5]);
    assert_eq!(codes.row(0), (&[1u32, 4, 9][..], &[0.5f32, 1.5, 2.5][..]));
    assert_eq!(codes.row(1), (&[][..], &[][..]));
    assert_eq!(codes.row_range(2), 3..5);
    codes.values_mut()[3] = 4.0;
    assert_eq!(codes.values(), &[0.5, 1.5, 2.5, 4.0, 3.0]);
    assert_eq!(codes.indices(), &[1, 4, 9, 0, 7]);

    let mut counts = vec![0u32; 10];
    codes.count_latents(&mut counts);
    codes.count_latents(&mut counts);
    assert_eq!(counts, [2, 2, 0, 0, 2, 0, 0, 2, 0, 2]);

    let mut joined = SparseRows::new(10);
    joined.push_row(&[2], &[1.0]);
    joined.append(&codes);
    assert_eq!(joined.rows(), 4);
    assert_eq!(joined.offsets(), &[0, 1, 4, 4, 6]);
    assert_eq!(joined.row(3), codes.row(2));

    codes.clear(3);
    assert_eq!((codes.rows(), codes.nnz(), codes.cols()), (0, 0, 3));
}

#[test]
#[should_panic(expected = "indices must increase")]
fn a_row_rejects_a_repeated_index() {
    SparseRows::new(10).push_row(&[3, 3], &[1.0, 2.0]);
}

#[test]
#[should_panic(expected = "out of range")]
fn a_row_rejects_an_index_past_cols() {
    SparseRows::new(10).push(10, 1.0);
}

#[test]
fn latent_index_groups_entries_by_latent_in_row_order() {
    let mut index = LatentIndex::new();
    for (rows, cols, per_row, seed) in [(0, 5, 2, 1), (7, 1, 1, 2), (9, 40, 6, 3), (30, 300, 32, 4)]
    {
        let codes = sparse_batch(rows, cols, per_row, seed, |s| s.gaussian());
        index.rebuild(&codes);
        assert_eq!(
            (index.cols(), index.source_rows(), index.nnz()),
            (cols, rows, codes.nnz())
        );
        let mut touched = Vec::new();
        for j in 0..cols {
            let mut want_rows = Vec::new();
            let mut want_entries = Vec::new();
            for b in 0..rows {
                for e in codes.row_range(b) {
                    if codes.indices()[e] as usize == j {
                        want_rows.push(b as u32);
                        want_entries.push(e as u32);
                    }
                }
            }
            if !want_rows.is_empty() {
                touched.push(j);
            }
            assert_eq!(
                index.latent(j),
                (&want_rows[..], &want_entries[..]),
                "latent {j}"
            );
        }
        assert_eq!(index.touched().collect::<Vec<_>>(), touched);
        assert_eq!(index.entries_in(0..cols), codes.nnz());
        assert_eq!(index, LatentIndex::of(&codes));
    }
}
