//! The IDX header parser on arbitrary bytes: never panics, and whatever it accepts
//! describes exactly the bytes it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nn::idx::IdxHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = IdxHeader::parse(data, data.len() as u64) {
        let size = header.element_type.size() as u64;
        let body = header.dims.iter().fold(size, |acc, &d| acc * d as u64);
        assert_eq!(header.len() as u64 + body, data.len() as u64);
        assert!(!header.dims.is_empty());
    }
});
