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

/// What is wrong with a `.npy` file.
#[derive(Debug, thiserror::Error)]
pub enum NpyErrorKind {
    /// The file ends inside the header.
    #[error("truncated .npy header: needs at least {needed} bytes, file has {found}")]
    TruncatedHeader {
        /// Bytes the header needs.
        needed: u64,
        /// Bytes the file has.
        found: u64,
    },
    /// The first six bytes are not `\x93NUMPY`.
    #[error("not a .npy file: it does not start with \\x93NUMPY")]
    BadMagic,
    /// A format version other than 1.0, 2.0 and 3.0.
    #[error("unsupported .npy format version {major}.{minor} (1.0, 2.0 and 3.0 are read)")]
    UnsupportedVersion {
        /// Major version byte.
        major: u8,
        /// Minor version byte.
        minor: u8,
    },
    /// The header length field asks for more than any real header needs.
    #[error("header length {len} is absurd: headers longer than {max} bytes are refused")]
    HeaderTooLong {
        /// The length the file declares.
        len: u64,
        /// The longest header read.
        max: u64,
    },
    /// The header is not the Python dictionary literal the format prescribes.
    #[error("malformed header {header:?}: {reason}")]
    BadHeader {
        /// The header text (shortened if long).
        header: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The array is stored by columns.
    #[error(
        "fortran_order is True: only C-ordered arrays are read (save numpy.ascontiguousarray(x))"
    )]
    FortranOrder,
    /// A dtype this reader does not take.
    #[error("dtype {descr:?} is not read: expected '<f4', '>f4', '<f8', '>f8' or '|u1'")]
    UnsupportedDtype {
        /// The `descr` entry as written.
        descr: String,
    },
    /// The shape's product does not fit in 64 bits.
    #[error("shape {shape:?} overflows: its product is larger than any file")]
    DimensionOverflow {
        /// The shape, as written (dimensions too large for an integer are clamped).
        shape: Vec<u64>,
    },
    /// The file is not exactly as long as its header says.
    #[error("header says shape {shape:?} of {descr}, which is {expected} bytes with the header, but the file has {found} bytes")]
    LengthMismatch {
        /// The shape.
        shape: Vec<usize>,
        /// The dtype.
        descr: String,
        /// Bytes the header implies.
        expected: u64,
        /// Bytes the file has.
        found: u64,
    },
}

/// What is wrong with a safetensors file read as data.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsErrorKind {
    /// The file ends before its header does.
    #[error("not a safetensors file: its header needs at least {needed} bytes, file has {found}")]
    TruncatedHeader {
        /// Bytes the header needs.
        needed: u64,
        /// Bytes the file has.
        found: u64,
    },
    /// The header length field is larger than any header read.
    #[error(
        "not a safetensors file: header length {len} is absurd (at most {max} bytes are read)"
    )]
    HeaderTooLong {
        /// The length the file declares.
        len: u64,
        /// The longest header read.
        max: u64,
    },
    /// The header is not the JSON the format prescribes.
    #[error("not a safetensors file: invalid JSON header: {0}")]
    BadHeader(String),
    /// One tensor's entry is inconsistent.
    #[error("tensor {name:?}: {reason}")]
    BadTensor {
        /// The tensor.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The tensors' data does not end where the file does.
    #[error("header describes {expected} bytes in all, but the file has {found} bytes")]
    LengthMismatch {
        /// Bytes the header implies.
        expected: u64,
        /// Bytes the file has.
        found: u64,
    },
    /// The tensor asked for is not there.
    #[error("no tensor named {name:?}; the file holds {available}")]
    NoSuchTensor {
        /// The name asked for.
        name: String,
        /// The tensors there are, with their dtypes and shapes.
        available: String,
    },
    /// The tensor asked for is not F32 or F64.
    #[error("tensor {name:?} is {dtype}: only F32 and F64 tensors are read as rows")]
    NotFloat {
        /// The tensor.
        name: String,
        /// Its dtype.
        dtype: String,
    },
    /// No tensor could hold the rows.
    #[error(
        "no F32 or F64 tensor of rank 2 or more to read rows from; the file holds {available}"
    )]
    NoRows {
        /// The tensors there are, with their dtypes and shapes.
        available: String,
    },
    /// Several tensors could hold the rows and none was named.
    #[error("several tensors could be the rows ({candidates}): name the one to read (`--tensor NAME` on the command line)")]
    Ambiguous {
        /// The candidates, with their dtypes and shapes.
        candidates: String,
    },
}

/// What is wrong with a data file before, or beside, its own format's rules.
#[derive(Debug, thiserror::Error)]
pub enum FileErrorKind {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A directory or device stands where a regular file is expected.
    #[error("not a regular file")]
    NotAFile,
    /// The first bytes match no format read here.
    #[error("not an IDX file (00 00 type rank), a .npy file (\\x93NUMPY), safetensors (a header length, then JSON) or gzip: it starts with {}", hex(start))]
    Unrecognised {
        /// The file's first bytes (at most 12).
        start: Vec<u8>,
    },
    /// The gzip stream is corrupt or truncated.
    #[error("corrupt or truncated gzip data: {0}")]
    Gzip(std::io::Error),
    /// The decompressed data goes on past what its header declares.
    #[error("decompressed data is longer than the {expected} bytes its header declares")]
    TrailingData {
        /// Bytes the header implies.
        expected: u64,
    },
    /// The decompressed cache could not be written.
    #[error("cannot write decompressed copy to {path}: {source}")]
    Cache {
        /// Where the copy was to go.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A broken `.npy` file.
    #[error(transparent)]
    Npy(NpyErrorKind),
    /// A broken safetensors file, or one without rows to read.
    #[error(transparent)]
    Safetensors(SafetensorsErrorKind),
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "nothing (the file is empty)".into();
    }
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(" ")
}

/// A data file (`.npy`, safetensors, or any format gzipped) that could not be used, and why.
/// IDX files have their own [`IdxError`].
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it (already part of the message, so not a `source`).
    pub kind: FileErrorKind,
}

impl FileError {
    /// An error about `path`.
    pub fn new(path: &Path, kind: impl Into<FileErrorKind>) -> Self {
        Self {
            path: path.to_path_buf(),
            kind: kind.into(),
        }
    }
}

impl From<NpyErrorKind> for FileErrorKind {
    fn from(kind: NpyErrorKind) -> Self {
        Self::Npy(kind)
    }
}

impl From<SafetensorsErrorKind> for FileErrorKind {
    fn from(kind: SafetensorsErrorKind) -> Self {
        Self::Safetensors(kind)
    }
}

/// A dataset that cannot be used as asked.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The IDX file itself is broken.
    #[error(transparent)]
    Idx(#[from] IdxError),
    /// Another data file is broken, unreadable or of no known format.
    #[error(transparent)]
    File(#[from] FileError),
    /// A row holds NaN or infinity (see [`crate::Dataset::first_non_finite_row`]).
    #[error("{}: row {row} (counting from 0) holds NaN or infinity", path.display())]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The first such row.
        row: usize,
    },
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
    /// A training sample cannot be used: a row holding NaN or infinity, found when its
    /// batch was gathered.
    #[error(transparent)]
    Data(#[from] DataError),
}
