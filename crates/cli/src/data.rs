//! Where the Fashion-MNIST files are, and the message when they are not.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Debian's `dataset-fashion-mnist` installs the files here.
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The four IDX files, without the `.gz` Debian adds.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// `--data DIR`, else `$SAE_DATA`, else Debian's directory.
pub fn data_dir(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os("SAE_DATA")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEBIAN_DIR))
}

/// The path of `name` in `dir`, plain or gzipped; a helpful error if neither exists.
pub fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    for candidate in [dir.join(name), dir.join(format!("{name}.gz"))] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} not found in {}. Install Fashion-MNIST with `apt-get install -y dataset-fashion-mnist` \
         (files in {DEBIAN_DIR}), or pass --data DIR (or set SAE_DATA) to a directory holding \
         {TRAIN_IMAGES}, {TRAIN_LABELS}, {TEST_IMAGES} and {TEST_LABELS} (each may end in .gz)",
        dir.display()
    )
}
