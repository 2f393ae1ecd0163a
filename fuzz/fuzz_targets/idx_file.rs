//! Whole IDX files, plain or gzipped, through the same path `sae` reads them: a file on
//! disk, memory-mapped, decompressed into a cache when gzipped, its body converted to
//! f32 and viewed as a dataset. Never panics; whatever opens holds exactly what its
//! header declares.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nn::dataset::Dataset;
use nn::idx::IdxFile;
use std::path::PathBuf;
use std::sync::OnceLock;

/// One scratch directory per fuzzing process: the input file and the gzip cache.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sae-fuzz-idx-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("cache")).unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let path = dir.join("input");
    let cache = dir.join("cache");
    std::fs::write(&path, data).unwrap();
    if let Ok(file) = IdxFile::open_with_cache(&path, Some(&cache)) {
        let count = file.header().element_count();
        assert_eq!(file.data_bytes().len(), count * file.element_type().size());
        assert_eq!(file.to_f32().len(), count);
        assert_eq!(file.as_u8().is_some(), file.element_type().size() == 1 && file.as_i8().is_none());
    }
    if let Ok(images) = Dataset::open(&path, Some(&cache)) {
        assert!(images.features() > 0 || images.is_empty());
    }
    // Each gzipped input leaves its own cache entry; keep the directory small.
    for entry in std::fs::read_dir(&cache).unwrap().flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
});
