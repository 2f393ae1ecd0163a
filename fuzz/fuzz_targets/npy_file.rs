//! Whole `.npy` files, plain or gzipped, through the path `sae` reads data: a file on
//! disk recognised by its first bytes, memory-mapped, decompressed into a cache when
//! gzipped, viewed as a dataset, every row gathered and scanned for NaN. Never panics;
//! whatever opens holds exactly what its header declares.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nn::npy::NpyHeader;
use nn::source::OpenOptions;
use std::path::PathBuf;
use std::sync::OnceLock;

/// One scratch directory per fuzzing process: the input file and the gzip cache.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sae-fuzz-npy-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("cache")).unwrap();
        dir
    })
}

/// Opens the file as `sae` does, and checks what opened against its description.
fn check_dataset(path: &std::path::Path, options: &OpenOptions) {
    let Ok(data) = nn::Dataset::open_with(path, options) else {
        return;
    };
    let described = data.description().expect("opened from a file").clone();
    assert!(data.features() > 0);
    assert_eq!(data.len() * data.features(), described.element_count());
    assert_eq!(data.mapping().is_some(), described.mapped);
    let mut rows = vec![0.0; data.len() * data.features()];
    data.gather_range(0..data.len(), &mut rows);
    let first_bad = rows
        .chunks_exact(data.features())
        .position(|row| row.iter().any(|v| !v.is_finite()));
    assert_eq!(data.first_non_finite_row(), first_bad);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = NpyHeader::parse(data) {
        assert!(header.data_offset <= data.len());
        if header.check_len(data.len() as u64).is_ok() {
            let size = header.dtype.size() as u64;
            assert_eq!(header.data_len, header.element_count() as u64 * size);
        }
    }
    let dir = scratch();
    let path = dir.join("input");
    std::fs::write(&path, data).unwrap();
    let options = OpenOptions {
        cache_dir: Some(dir.join("cache")),
        tensor: None,
    };
    check_dataset(&path, &options);
    // Each gzipped input leaves its own cache entry; keep the directory small.
    for entry in std::fs::read_dir(dir.join("cache")).unwrap().flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
});
