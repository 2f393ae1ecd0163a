//! Training sets larger than memory: the order that reads them by windows of blocks, and
//! the advice that lets the kernel drop what has been read. Its own test binary, so that
//! the resident-memory test runs in a process with nothing else going on.

use nn::dataset::{shuffle_block_bytes, ReadPlan, LARGE_FOLIO_BYTES};
use nn::source::Residency;
use nn::Dataset;
use std::collections::HashSet;
use std::sync::Mutex;

/// Held by each test, so that no other test allocates while resident memory is measured.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `rows` f32 rows of `features` values, each value naming its row and column.
fn npy_rows(dir: &std::path::Path, rows: usize, features: usize) -> Dataset {
    let values: Vec<f32> = (0..rows * features).map(|i| i as f32).collect();
    let path = dir.join("rows.npy");
    std::fs::write(&path, nn::npy::encode_f32(&[rows, features], &values)).unwrap();
    Dataset::open(&path, None).unwrap()
}

#[test]
fn a_set_that_fits_in_its_window_is_shuffled_whole() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // 300 u8 rows of 1000 bytes: 300 kB, within a 1 MiB window.
    let data = Dataset::from_u8(vec![7; 300 * 1000], 1000);
    let (mut whole, mut windowed, mut plan) = (Vec::new(), Vec::new(), ReadPlan::default());
    for epoch in 1..4 {
        data.shuffled_order(42, epoch, &mut whole);
        data.window_shuffled_order(42, epoch, 1 << 20, &mut windowed, &mut plan);
        assert_eq!(whole, windowed, "epoch {epoch}");
        assert_eq!(plan.windows(), 0);
    }
}

/// Checks `train`'s shuffled and sequential orders by windows of `window_bytes`, for a
/// file whose samples start `header` bytes in and take `row_bytes` each.
fn check_windows(train: &Dataset, header: usize, row_bytes: usize, window_bytes: usize) {
    let block_bytes = shuffle_block_bytes(window_bytes);
    let blocks_per_window = window_bytes / block_bytes;
    // The block of the file a sample belongs to: where its first byte lies.
    let cell = |row: usize| (header + row * row_bytes) / block_bytes;
    let (mut order, mut plan) = (Vec::new(), ReadPlan::default());
    train.window_shuffled_order(3, 1, window_bytes, &mut order, &mut plan);

    let rows = train.offset()..train.offset() + train.len();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, rows.clone().collect::<Vec<_>>(), "a permutation");
    let first_cell = cell(train.offset());
    let cells = cell(train.offset() + train.len() - 1) - first_cell + 1;
    assert_eq!(plan.windows(), cells.div_ceil(blocks_per_window));
    let mut cells_seen = HashSet::new();
    for w in 0..plan.windows() {
        let blocks = plan.blocks(w);
        assert!(
            blocks.len() == blocks_per_window || w == plan.windows() - 1,
            "window {w}"
        );
        assert!(
            blocks.windows(2).all(|b| b[0].end <= b[1].start),
            "file order"
        );
        let mut in_blocks: Vec<usize> = blocks.iter().flat_map(|b| b.clone()).collect();
        let mut in_window = order[plan.positions(w)].to_vec();
        in_blocks.sort_unstable();
        in_window.sort_unstable();
        assert_eq!(in_window, in_blocks, "window {w} reads exactly its blocks");
        for b in blocks {
            // Every sample starting in a cell of the file, and no other.
            let c = cell(b.start);
            assert!(b.clone().all(|r| cell(r) == c), "block {b:?} spans cells");
            assert!(b.start == train.offset() || cell(b.start - 1) < c, "{b:?}");
            assert!(cells_seen.insert(c), "block {b:?} read twice");
            assert_eq!(plan.window_of(plan.positions(w).start), w);
        }
    }
    // Rows are shuffled within a window, not read block after block.
    let first = &order[plan.positions(0)];
    assert!(first.windows(2).filter(|p| p[1] == p[0] + 1).count() < first.len() / 4);
    // Blocks come from all over the file: the first window is not the first blocks.
    let (mut sequential, mut in_file_order) = (Vec::new(), ReadPlan::default());
    train.window_sequential_order(window_bytes, &mut sequential, &mut in_file_order);
    assert_ne!(plan.blocks(0), in_file_order.blocks(0));

    let (mut again, mut plan_again) = (Vec::new(), ReadPlan::default());
    train.window_shuffled_order(3, 1, window_bytes, &mut again, &mut plan_again);
    assert_eq!(
        (&order, &plan),
        (&again, &plan_again),
        "same seed and epoch"
    );
    train.window_shuffled_order(3, 2, window_bytes, &mut again, &mut plan_again);
    assert_ne!(order, again, "each epoch reshuffles");
    assert_ne!(plan, plan_again, "and reorders the blocks");

    train.window_sequential_order(window_bytes, &mut again, &mut plan_again);
    assert_eq!(again, rows.collect::<Vec<_>>());
    assert_eq!(plan_again.windows(), plan.windows());
    let mut position = 0;
    for w in 0..plan_again.windows() {
        let rows: usize = plan_again.blocks(w).iter().map(|b| b.len()).sum();
        assert_eq!(plan_again.positions(w), position..position + rows);
        assert_eq!(plan_again.blocks(w)[0].start, train.offset() + position);
        position += rows;
    }
    assert_eq!(position, train.len());
}

#[test]
fn a_larger_set_is_shuffled_within_windows_of_whole_aligned_blocks() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Rows of 64 KiB, 32 to a block of 2 MiB; and rows of 12 000 bytes, which cross
    // block boundaries, so that blocks differ in length. Both views start past the
    // file's first row and end before its last.
    for (features, rows, window_bytes) in [
        (16 * 1024, 1000, 5 * LARGE_FOLIO_BYTES + 1000),
        (3000, 4000, 3 * LARGE_FOLIO_BYTES),
        (3000, 6000, 32 * LARGE_FOLIO_BYTES),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = npy_rows(dir.path(), rows, features);
        let header = std::fs::metadata(dir.path().join("rows.npy"))
            .unwrap()
            .len() as usize
            - rows * features * 4;
        let (rest, _) = data.split_tail(9).unwrap();
        let (_, train) = rest.split_tail(rest.len() - 7).unwrap();
        assert_eq!(train.offset(), 7);
        check_windows(&train, header, features * 4, window_bytes);
    }
    assert_eq!(shuffle_block_bytes(1 << 20), LARGE_FOLIO_BYTES);
    assert_eq!(shuffle_block_bytes(64 << 20), 2 * LARGE_FOLIO_BYTES);
    assert_eq!(shuffle_block_bytes(256 << 20), 4 * LARGE_FOLIO_BYTES);
    assert_eq!(shuffle_block_bytes(1 << 40), 4 * LARGE_FOLIO_BYTES);
}

/// This process's resident memory, in bytes.
fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[test]
fn samples_let_go_of_leave_memory_and_read_back_the_same() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // 64 MiB of f32 rows, read whole, then let go of.
    let (rows, features) = (16 * 1024, 1024);
    let dir = tempfile::tempdir().unwrap();
    let data = npy_rows(dir.path(), rows, features);
    let mut batch = vec![0.0f32; 1024 * features];
    let checksum = |data: &Dataset, batch: &mut [f32]| {
        let mut sum = 0.0f64;
        for start in (0..rows).step_by(1024) {
            data.advise(start..start + 1024, Residency::Soon);
            data.gather_range(start..start + 1024, batch);
            sum += batch.iter().map(|&v| f64::from(v)).sum::<f64>();
        }
        sum
    };
    let before = resident_bytes();
    let first = checksum(&data, &mut batch);
    let read = resident_bytes();
    assert!(
        read > before + (48 << 20),
        "reading 64 MiB mapped: {before} -> {read} bytes resident"
    );
    data.advise(0..rows, Residency::Done);
    let released = resident_bytes();
    assert!(
        released + (48 << 20) < read,
        "letting go of 64 MiB: {read} -> {released} bytes resident"
    );
    let n = (rows * features) as f64;
    assert_eq!(first, n * (n - 1.0) / 2.0, "the rows as written");
    assert_eq!(checksum(&data, &mut batch), first, "read back unchanged");
    // Held in memory, advice changes nothing.
    let owned = Dataset::from_f32(vec![1.5; 4 * 8], 8);
    owned.advise(0..4, Residency::Done);
    let mut out = vec![0.0; 8];
    owned.gather(&[3], &mut out);
    assert_eq!(out, vec![1.5; 8]);
}

/// The largest resident memory seen after any step.
struct ResidentPeak(usize);

impl nn::Observer for ResidentPeak {
    fn step_end(&mut self, _: &nn::StepProgress) -> nn::Control {
        self.0 = self.0.max(resident_bytes());
        nn::Control::Continue
    }
}

/// How much resident memory grows from before training, over two epochs of a small SAE
/// on 64 MiB of rows, read by windows of `window` bytes (`None`: shuffled whole).
fn growth_while_training(window: Option<usize>) -> usize {
    let (rows, features) = (16 * 1024, 1024);
    let dir = tempfile::tempdir().unwrap();
    let data = npy_rows(dir.path(), rows, features);
    let sample = {
        let mut x = vec![0.0; 256 * features];
        data.gather_range(0..256, &mut x);
        x
    };
    let mut sae = nn::sae::SaeConfig::topk(4, features);
    sae.input_scale = nn::sae::input_scale(&sample, features);
    let config = nn::config::ModelConfig::sae(features, 16, sae);
    let model = nn::Autoencoder::new_sae(config, 1, &sample).unwrap();
    let settings = nn::TrainConfig {
        epochs: 2,
        batch_size: 256,
        shuffle: true,
        shuffle_window_bytes: window,
        seed: 1,
        optimizer: nn::Optimizer::adam(1e-4),
        threads: 2,
    };
    let mut trainer = nn::Trainer::new(model, settings).unwrap();
    // The model and its buffers are a few MiB: nearly all the growth is the file.
    let before = resident_bytes();
    let mut peak = ResidentPeak(before);
    trainer.fit(&data, None, &mut peak).unwrap();
    peak.0 - before
}

#[test]
fn training_by_windows_keeps_about_one_window_of_the_file_resident() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let windowed = growth_while_training(Some(8 << 20));
    let whole = growth_while_training(None);
    // A window of 8 MiB and, for a step, the large folios the last rows of its blocks
    // reach into, plus the model's buffers (measured: 15 MiB in all; 24 MiB when the
    // blocks were not cut at folio boundaries and were let go of only at each window's
    // entry).
    assert!(windowed < 20 << 20, "grew by {windowed} bytes");
    assert!(
        whole > 48 << 20,
        "shuffled whole, grew by only {whole} bytes"
    );
}

#[test]
fn a_bad_row_past_the_first_batch_is_refused_when_its_batch_is_read() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (rows, features) = (1000, 8);
    for (bad_row, bad_value) in [
        (700, f32::NAN),
        (999, f32::INFINITY),
        (64, f32::NEG_INFINITY),
    ] {
        let mut values: Vec<f32> = (0..rows * features)
            .map(|i| ((i * 37) % 101) as f32 / 101.0)
            .collect();
        values[bad_row * features + 3] = bad_value;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.npy");
        std::fs::write(&path, nn::npy::encode_f32(&[rows, features], &values)).unwrap();
        let data = Dataset::open(&path, None).unwrap();
        let sample = &values[..64 * features];
        let mut sae = nn::sae::SaeConfig::topk(2, features);
        sae.input_scale = nn::sae::input_scale(sample, features);
        let config = nn::config::ModelConfig::sae(features, 16, sae);
        let model = nn::Autoencoder::new_sae(config, 1, sample).unwrap();
        let settings = nn::TrainConfig {
            epochs: 1,
            batch_size: 64,
            shuffle: true,
            shuffle_window_bytes: None,
            seed: 1,
            optimizer: nn::Optimizer::adam(1e-3),
            threads: 2,
        };
        let mut trainer = nn::Trainer::new(model, settings).unwrap();
        match trainer.fit(&data, None, &mut ()) {
            Err(nn::TrainError::Data(nn::DataError::NonFinite { path: named, row })) => {
                assert_eq!((named, row), (path.clone(), bad_row));
            }
            other => panic!("row {bad_row}: {other:?}"),
        }
        let untouched = trainer.model().parameters().iter().flat_map(|t| &t.values);
        assert!(untouched.clone().all(|v| v.is_finite()), "row {bad_row}");
    }
}
