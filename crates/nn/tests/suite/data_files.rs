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

// ---------------------------------------------------------------------------------------
// Every format through one `open`.

use nn::error::{FileErrorKind, NpyErrorKind, SafetensorsErrorKind};
use nn::npy;
use nn::source::{Format, OpenOptions, Scaling};

/// A safetensors file from its JSON header and data, the header padded to 8 bytes as the
/// Python package pads it.
fn safetensors_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut header = header.as_bytes().to_vec();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(data);
    bytes
}

/// One tensor's header entry.
fn entry(name: &str, dtype: &str, shape: &[usize], offsets: [usize; 2]) -> String {
    format!(r#""{name}": {{"dtype": "{dtype}", "shape": {shape:?}, "data_offsets": {offsets:?}}}"#)
}

/// Rows of values that are exact in f32 and f64, and differ from row to row.
fn sample_values(rows: usize, features: usize) -> Vec<f32> {
    (0..rows * features)
        .map(|i| (i as f32 - 7.0) * 0.375)
        .collect()
}

fn le<T: Copy, const N: usize>(values: &[T], bytes: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| bytes(v)).collect()
}

/// Everything a dataset gives back: every row gathered, a shuffled batch, a range, and a
/// batch gathered by column runs.
fn read_back(data: &Dataset) -> Vec<Vec<f32>> {
    let f = data.features();
    let mut all = vec![0.0; data.len() * f];
    data.gather(&(0..data.len()).collect::<Vec<_>>(), &mut all);
    let mut picked = vec![0.0; 3 * f];
    data.gather(&[4, 0, 2], &mut picked);
    let mut range = vec![0.0; 2 * f];
    data.gather_range(1..3, &mut range);
    let mut columns = vec![0.0; 2 * 3];
    let x = kernels::MatMut::row_major(&mut columns, 2, 3).unwrap();
    data.gather_columns(&[3, 1], 1..4, x);
    data.prefetch(&[0, 4]);
    vec![all, picked, range, columns]
}

#[test]
fn every_format_gives_the_rows_an_equivalent_idx_file_gives() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (rows, shape) = (5, [5usize, 2, 3]);
    let values = sample_values(rows, 6);
    let f64s: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
    let reference = Dataset::open(
        &write(dir.path(), "ref.idx", &nn::idx::encode_f32(&shape, &values)),
        None,
    )
    .unwrap();
    let want = read_back(&reference);
    let st_f32 = safetensors_file(
        &format!("{{{}}}", entry("rows", "F32", &shape, [0, 120])),
        &le(&values, f32::to_le_bytes),
    );
    let st_f64 = safetensors_file(
        &format!(
            r#"{{"__metadata__": {{"source": "test"}}, {}, {}}}"#,
            entry("bias", "F64", &[3], [0, 24]),
            entry("rows", "F64", &shape, [24, 264])
        ),
        &[vec![0; 24], le(&f64s, f64::to_le_bytes)].concat(),
    );
    let npy_f32 = npy::encode_f32(&shape, &values);
    let cases: Vec<(&str, Vec<u8>, Format, &str, bool)> = vec![
        ("le-f4.npy", npy_f32.clone(), Format::Npy, "<f4", true),
        (
            "be-f4.npy",
            npy::encode(">f4", &shape, &le(&values, f32::to_be_bytes)),
            Format::Npy,
            ">f4",
            true,
        ),
        (
            "le-f8.npy",
            npy::encode("<f8", &shape, &le(&f64s, f64::to_le_bytes)),
            Format::Npy,
            "<f8",
            false,
        ),
        (
            "be-f8.npy",
            npy::encode(">f8", &shape, &le(&f64s, f64::to_be_bytes)),
            Format::Npy,
            ">f8",
            false,
        ),
        ("f32.safetensors", st_f32, Format::Safetensors, "F32", true),
        ("f64.safetensors", st_f64, Format::Safetensors, "F64", false),
        (
            "f64.idx",
            encode(ElementType::F64, &shape, &le(&f64s, f64::to_be_bytes)),
            Format::Idx,
            "f64",
            false,
        ),
        ("rows.npy.gz", gzip(&npy_f32), Format::Npy, "<f4", true),
        // Named for another format: the bytes decide.
        ("rows.idx", npy_f32.clone(), Format::Npy, "<f4", true),
    ];
    for (name, bytes, format, dtype, mapped) in cases {
        let path = write(dir.path(), name, &bytes);
        let data = Dataset::open(&path, Some(&cache)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((data.len(), data.features()), (5, 6), "{name}");
        assert_eq!(read_back(&data), want, "{name}");
        assert_eq!(data.scaling(), Scaling::Identity, "{name}");
        assert_eq!(data.first_non_finite_row(), None, "{name}");
        let described = data.description().unwrap();
        assert_eq!(described.format, format, "{name}");
        assert_eq!(described.dtype, dtype, "{name}");
        assert_eq!(described.shape, shape, "{name}");
        assert_eq!(described.mapped, mapped, "{name}");
        assert_eq!(described.gzipped, name.ends_with(".gz"), "{name}");
        assert_eq!(data.mapping().is_some(), mapped, "{name}");
        if format == Format::Safetensors {
            assert_eq!(described.tensor.as_deref(), Some("rows"), "{name}");
        }
    }
}

#[test]
fn u8_sources_are_scaled_by_1_over_255_wherever_they_come_from() {
    let dir = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..5 * 6).map(|i| (i * 37 % 256) as u8).collect();
    let idx = Dataset::open(
        &write(
            dir.path(),
            "u8.idx",
            &encode(ElementType::U8, &[5, 6], &pixels),
        ),
        None,
    )
    .unwrap();
    let npy = Dataset::open(
        &write(dir.path(), "u8.npy", &npy::encode("|u1", &[5, 6], &pixels)),
        None,
    )
    .unwrap();
    let want: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
    for data in [&idx, &npy] {
        assert_eq!(data.scaling(), Scaling::DivideBy255);
        assert_eq!(Scaling::DivideBy255.factor(), nn::dataset::U8_SCALE);
        assert_eq!(read_back(data), read_back(&idx));
        let mut all = vec![0.0; 30];
        data.gather_range(0..5, &mut all);
        for (got, want) in all.iter().zip(&want) {
            assert!((got - want).abs() <= 1e-7, "{got} {want}");
        }
        // Viewed in place.
        let map = data.mapping().unwrap().as_ptr_range();
        assert!(map.contains(&data.stored_bytes().as_ptr()));
    }
}

/// The address range of `data`'s stored values lies inside its memory map.
fn reads_in_place(data: &Dataset) -> bool {
    let Some(map) = data.mapping() else {
        return false;
    };
    let map = map.as_ptr_range();
    let stored = data.stored_bytes().as_ptr_range();
    map.start <= stored.start && stored.end <= map.end && !stored.is_empty()
}

#[test]
fn f32_sources_are_read_in_the_map_without_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let values = sample_values(4, 3);
    let st = safetensors_file(
        &format!(
            "{{{}, {}}}",
            entry("labels", "I64", &[4], [0, 32]),
            entry("x", "F32", &[4, 3], [32, 80])
        ),
        &[vec![0; 32], le(&values, f32::to_le_bytes)].concat(),
    );
    for (name, bytes) in [
        ("x.npy", npy::encode_f32(&[4, 3], &values)),
        (
            "be.npy",
            npy::encode(">f4", &[4, 3], &le(&values, f32::to_be_bytes)),
        ),
        ("x.safetensors", st),
        ("x.idx", nn::idx::encode_f32(&[4, 3], &values)),
    ] {
        let data = Dataset::open(&write(dir.path(), name, &bytes), None).unwrap();
        assert!(reads_in_place(&data), "{name} was copied");
        let mut out = vec![0.0; 3];
        data.gather(&[2], &mut out);
        assert_eq!(out, values[6..9], "{name}");
    }
    // A hand-made header of odd length leaves the f32 data misaligned in the map: it is
    // copied, and reads the same.
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 3)}";
    let mut odd = b"\x93NUMPY\x01\x00".to_vec();
    odd.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    odd.extend_from_slice(dict.as_bytes());
    assert_ne!(odd.len() % 4, 0);
    odd.extend_from_slice(&le(&values, f32::to_le_bytes));
    let data = Dataset::open(&write(dir.path(), "odd.npy", &odd), None).unwrap();
    assert!(data.mapping().is_none() && !data.description().unwrap().mapped);
    let mut out = vec![0.0; 12];
    data.gather_range(0..4, &mut out);
    assert_eq!(out, values);
    // f64 is converted once.
    let f64s: Vec<u8> = values
        .iter()
        .flat_map(|&v| f64::from(v).to_le_bytes())
        .collect();
    let data = Dataset::open(
        &write(dir.path(), "x8.npy", &npy::encode("<f8", &[4, 3], &f64s)),
        None,
    )
    .unwrap();
    assert!(data.mapping().is_none());
}

#[test]
fn big_endian_idx_f32_is_swapped_while_gathering() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<f32> = vec![
        1.0,
        -2.5,
        3.25e-8,
        f32::MAX, // row 0
        -0.0,
        7.0,
        1.0e30,
        -1.0e-30, // row 1
        0.1,
        0.2,
        0.3,
        0.4, // row 2
    ];
    let path = write(
        dir.path(),
        "be.idx",
        &nn::idx::encode_f32(&[3, 2, 2], &values),
    );
    let data = Dataset::open(&path, None).unwrap();
    assert!(reads_in_place(&data));
    // The stored words are the file's big-endian bytes, untouched.
    assert_eq!(data.stored_bytes(), &std::fs::read(&path).unwrap()[16..]);
    let (train, valid) = data.split_tail(1).unwrap();
    let mut out = vec![0.0; 8];
    train.gather(&[1, 0], &mut out);
    assert_eq!(out, [&values[4..8], &values[0..4]].concat());
    let mut last = vec![0.0; 4];
    valid.gather_range(0..1, &mut last);
    assert_eq!(last, values[8..]);
    let mut part = vec![0.0; 2];
    let x = kernels::MatMut::row_major(&mut part, 1, 2).unwrap();
    train.gather_columns(&[1], 2..4, x);
    assert_eq!(part, values[6..8]);
}

#[test]
fn the_first_row_with_nan_or_infinity_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, features) = (40, 7);
    for (bad_row, bad) in [(0, f32::NAN), (17, f32::INFINITY), (39, f32::NEG_INFINITY)] {
        let mut values = sample_values(rows, features);
        values[bad_row * features + 3] = bad;
        // A later bad row does not hide the first.
        if bad_row < 30 {
            values[35 * features] = f32::NAN;
        }
        let f64s: Vec<u8> = values
            .iter()
            .flat_map(|&v| f64::from(v).to_le_bytes())
            .collect();
        for (name, bytes) in [
            ("x.npy", npy::encode_f32(&[rows, features], &values)),
            ("x.idx", nn::idx::encode_f32(&[rows, features], &values)),
            ("x8.npy", npy::encode("<f8", &[rows, features], &f64s)),
        ] {
            let data = Dataset::open(&write(dir.path(), name, &bytes), None).unwrap();
            assert_eq!(data.first_non_finite_row(), Some(bad_row), "{name}");
            // In a view, counted from the view's first row.
            let (train, valid) = data.split_tail(10).unwrap();
            let in_train = (bad_row < 30).then_some(bad_row);
            assert_eq!(train.first_non_finite_row(), in_train, "{name}");
            let in_valid = if bad_row < 30 { 5 } else { bad_row - 30 };
            assert_eq!(valid.first_non_finite_row(), Some(in_valid), "{name}");
        }
    }
    let clean = Dataset::from_f32(sample_values(3, 2), 2);
    assert_eq!(clean.first_non_finite_row(), None);
    assert_eq!(
        Dataset::from_u8(vec![255; 6], 2).first_non_finite_row(),
        None
    );
}

/// The error's message names the file; `kind` says why.
#[track_caller]
fn file_error(path: &Path, options: &OpenOptions) -> FileErrorKind {
    let err = Dataset::open_with(path, options).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("{}: ", path.display())),
        "{message}"
    );
    match err {
        DataError::File(e) => e.kind,
        other => panic!("{}: not a file error: {other}", path.display()),
    }
}

/// A `.npy` file of format version `major`.0 with the header text `dict` (padded as NumPy
/// pads it) and `data`.
fn npy_file(major: u8, dict: &str, data: &[u8]) -> Vec<u8> {
    let field = if major == 1 { 2 } else { 4 };
    let unpadded = 8 + field + dict.len() + 1;
    let header_len = dict.len() + (64 - unpadded % 64) % 64 + 1;
    let mut bytes = b"\x93NUMPY".to_vec();
    bytes.extend_from_slice(&[major, 0]);
    bytes.extend_from_slice(&(header_len as u32).to_le_bytes()[..field]);
    bytes.extend_from_slice(format!("{dict:width$}\n", width = header_len - 1).as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn hostile_npy_files_are_refused_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = npy::encode_f32(&[4, 3], &sample_values(4, 3));
    let header = |dict: &str| npy_file(1, dict, &[0; 48]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() - 5].to_vec()),
        ("trailing", [good.clone(), vec![0; 4]].concat()),
        (
            "lying-shape",
            header("{'descr': '<f4', 'fortran_order': False, 'shape': (5, 3)}"),
        ),
        (
            "wrong-dtype",
            header("{'descr': '<f8', 'fortran_order': False, 'shape': (4, 3)}"),
        ),
        (
            "fortran",
            header("{'descr': '<f4', 'fortran_order': True, 'shape': (4, 3)}"),
        ),
        (
            "int-dtype",
            header("{'descr': '<i4', 'fortran_order': False, 'shape': (4, 3)}"),
        ),
        (
            "structured",
            header("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,)}"),
        ),
        (
            "overflow",
            header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 9)}",
            ),
        ),
        ("not-a-dict", header("['descr', '<f4']")),
        ("short-header", good[..30].to_vec()),
        ("version", [&good[..6], &[7, 0], &good[8..]].concat()),
        (
            "absurd-length",
            [
                b"\x93NUMPY\x02\x00".as_slice(),
                &u32::MAX.to_le_bytes(),
                b"{}",
            ]
            .concat(),
        ),
    ];
    for (name, bytes) in &cases {
        let path = write(dir.path(), name, bytes);
        let FileErrorKind::Npy(kind) = file_error(&path, &OpenOptions::default()) else {
            panic!("{name}: not an npy error");
        };
        let ok = match *name {
            "truncated" | "trailing" | "lying-shape" | "wrong-dtype" => {
                matches!(kind, NpyErrorKind::LengthMismatch { .. })
            }
            "fortran" => matches!(kind, NpyErrorKind::FortranOrder),
            "int-dtype" | "structured" => matches!(kind, NpyErrorKind::UnsupportedDtype { .. }),
            "overflow" => matches!(kind, NpyErrorKind::DimensionOverflow { .. }),
            "not-a-dict" => matches!(kind, NpyErrorKind::BadHeader { .. }),
            "short-header" => matches!(kind, NpyErrorKind::TruncatedHeader { .. }),
            "version" => matches!(kind, NpyErrorKind::UnsupportedVersion { major: 7, .. }),
            "absurd-length" => matches!(kind, NpyErrorKind::HeaderTooLong { .. }),
            _ => unreachable!(),
        };
        assert!(ok, "{name}: {kind}");
    }
    // A magic one byte off is no .npy file at all.
    let mut magic = good.clone();
    magic[5] = b'X';
    let path = write(dir.path(), "bad-magic.npy", &magic);
    let kind = file_error(&path, &OpenOptions::default());
    assert!(matches!(kind, FileErrorKind::Unrecognised { .. }), "{kind}");
    // Rank 1 is not rows.
    let path = write(
        dir.path(),
        "vector.npy",
        &npy::encode_f32(&[3], &[1.0, 2.0, 3.0]),
    );
    assert!(matches!(
        Dataset::open(&path, None),
        Err(DataError::Shape { .. })
    ));
}

#[test]
fn versions_2_and_3_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let values = sample_values(2, 2);
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
    for major in [2u8, 3] {
        let bytes = npy_file(major, dict, &le(&values, f32::to_le_bytes));
        assert_eq!(bytes.len(), 128 + 16);
        let data =
            Dataset::open(&write(dir.path(), &format!("v{major}.npy"), &bytes), None).unwrap();
        assert!(reads_in_place(&data));
        let mut out = vec![0.0; 4];
        data.gather_range(0..2, &mut out);
        assert_eq!(out, values);
    }
}

#[test]
fn hostile_safetensors_files_are_refused_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = vec![0u8; 48];
    let file = |entries: &[String], data: &[u8]| {
        safetensors_file(&format!("{{{}}}", entries.join(", ")), data)
    };
    let rows = entry("x", "F32", &[4, 3], [0, 48]);
    let good = file(std::slice::from_ref(&rows), &data);
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("truncated", good[..good.len() - 4].to_vec(), None),
        ("trailing", [good.clone(), vec![0; 8]].concat(), None),
        (
            "lying-shape",
            file(&[entry("x", "F32", &[5, 3], [0, 48])], &data),
            None,
        ),
        (
            "lying-dtype",
            file(&[entry("x", "F64", &[4, 3], [0, 48])], &data),
            None,
        ),
        (
            "gap",
            file(&[entry("x", "F32", &[4, 3], [4, 52])], &[0; 52]),
            None,
        ),
        (
            "overflow",
            file(&[entry("x", "F32", &[1 << 40, 1 << 40], [0, 48])], &data),
            None,
        ),
        (
            "bad-json",
            safetensors_file("{\"x\": {\"dtype\": ", &data),
            None,
        ),
        (
            "absurd-length",
            [(1u64 << 40).to_le_bytes().as_slice(), b"{}"].concat(),
            None,
        ),
        ("short-header", good[..20].to_vec(), None),
        (
            "no-rows",
            file(&[entry("x", "I32", &[4, 3], [0, 48])], &data),
            None,
        ),
        (
            "only-vectors",
            file(&[entry("x", "F32", &[12], [0, 48])], &data),
            None,
        ),
        (
            "half",
            file(&[entry("x", "F16", &[4, 6], [0, 48])], &data),
            Some("x"),
        ),
        (
            "ambiguous",
            file(
                &[rows.clone(), entry("y", "F32", &[3, 4], [48, 96])],
                &[0; 96],
            ),
            None,
        ),
        ("absent", good.clone(), Some("y")),
    ];
    for (name, bytes, tensor) in &cases {
        let path = write(dir.path(), name, bytes);
        let options = OpenOptions {
            tensor: tensor.map(String::from),
            ..OpenOptions::default()
        };
        let FileErrorKind::Safetensors(kind) = file_error(&path, &options) else {
            panic!("{name}: not a safetensors error");
        };
        let message = kind.to_string();
        let ok = match *name {
            "truncated" | "trailing" => matches!(kind, SafetensorsErrorKind::LengthMismatch { .. }),
            "lying-shape" | "lying-dtype" | "gap" | "overflow" => {
                matches!(kind, SafetensorsErrorKind::BadTensor { ref name, .. } if name == "x")
            }
            "bad-json" => matches!(kind, SafetensorsErrorKind::BadHeader(_)),
            "absurd-length" => matches!(kind, SafetensorsErrorKind::HeaderTooLong { .. }),
            "short-header" => matches!(kind, SafetensorsErrorKind::TruncatedHeader { .. }),
            "no-rows" | "only-vectors" => {
                matches!(kind, SafetensorsErrorKind::NoRows { .. }) && message.contains("x (")
            }
            "half" => {
                matches!(kind, SafetensorsErrorKind::NotFloat { .. }) && message.contains("F16")
            }
            "ambiguous" => {
                matches!(kind, SafetensorsErrorKind::Ambiguous { .. })
                    && message.contains("x (F32 [4, 3])")
                    && message.contains("y (F32 [3, 4])")
            }
            "absent" => {
                matches!(kind, SafetensorsErrorKind::NoSuchTensor { .. })
                    && message.contains("x (F32")
            }
            _ => unreachable!(),
        };
        assert!(ok, "{name}: {message}");
    }
    // Naming one of several tensors reads it.
    let two = file(&[rows, entry("y", "F32", &[3, 4], [48, 96])], &[0; 96]);
    let path = write(dir.path(), "two", &two);
    let options = OpenOptions {
        tensor: Some("y".into()),
        ..OpenOptions::default()
    };
    let y = Dataset::open_with(&path, &options).unwrap();
    assert_eq!((y.len(), y.features()), (3, 4));
}

#[test]
fn gzipped_npy_and_safetensors_are_checked_like_plain_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let options = OpenOptions {
        cache_dir: Some(cache.clone()),
        ..OpenOptions::default()
    };
    let values = sample_values(6, 4);
    let npy_bytes = npy::encode_f32(&[6, 4], &values);
    let st = safetensors_file(
        &format!("{{{}}}", entry("x", "F32", &[6, 4], [0, 96])),
        &le(&values, f32::to_le_bytes),
    );
    for (name, bytes) in [("x.npy.gz", &npy_bytes), ("x.safetensors.gz", &st)] {
        let path = write(dir.path(), name, &gzip(bytes));
        let data = Dataset::open_with(&path, &options).unwrap();
        assert!(reads_in_place(&data), "{name}");
        let mut out = vec![0.0; 24];
        data.gather_range(0..6, &mut out);
        assert_eq!(out, values, "{name}");
    }
    // Broken inside the gzip: the same errors, naming the gzipped file, and nothing left
    // in the cache.
    std::fs::remove_dir_all(&cache).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("short.npy.gz", gzip(&npy_bytes[..npy_bytes.len() - 8])),
        (
            "long.npy.gz",
            gzip(&[npy_bytes.clone(), vec![0; 100]].concat()),
        ),
        ("header.npy.gz", gzip(&npy_bytes[..40])),
        (
            "fortran.npy.gz",
            gzip(&replace(&npy_bytes, b"False", b"True ")),
        ),
        ("short.safetensors.gz", gzip(&st[..st.len() - 1])),
        (
            "absurd.safetensors.gz",
            gzip(&[(1u64 << 40).to_le_bytes().as_slice(), b"{}"].concat()),
        ),
        ("garbage.gz", gzip(b"hello, world")),
        ("corrupt.gz", gzip(&npy_bytes)[..30].to_vec()),
    ];
    for (name, bytes) in &cases {
        let path = write(dir.path(), name, bytes);
        let kind = file_error(&path, &options);
        let ok = match *name {
            "short.npy.gz" => matches!(
                kind,
                FileErrorKind::Npy(NpyErrorKind::LengthMismatch { .. })
            ),
            "long.npy.gz" => matches!(kind, FileErrorKind::TrailingData { .. }),
            "header.npy.gz" => matches!(
                kind,
                FileErrorKind::Npy(NpyErrorKind::TruncatedHeader { found: 40, .. })
            ),
            "fortran.npy.gz" => matches!(kind, FileErrorKind::Npy(NpyErrorKind::FortranOrder)),
            "short.safetensors.gz" => matches!(
                kind,
                FileErrorKind::Safetensors(SafetensorsErrorKind::LengthMismatch { .. })
            ),
            "absurd.safetensors.gz" => matches!(
                kind,
                FileErrorKind::Safetensors(SafetensorsErrorKind::HeaderTooLong { .. })
            ),
            "garbage.gz" => matches!(kind, FileErrorKind::Unrecognised { .. }),
            "corrupt.gz" => matches!(kind, FileErrorKind::Gzip(_)),
            _ => unreachable!(),
        };
        assert!(ok, "{name}: {kind}");
    }
    let left: Vec<_> = std::fs::read_dir(&cache)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "cache holds {left:?}");
}

fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    [&bytes[..at], to, &bytes[at + from.len()..]].concat()
}

/// A matrix far larger than this machine's memory (a sparse file: its data reads as
/// zeros and takes no disk) opens at once and gathers any row: nothing on the way reads
/// or converts the whole.
#[test]
fn a_matrix_larger_than_memory_opens_and_gathers_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, features) = (1usize << 23, 1024usize); // 32 GiB of f32
    let npy_header = npy::header("<f4", &[rows, features]);
    let idx_header = encode(ElementType::F32, &[rows, features], &[]);
    for (name, header) in [("huge.npy", npy_header), ("huge.idx", idx_header)] {
        let path = dir.path().join(name);
        let file = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut &file, &header).unwrap();
        file.set_len(header.len() as u64 + (rows * features * 4) as u64)
            .unwrap();
        let started = std::time::Instant::now();
        let data = Dataset::open(&path, None).unwrap();
        assert_eq!((data.len(), data.features()), (rows, features));
        assert!(reads_in_place(&data), "{name}");
        let mut out = vec![1.0; 2 * features];
        data.gather(&[rows - 1, rows / 2], &mut out);
        assert!(out.iter().all(|&v| v == 0.0));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{name}: {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn safetensors_metadata_is_read_from_the_header_alone() {
    let dir = tempfile::tempdir().unwrap();
    // A tensor whose shape lies: the metadata is still read, the data is not looked at.
    let lying = safetensors_file(
        &format!(
            r#"{{"__metadata__": {{"config": "{{}}"}}, {}}}"#,
            entry("x", "F32", &[1 << 30, 1 << 30], [0, 8])
        ),
        &[0; 8],
    );
    let path = write(dir.path(), "model", &lying);
    let metadata = nn::tensors::read_metadata(&path).unwrap().unwrap();
    assert_eq!(metadata["config"], "{}");
    let plain = safetensors_file(
        &format!("{{{}}}", entry("x", "F32", &[1, 2], [0, 8])),
        &[0; 8],
    );
    let path = write(dir.path(), "plain", &plain);
    assert!(nn::tensors::read_metadata(&path)
        .unwrap()
        .unwrap()
        .is_empty());
    let npy = write(dir.path(), "x.npy", &npy::encode_f32(&[1, 1], &[1.0]));
    assert!(nn::tensors::read_metadata(&npy).unwrap().is_none());
    let gz = write(dir.path(), "x.gz", &gzip(&plain));
    assert!(nn::tensors::read_metadata(&gz).unwrap().is_none());
    for bytes in [b"hello".to_vec(), plain[..20].to_vec()] {
        let path = write(dir.path(), "broken", &bytes);
        assert!(nn::tensors::read_metadata(&path).is_err());
    }
    assert!(nn::tensors::read_metadata(dir.path()).is_err());
}

/// With a first dimension of 0 the file holds no data, and the length check bounds none of
/// the other dimensions: their product must not overflow anywhere.
#[test]
fn empty_files_with_huge_other_dimensions_are_refused_without_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let huge = u32::MAX as usize;
    let idx = encode(ElementType::U8, &[0, huge, huge, huge], &[]);
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296, 4294967296), }";
    let npy = npy_file(1, dict, &[]);
    let st = safetensors_file(
        &format!("{{{}}}", entry("x", "F32", &[0, 1 << 40, 1 << 40], [0, 0])),
        &[],
    );
    for (name, bytes) in [
        ("x.idx", idx.clone()),
        ("x.npy", npy),
        ("x.safetensors", st),
    ] {
        let path = write(dir.path(), name, &bytes);
        let described = nn::source::describe(&path, &OpenOptions::default()).unwrap();
        assert_eq!(described.element_count(), 0, "{name}");
        assert_eq!(described.features(), None, "{name}");
        match Dataset::open(&path, None) {
            Err(DataError::Shape { message, .. }) => {
                assert!(message.contains("more values"), "{name}: {message}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let header = nn::idx::IdxHeader::parse(&idx, idx.len() as u64).unwrap();
    assert_eq!(header.element_count(), 0);
    let header = npy::NpyHeader::parse(&npy_file(1, dict, &[])).unwrap();
    assert_eq!(header.element_count(), 0);
}
