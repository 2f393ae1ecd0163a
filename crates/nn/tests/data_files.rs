//! IDX files on disk: memory-mapped views, every element type, the gzip cache, and the
//! refusal of broken or lying files with an error that names the file.

use flate2::write::GzEncoder;
use flate2::Compression;
use nn::dataset::{open_labels, Dataset};
use nn::error::{DataError, IdxErrorKind};
use nn::idx::{encode, ElementType, IdxFile};
use std::io::Write;
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn kind(err: nn::IdxError) -> IdxErrorKind {
    err.kind
}

#[test]
fn u8_data_is_viewed_in_place_through_the_map() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..24).collect();
    let path = write(
        dir.path(),
        "x.idx",
        &encode(ElementType::U8, &[2, 3, 4], &data),
    );
    let file = IdxFile::open(&path).unwrap();
    assert_eq!(file.dims(), &[2, 3, 4]);
    assert_eq!(file.as_u8().unwrap(), &data[..]);
    assert!(file.as_i8().is_none());
    // The view points into the mapping, not into a copy of the file read into memory.
    let view = file.as_u8().unwrap().as_ptr() as usize;
    let whole = file.data_bytes().as_ptr() as usize;
    assert_eq!(view, whole);
}

#[test]
fn every_element_type_converts_from_big_endian() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(ElementType, Vec<u8>, Vec<f32>)> = vec![
        (ElementType::U8, vec![0, 255], vec![0.0, 255.0]),
        (ElementType::I8, vec![0x80, 0x7f], vec![-128.0, 127.0]),
        (
            ElementType::I16,
            [-300i16, 7].iter().flat_map(|v| v.to_be_bytes()).collect(),
            vec![-300.0, 7.0],
        ),
        (
            ElementType::I32,
            [-70000i32, 5]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect(),
            vec![-70000.0, 5.0],
        ),
        (
            ElementType::F32,
            [1.5f32, -0.25]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect(),
            vec![1.5, -0.25],
        ),
        (
            ElementType::F64,
            [2.5f64, -8.0]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect(),
            vec![2.5, -8.0],
        ),
    ];
    for (t, bytes, want) in cases {
        let path = write(dir.path(), t.name(), &encode(t, &[2], &bytes));
        let file = IdxFile::open(&path).unwrap();
        assert_eq!(file.element_type(), t);
        assert_eq!(file.to_f32(), want, "{}", t.name());
    }
    // A rank-4 f32 file as samples: features are the product of the inner dimensions.
    let values: Vec<f32> = (0..2 * 2 * 3 * 2).map(|v| v as f32).collect();
    let path = write(
        dir.path(),
        "rank4",
        &nn::idx::encode_f32(&[2, 2, 3, 2], &values),
    );
    let data = Dataset::open(&path, None).unwrap();
    assert_eq!((data.len(), data.features()), (2, 12));
    let mut out = vec![0.0; 12];
    data.gather(&[1], &mut out);
    assert_eq!(out, values[12..]);
}

#[test]
fn broken_files_give_distinct_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = encode(ElementType::U8, &[4, 2, 2], &[9; 16]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("short-header", good[..6].to_vec()),
        ("truncated-data", good[..good.len() - 3].to_vec()),
        ("trailing", [good.clone(), vec![0, 0]].concat()),
        ("magic", [vec![7, 0], good[2..].to_vec()].concat()),
        ("type", [vec![0, 0, 0x0A], good[3..].to_vec()].concat()),
        ("rank0", vec![0, 0, 8, 0]),
        (
            "overflow",
            encode(
                ElementType::F64,
                &[u32::MAX as usize, u32::MAX as usize, u32::MAX as usize],
                &[],
            ),
        ),
        (
            "terabytes",
            encode(ElementType::U8, &[1 << 20, 1 << 20, 1 << 10], &[1, 2, 3]),
        ),
    ];
    for (name, bytes) in &cases {
        let path = write(dir.path(), name, bytes);
        let err = IdxFile::open(&path).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(&path.display().to_string()),
            "{name}: {message}"
        );
        let k = kind(err);
        let ok = match *name {
            "empty" | "short-header" => matches!(k, IdxErrorKind::TruncatedHeader { .. }),
            "truncated-data" | "trailing" | "terabytes" => {
                matches!(k, IdxErrorKind::LengthMismatch { .. })
            }
            "magic" => matches!(k, IdxErrorKind::BadMagic { .. }),
            "type" => matches!(k, IdxErrorKind::UnknownType { code: 0x0A }),
            "rank0" => matches!(k, IdxErrorKind::ZeroRank),
            "overflow" => matches!(k, IdxErrorKind::DimensionOverflow { .. }),
            _ => unreachable!(),
        };
        assert!(ok, "{name}: {message}");
    }
    let err = IdxFile::open(dir.path()).unwrap_err();
    assert!(matches!(err.kind, IdxErrorKind::NotAFile), "{err}");
    let err = IdxFile::open(&dir.path().join("absent")).unwrap_err();
    assert!(matches!(err.kind, IdxErrorKind::Io(_)), "{err}");
}

#[test]
fn gzipped_files_are_decompressed_once_into_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let raw = encode(ElementType::U8, &[3, 2, 2], &(0..12).collect::<Vec<u8>>());
    let source = write(dir.path(), "images.gz", &gzip(&raw));
    let first = IdxFile::open_with_cache(&source, Some(&cache)).unwrap();
    assert_eq!(first.as_u8().unwrap(), &raw[16..]);
    let cached: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let stamp = std::fs::metadata(&cached[0]).unwrap().modified().unwrap();
    let again = IdxFile::open_with_cache(&source, Some(&cache)).unwrap();
    assert_eq!(again.path(), first.path());
    assert_eq!(
        std::fs::metadata(&cached[0]).unwrap().modified().unwrap(),
        stamp
    );
    // The source is never modified.
    assert_eq!(std::fs::read(&source).unwrap(), gzip(&raw));

    // A changed source gets a fresh copy.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let raw2 = encode(ElementType::U8, &[1, 2, 2], &[5, 6, 7, 8]);
    std::fs::write(&source, gzip(&raw2)).unwrap();
    let fresh = IdxFile::open_with_cache(&source, Some(&cache)).unwrap();
    assert_eq!(fresh.as_u8().unwrap(), &[5, 6, 7, 8]);
}

#[test]
fn threads_decompressing_the_same_file_at_once_all_get_the_whole_copy() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // Large enough that the decompressions overlap.
    let pixels: Vec<u8> = (0..4_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let raw = encode(ElementType::U8, &[1000, 4000], &pixels);
    let source = write(dir.path(), "images.gz", &gzip(&raw));
    let threads = 6;
    let start = std::sync::Barrier::new(threads);
    let opened: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    IdxFile::open_with_cache(&source, Some(&cache))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for file in opened {
        let file = file.expect("every thread opens the cached copy");
        assert!(file.as_u8().unwrap() == &pixels[..]);
    }
    // One finished copy, and no partial file left behind.
    let cached: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
}

#[test]
fn corrupt_or_lying_gzip_is_an_error_and_leaves_no_cache_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let raw = encode(ElementType::U8, &[50, 4, 4], &[3; 800]);
    let gz = gzip(&raw);
    let truncated = write(dir.path(), "truncated.gz", &gz[..gz.len() / 2]);
    let mut flipped = gz.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    let corrupt = write(dir.path(), "corrupt.gz", &flipped);
    // A header that claims far more than the stream holds, and one that claims less.
    let short = write(
        dir.path(),
        "short.gz",
        &gzip(&encode(ElementType::U8, &[1 << 30, 1 << 10], &[1; 64])),
    );
    let long = write(
        dir.path(),
        "long.gz",
        &gzip(&[encode(ElementType::U8, &[2], &[1, 2]), vec![9; 1000]].concat()),
    );
    for path in [&truncated, &corrupt, &short, &long] {
        let err = IdxFile::open_with_cache(path, Some(&cache)).unwrap_err();
        assert!(
            err.to_string().starts_with(&path.display().to_string()),
            "{err}"
        );
        let ok = matches!(
            err.kind,
            IdxErrorKind::Gzip(_)
                | IdxErrorKind::LengthMismatch { .. }
                | IdxErrorKind::TrailingData { .. }
        );
        assert!(ok, "{err}");
    }
    let left: Vec<_> = std::fs::read_dir(&cache)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "cache holds {left:?}");
}

#[test]
fn labels_must_match_the_samples() {
    let dir = tempfile::tempdir().unwrap();
    let images = write(
        dir.path(),
        "images",
        &encode(ElementType::U8, &[3, 2], &[0; 6]),
    );
    let labels = write(
        dir.path(),
        "labels",
        &encode(ElementType::U8, &[4], &[0; 4]),
    );
    let samples = Dataset::open(&images, None).unwrap();
    match open_labels(&labels, None, &samples).unwrap_err() {
        DataError::CountMismatch {
            image_count: 3,
            label_count: 4,
            ..
        } => {}
        other => panic!("{other}"),
    }
    let good = write(
        dir.path(),
        "good",
        &encode(ElementType::U8, &[3], &[1, 2, 3]),
    );
    assert_eq!(open_labels(&good, None, &samples).unwrap(), vec![1, 2, 3]);
    // Rank-1 data is labels, not samples.
    assert!(matches!(
        Dataset::open(&good, None),
        Err(DataError::Shape { .. })
    ));
}

#[test]
fn split_shuffle_and_gather() {
    let bytes: Vec<u8> = (0..50).map(|i| (i * 5) as u8).collect();
    let data = Dataset::from_u8(bytes, 5);
    let (train, valid) = data.split_tail(3).unwrap();
    assert_eq!((train.len(), valid.len()), (7, 3));
    assert!(data.split_tail(10).is_err());
    let mut order = Vec::new();
    train.shuffled_order(1, 1, &mut order);
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, (0..7).collect::<Vec<_>>());
    let mut again = Vec::new();
    train.shuffled_order(1, 1, &mut again);
    assert_eq!(order, again, "same seed and epoch, same order");
    train.shuffled_order(1, 2, &mut again);
    assert_ne!(order, again, "each epoch reshuffles");
    let mut out = vec![0.0; 5];
    valid.gather(&[8], &mut out);
    let want: Vec<f32> = (40..45)
        .map(|i| (i * 5) as f32 * nn::dataset::U8_SCALE)
        .collect();
    assert_eq!(out, want);
}

/// Prefetching is a hint over every kind of storage (a mapped file, bytes in memory,
/// floats): any index, in the view or not, is accepted, nothing changes, and the rows
/// gathered afterwards are the ones stored.
#[test]
fn prefetch_accepts_any_index_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..100 * 70).map(|i| (i * 7 % 256) as u8).collect();
    let path = write(
        dir.path(),
        "x.idx",
        &encode(ElementType::U8, &[100, 70], &bytes),
    );
    let mapped = Dataset::open(&path, None).unwrap();
    let owned = Dataset::from_u8(bytes.clone(), 70);
    let floats = Dataset::from_f32(
        bytes
            .iter()
            .map(|&b| b as f32 * nn::dataset::U8_SCALE)
            .collect(),
        70,
    );
    for data in [mapped, owned, floats] {
        let (train, _) = data.split_tail(20).unwrap();
        // Indices past the view (80..) and past the data (100..) are skipped.
        train.prefetch(&[0, 79, 80, 99, 100, usize::MAX]);
        train.prefetch(&[]);
        // Column ranges reaching past the features, or empty, prefetch what exists.
        let backwards = std::ops::Range { start: 50, end: 20 };
        for columns in [10..40, 60..200, 70..90, backwards] {
            train.prefetch_columns(&[0, 79, 80, usize::MAX], columns);
        }
        let mut out = vec![0.0; 2 * 70];
        train.gather(&[79, 3], &mut out);
        let want: Vec<f32> = bytes[79 * 70..80 * 70]
            .iter()
            .chain(&bytes[3 * 70..4 * 70])
            .map(|&b| b as f32 * nn::dataset::U8_SCALE)
            .collect();
        assert_eq!(out, want);
    }
}

/// Gathering a batch by column runs, one per thread, gives the batch `gather` gives,
/// from a mapped file, bytes in memory or floats, at 1 to 3 threads; a view's bounds
/// still hold.
#[test]
fn gathering_by_column_runs_matches_whole_rows() {
    use kernels::MatMut;
    let dir = tempfile::tempdir().unwrap();
    let (samples, features) = (40, 70);
    let bytes: Vec<u8> = (0..samples * features)
        .map(|i| (i * 13 % 256) as u8)
        .collect();
    let path = write(
        dir.path(),
        "x.idx",
        &encode(ElementType::U8, &[samples, features], &bytes),
    );
    let floats: Vec<f32> = bytes
        .iter()
        .map(|&b| b as f32 * nn::dataset::U8_SCALE)
        .collect();
    let datasets = [
        Dataset::open(&path, None).unwrap(),
        Dataset::from_u8(bytes.clone(), features),
        Dataset::from_f32(floats, features),
    ];
    let rows = [27, 0, 7, 7, 29, 12];
    for data in datasets {
        let (train, _) = data.split_tail(10).unwrap();
        let mut whole = vec![0.0; rows.len() * features];
        train.gather(&rows, &mut whole);
        for count in 1..=3 {
            let threads = nn::parallel::Threads::new(count).unwrap();
            let mut runs = vec![f32::NAN; rows.len() * features];
            let x = MatMut::row_major(&mut runs, rows.len(), features).unwrap();
            threads.column_runs(x, &|columns, part| {
                train.gather_columns(&rows, columns, part)
            });
            assert_eq!(runs, whole, "{count} threads");
        }
        let outside = std::panic::catch_unwind(|| {
            let mut out = vec![0.0; features];
            let x = MatMut::row_major(&mut out, 1, features).unwrap();
            train.gather_columns(&[35], 0..features, x);
        });
        assert!(outside.is_err(), "a sample outside the view was gathered");
    }
}
