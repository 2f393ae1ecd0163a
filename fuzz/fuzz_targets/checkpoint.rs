//! The safetensors model loader, config metadata included, on arbitrary bytes: never
//! panics, and whatever it accepts is a consistent model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok((model, _)) = nn::checkpoint::from_bytes(data, Path::new("fuzz-input")) {
        let config = model.config();
        assert!(config.validate().is_ok());
        for (layer, spec) in model.layers().zip(&config.layers) {
            assert_eq!(layer.weight.len(), spec.inputs * spec.units);
            assert_eq!(layer.bias.len(), spec.units);
        }
    }
});
