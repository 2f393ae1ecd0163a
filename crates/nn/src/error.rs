//! Error types. Every error names the file or setting at fault and says what was
//! expected and what was found.

use std::path::{Path, PathBuf};

/// What is wrong with an IDX file.
#[derive(Debug, thiserror::Error)]
pub enum IdxErrorKind {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A directory or device stands where a regular file is expected.
    #[error("not a regular file")]
    NotAFile,
    /// The file ends inside the header.
    #[error("truncated header: needs at least {needed} bytes, file has {found}")]
    TruncatedHeader {
        /// Bytes the header needs.
        needed: u64,
        /// Bytes the file has.
        found: u64,
    },
    /// The first two bytes are not zero.
    #[error("not an IDX file: magic bytes are {:#04x} {:#04x}, expected 0x00 0x00", found[0], found[1])]
    BadMagic {
        /// The first two bytes.
        found: [u8; 2],
    },
    /// The type code is none of 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E.
    #[error("unknown element type code {code:#04x} (expected 0x08 u8, 0x09 i8, 0x0b i16, 0x0c i32, 0x0d f32 or 0x0e f64)")]
    UnknownType {
        /// The code found.
        code: u8,
    },
    /// Rank 0: no dimensions.
    #[error("rank 0: an IDX file needs at least one dimension")]
    ZeroRank,
    /// The dimensions' product does not fit in 64 bits.
    #[error("dimensions {dims:?} overflow: their product is larger than any file")]
    DimensionOverflow {
        /// The dimensions.
        dims: Vec<usize>,
    },
    /// The file is not exactly as long as its header says.
    #[error("header says {dims:?} of {element_type}, which is {expected} bytes with the header, but the file has {found} bytes")]
    LengthMismatch {
        /// The dimensions.
        dims: Vec<usize>,
        /// The element type's name.
        element_type: &'static str,
        /// Bytes the header implies.
        expected: u64,
        /// Bytes the file has.
        found: u64,
    },
    /// The decompressed data goes on past what the header declares.
    #[error("decompressed data is longer than the {expected} bytes its header declares")]
    TrailingData {
        /// Bytes the header implies.
        expected: u64,
    },
    /// The gzip stream is corrupt or truncated.
    #[error("corrupt or truncated gzip data: {0}")]
    Gzip(std::io::Error),
    /// The decompressed cache could not be written.
    #[error("cannot write decompressed copy to {path}: {source}")]
    Cache {
        /// Where the copy was to go.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// An IDX file that could not be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct IdxError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it (already part of the message, so not a `source`).
    pub kind: IdxErrorKind,
}

impl IdxError {
    /// An error about `path`.
    pub fn new(path: &Path, kind: IdxErrorKind) -> Self {
        Self {
            path: path.to_path_buf(),
            kind,
        }
    }
}

/// A dataset that cannot be used as asked.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file itself is broken.
    #[error(transparent)]
    Idx(#[from] IdxError),
    /// Images and labels disagree in count.
    #[error("{images} holds {image_count} samples but {labels} holds {label_count} labels")]
    CountMismatch {
        /// Images file.
        images: PathBuf,
        /// Its sample count.
        image_count: usize,
        /// Labels file.
        labels: PathBuf,
        /// Its label count.
        label_count: usize,
    },
    /// The file's shape does not fit its use.
    #[error("{}: {message}", path.display())]
    Shape {
        /// The file.
        path: PathBuf,
        /// What is expected and what was found.
        message: String,
    },
    /// The split asks for more samples than there are.
    #[error("cannot take {valid} validation samples from {total} (at least one must remain for training)")]
    Split {
        /// Samples requested for validation.
        valid: usize,
        /// Samples available.
        total: usize,
    },
}

/// A model configuration or checkpoint that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The architecture is inconsistent.
    #[error("invalid model: {0}")]
    Invalid(String),
    /// A checkpoint could not be read or written.
    #[error("{}: {message}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss became NaN or infinite.
    #[error("training diverged at epoch {epoch}, step {step}: loss is {loss} (the learning rate {lr} is probably too high)")]
    Diverged {
        /// Epoch, from 1.
        epoch: usize,
        /// Step within the epoch, from 1.
        step: usize,
        /// The non-finite loss.
        loss: f64,
        /// The learning rate in use.
        lr: f32,
    },
    /// The data does not fit the model.
    #[error("data has {found} features per sample but the model takes {expected}")]
    FeatureMismatch {
        /// Model input width.
        expected: usize,
        /// Data width.
        found: usize,
    },
    /// Nothing to train on.
    #[error("the training set is empty")]
    EmptyDataset,
    /// A setting is out of range.
    #[error("invalid training setting: {0}")]
    Invalid(String),
    /// The observer asked to stop (e.g. on Ctrl-C).
    #[error("training interrupted")]
    Interrupted,
}
