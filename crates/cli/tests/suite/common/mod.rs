//! What the binary's tests share: running `sae`, and small generated IDX data.
#![allow(dead_code)] // each test file uses its own subset

use std::process::{Command, Output};

pub const SIDE: usize = 4;
pub const FEATURES: usize = SIDE * SIDE;

/// The binary's path.
pub const SAE: &str = env!("CARGO_BIN_EXE_sae");

/// `program` (the binary itself, or a wrapper that ends by running it) with the
/// environment every test uses: a private cache and no data directory from the caller.
pub fn command(program: &str) -> Command {
    let mut command = Command::new(program);
    command
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("sae-cli-test-cache"),
        )
        .env_remove("SAE_DATA");
    command
}

pub fn sae(args: &[&str]) -> Output {
    command(SAE).args(args).output().expect("the binary runs")
}

pub fn idx_u8(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// `samples` 4x4 images made of bright bars, as u8 pixels.
pub fn bars(samples: usize) -> Vec<u8> {
    (0..samples * FEATURES)
        .map(|i| {
            let (s, p) = (i / FEATURES, i % FEATURES);
            if (p / SIDE + s) % 3 == 0 || (p % SIDE + s) % 4 == 0 {
                230
            } else {
                10
            }
        })
        .collect()
}

/// The same images as f32 rows in `0..=1`, scaled exactly as a u8 source is gathered.
pub fn bars_f32(samples: usize) -> Vec<f32> {
    bars(samples)
        .iter()
        .map(|&p| f32::from(p) * nn::dataset::U8_SCALE)
        .collect()
}

/// A safetensors file holding one F32 tensor `name` of `shape`, with a `source` entry in
/// its metadata (and no `config`: data, not a model).
pub fn safetensors_f32(name: &str, shape: &[usize], values: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = serde_json::json!({
        "__metadata__": {"source": "test"},
        name: {"dtype": "F32", "shape": shape, "data_offsets": [0, data.len()]},
    });
    let mut header = header.to_string().into_bytes();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&data);
    bytes
}

/// A data directory with the four files: `samples` 4x4 images made of bright bars, and labels.
pub fn data_dir(samples: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let pixels = bars(samples);
    let labels: Vec<u8> = (0..samples).map(|s| (s % 10) as u8).collect();
    let n = samples as u32;
    let s = SIDE as u32;
    std::fs::write(
        dir.path().join("train-images-idx3-ubyte"),
        idx_u8(&[n, s, s], &pixels),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("train-labels-idx1-ubyte"),
        idx_u8(&[n], &labels),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("t10k-images-idx3-ubyte"),
        idx_u8(&[n, s, s], &pixels),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("t10k-labels-idx1-ubyte"),
        idx_u8(&[n], &labels),
    )
    .unwrap();
    dir
}

pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `args`, expecting failure with `expected` in a one-line error and no panic.
#[track_caller]
pub fn fails_with(args: &[&str], expected: &str) {
    let r = sae(args);
    let (_, stderr) = text(&r);
    assert!(!r.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(
        stderr.contains(expected),
        "{args:?}: expected {expected:?} in {stderr:?}"
    );
}
