//! Where the samples are: the Fashion-MNIST files (and the message when they are not
//! there), or a single data file of any format `nn` reads.

use crate::args::{DataArgs, TensorArg};
use anyhow::{bail, Result};
use nn::{DataError, Dataset, OpenOptions};
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

/// What `--data` names: a directory laid out as Fashion-MNIST's, or one file of samples.
pub enum Source {
    /// A directory holding the four IDX files.
    Dir(PathBuf),
    /// A data file whose rows are the samples.
    File(PathBuf),
}

/// `--data PATH` (else `$SAE_DATA`, else Debian's directory): a file if one is there,
/// else a directory, so that a missing path gets [`find`]'s advice.
pub fn source(flag: Option<&Path>) -> Source {
    let path = data_dir(flag);
    match std::fs::metadata(&path) {
        Ok(meta) if !meta.is_dir() => Source::File(path),
        _ => Source::Dir(path),
    }
}

/// The training samples `--data` names, and the labels that go with them, if any: a
/// directory's train images and labels, or a single file.
pub fn training_files(args: &DataArgs) -> Result<(PathBuf, Option<PathBuf>)> {
    Ok(match source(args.data.as_deref()) {
        Source::Dir(dir) => (find(&dir, TRAIN_IMAGES)?, find(&dir, TRAIN_LABELS).ok()),
        Source::File(path) => (path, None),
    })
}

/// The samples to evaluate on: a directory's test images, or a single file.
pub fn test_file(args: &DataArgs) -> Result<PathBuf> {
    match source(args.data.as_deref()) {
        Source::Dir(dir) => find(&dir, TEST_IMAGES),
        Source::File(path) => Ok(path),
    }
}

/// Opens the samples of a data file of any format, refusing one without samples.
pub fn open_rows(path: &Path, tensor: &TensorArg) -> Result<Dataset> {
    let options = OpenOptions {
        tensor: tensor.tensor.clone(),
        ..OpenOptions::default()
    };
    let data = Dataset::open_with(path, &options)?;
    if data.is_empty() {
        bail!("{}: holds no samples", path.display());
    }
    Ok(data)
}

/// Refuses samples holding NaN or infinity, naming the file and the first such row
/// (counted in the file, wherever the view starts); a pass over float data, free for u8.
pub fn refuse_non_finite(data: &Dataset) -> Result<()> {
    match data.first_non_finite_row() {
        None => Ok(()),
        Some(row) => Err(DataError::NonFinite {
            path: data.path().map(Path::to_path_buf).unwrap_or_default(),
            row: data.offset() + row,
        }
        .into()),
    }
}
