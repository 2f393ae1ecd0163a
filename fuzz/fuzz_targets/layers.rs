//! The `--layers` parser on arbitrary text: never panics, and what it accepts formats
//! back to a string that parses to the same layers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nn::config::{format_layers, parse_layers};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(layers) = parse_layers(text) {
            assert!(!layers.is_empty());
            assert_eq!(parse_layers(&format_layers(&layers)).unwrap(), layers);
        }
    }
});
