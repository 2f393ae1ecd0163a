//! safetensors files read as data, through the path `sae` reads them: the header parsed
//! and checked, the rows tensor chosen (by name when the input's first byte is odd, to
//! reach that path too), the file memory-mapped and viewed as a dataset, every row
//! gathered and scanned for NaN; and the metadata peek `sae info` uses. Never panics;
//! whatever opens holds exactly what its header declares.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nn::source::OpenOptions;
use nn::tensors::TensorsHeader;
use std::path::PathBuf;
use std::sync::OnceLock;

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sae-fuzz-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let mut name = None;
    if let Ok(header) = TensorsHeader::parse(data) {
        let mut end = header.data_offset;
        for tensor in &header.tensors {
            assert_eq!(
                tensor.range.start, end,
                "{}: no gap, no overlap",
                tensor.name
            );
            end = tensor.range.end;
        }
        assert_eq!(end as u64, header.total_len());
        if let Ok(tensor) = header.rows_tensor(None) {
            assert!(tensor.holds_rows());
        }
        name = header.tensors.first().map(|t| t.name.clone());
    }
    let path = scratch().join("input");
    std::fs::write(&path, data).unwrap();
    let _ = nn::tensors::read_metadata(&path);
    let options = OpenOptions {
        cache_dir: Some(scratch().join("cache")),
        tensor: name.filter(|_| data.first().is_some_and(|b| b % 2 == 1)),
    };
    let Ok(rows) = nn::Dataset::open_with(&path, &options) else {
        return;
    };
    let described = rows.description().expect("opened from a file").clone();
    assert_eq!(rows.len() * rows.features(), described.element_count());
    let mut values = vec![0.0; rows.len() * rows.features()];
    rows.gather_range(0..rows.len(), &mut values);
    let first_bad = values
        .chunks_exact(rows.features())
        .position(|row| row.iter().any(|v| !v.is_finite()));
    assert_eq!(rows.first_non_finite_row(), first_bad);
});
