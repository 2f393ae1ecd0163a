//! Data files of any format read here, recognised by their first bytes (never by their
//! name), memory-mapped, and held the way their rows are cheapest to gather.
//!
//! - gzip (`1f 8b`): decompressed once into the cache (see [`crate::cache`]), then
//!   recognised by what is inside.
//! - `.npy` (`\x93NUMPY`, see [`crate::npy`]).
//! - safetensors (a little-endian header length, then `{`; see [`crate::tensors`]).
//! - IDX (`00 00 TYPE RANK`, see [`crate::idx`]).
//!
//! How the values are held, by element type:
//! - u8 (IDX, npy `|u1`): viewed in the map, scaled by [`U8_SCALE`] while a batch is
//!   gathered ([`Scaling::DivideBy255`]).
//! - little-endian f32 (npy `<f4`, safetensors F32): viewed in the map as `&[f32]`.
//! - big-endian f32 (IDX f32, npy `>f4`): viewed in the map as words, byte-swapped while a
//!   batch is gathered.
//! - anything else (i8, i16, i32, f64): converted to f32 once, into memory.
//!
//! So opening reads headers only, and a matrix larger than memory streams through the
//! page cache as batches are gathered. Everything but u8 is used as stored
//! ([`Scaling::Identity`]).

use crate::error::{DataError, FileError, FileErrorKind, IdxError};
use crate::idx::{ElementType, IdxHeader};
use crate::npy::{NpyDtype, NpyHeader};
use crate::tensors::{self, TensorsHeader};
use memmap2::Mmap;
use std::ops::Range;
use std::path::{Path, PathBuf};

mod gzip;
mod storage;

pub use storage::Residency;
pub(crate) use storage::{Opened, Storage, Values};

/// Scale applied to u8 samples: pixels `0..=255` become `0.0..=1.0`.
pub const U8_SCALE: f32 = 1.0 / 255.0;

/// How stored values become the f32 values a model sees: a property of the source's
/// element type, applied while a batch is gathered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scaling {
    /// Used as stored (floats, and integers wider than a byte).
    Identity,
    /// u8 values `0..=255` become `0.0..=1.0`: multiplied by [`U8_SCALE`], as the
    /// reference divides pixels by 255.
    DivideBy255,
}

impl Scaling {
    /// The factor applied to each stored value.
    pub fn factor(self) -> f32 {
        match self {
            Self::Identity => 1.0,
            Self::DivideBy255 => U8_SCALE,
        }
    }
}

/// A data file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// IDX, the MNIST format.
    Idx,
    /// NumPy's `.npy`.
    Npy,
    /// safetensors.
    Safetensors,
}

impl Format {
    /// `IDX`, `.npy` or `safetensors`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idx => "IDX",
            Self::Npy => ".npy",
            Self::Safetensors => "safetensors",
        }
    }
}

/// What an open data file holds, as its header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// The format (of the decompressed data, if gzipped).
    pub format: Format,
    /// Whether the file is gzipped.
    pub gzipped: bool,
    /// The element type, as the format names it (`u8`, `<f4`, `F32`).
    pub dtype: String,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// The tensor read, for safetensors.
    pub tensor: Option<String>,
    /// How stored values become f32.
    pub scaling: Scaling,
    /// Whether the values are read in place in the memory map (rather than converted
    /// once into memory).
    pub mapped: bool,
}

impl Description {
    /// Number of elements, the product of the dimensions: 0 if one of them is 0, however
    /// large the others (which the header's checks do not bound then).
    pub fn element_count(&self) -> usize {
        if self.shape.contains(&0) {
            return 0;
        }
        self.shape.iter().product()
    }

    /// Values per sample, the product of the dimensions after the first (1 for a vector),
    /// if it fits in a `usize`: with no samples, it need not.
    pub fn features(&self) -> Option<usize> {
        self.shape
            .iter()
            .skip(1)
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }
}

/// How to open a data file.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Where gzipped files are decompressed (default:
    /// [`crate::cache::default_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// The safetensors tensor holding the rows (default: the only F32 or F64 tensor of
    /// rank 2 or more). Other formats hold one array and ignore it.
    pub tensor: Option<String>,
}

/// An element type as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Element {
    U8,
    I8,
    I16Be,
    I32Be,
    F32Le,
    F32Be,
    F64Le,
    F64Be,
}

/// Where a file's array lies and what it holds, from its header alone.
struct Layout {
    element: Element,
    data: Range<usize>,
    shape: Vec<usize>,
    dtype: String,
    tensor: Option<String>,
}

/// Opens and validates the data file `path`: a regular file, gzipped or not, of a format
/// recognised by its first bytes, whose header is consistent and whose length is exactly
/// what the header says. Only the headers are read.
pub(crate) fn open(path: &Path, options: &OpenOptions) -> Result<Opened, DataError> {
    let file_error = |kind: FileErrorKind| DataError::File(FileError::new(path, kind));
    let meta = std::fs::metadata(path).map_err(|e| file_error(FileErrorKind::Io(e)))?;
    if !meta.is_file() {
        return Err(file_error(FileErrorKind::NotAFile));
    }
    let mut map = map_file(path).map_err(|e| file_error(FileErrorKind::Io(e)))?;
    let gzipped = map.starts_with(&[0x1f, 0x8b]);
    if gzipped {
        let plain = gzip::decompressed(path, options)?;
        map = map_file(&plain).map_err(|e| file_error(FileErrorKind::Io(e)))?;
    }
    let format = recognise(&map).ok_or_else(|| {
        file_error(FileErrorKind::Unrecognised {
            start: map[..map.len().min(12)].to_vec(),
        })
    })?;
    let layout = layout(format, &map, map.len() as u64, path, options)?;
    let description = Description {
        format,
        gzipped,
        dtype: layout.dtype.clone(),
        shape: layout.shape.clone(),
        tensor: layout.tensor.clone(),
        scaling: match layout.element {
            Element::U8 => Scaling::DivideBy255,
            _ => Scaling::Identity,
        },
        mapped: storage::reads_in_place(layout.element, &map[layout.data.clone()]),
    };
    Ok(Opened {
        map,
        layout,
        description,
    })
}

fn map_file(path: &Path) -> std::io::Result<Mmap> {
    let file = std::fs::File::open(path)?;
    // SAFETY: the map is read-only and only ever read through `&[u8]`. Mapping is
    // undefined behaviour if another process truncates or rewrites the file while it is
    // mapped; this program never writes an input, and the cache writes a new file and
    // renames it into place, so the mapped inode is never modified by us.
    unsafe { Mmap::map(&file) }
}

/// The format `bytes`, a file's first bytes (all of them, or at least 12), belong to.
///
/// An IDX header can begin like a safetensors one (`00 00`, then a byte that is an IDX
/// type code and a non-zero rank, and `{` at byte 8) only if its first dimension is zero,
/// since a safetensors header length under 4 GiB has four zero bytes there: that tells
/// them apart.
pub fn recognise(bytes: &[u8]) -> Option<Format> {
    let start = &bytes[..bytes.len().min(crate::npy::MAGIC.len())];
    if !start.is_empty() && crate::npy::MAGIC.starts_with(start) {
        return Some(Format::Npy);
    }
    let zeros = bytes.iter().take(2).all(|&b| b == 0);
    let idx_code = zeros
        && bytes
            .get(2)
            .copied()
            .and_then(ElementType::from_code)
            .is_some()
        && bytes.get(3).is_some_and(|&rank| rank > 0);
    if tensors::looks_like(bytes) && (!idx_code || bytes[4..8] == [0; 4]) {
        return Some(Format::Safetensors);
    }
    zeros.then_some(Format::Idx)
}

/// Where `format`'s array lies in `bytes` (a file of `file_len` bytes, or at least its
/// header), after every check its header allows: errors name `path`.
fn layout(
    format: Format,
    bytes: &[u8],
    file_len: u64,
    path: &Path,
    options: &OpenOptions,
) -> Result<Layout, DataError> {
    let file_error = |kind: FileErrorKind| DataError::File(FileError::new(path, kind));
    match format {
        Format::Idx => {
            let header = IdxHeader::parse(bytes, file_len)
                .map_err(|kind| DataError::Idx(IdxError::new(path, kind)))?;
            let element = match header.element_type {
                ElementType::U8 => Element::U8,
                ElementType::I8 => Element::I8,
                ElementType::I16 => Element::I16Be,
                ElementType::I32 => Element::I32Be,
                ElementType::F32 => Element::F32Be,
                ElementType::F64 => Element::F64Be,
            };
            Ok(Layout {
                element,
                data: header.len()..file_len as usize,
                dtype: header.element_type.name().into(),
                shape: header.dims,
                tensor: None,
            })
        }
        Format::Npy => {
            let header = NpyHeader::parse(bytes).map_err(|e| file_error(e.into()))?;
            header
                .check_len(file_len)
                .map_err(|e| file_error(e.into()))?;
            let element = match header.dtype {
                NpyDtype::U8 => Element::U8,
                NpyDtype::F32Le => Element::F32Le,
                NpyDtype::F32Be => Element::F32Be,
                NpyDtype::F64Le => Element::F64Le,
                NpyDtype::F64Be => Element::F64Be,
            };
            Ok(Layout {
                element,
                data: header.data_offset..file_len as usize,
                dtype: header.dtype.descr().into(),
                shape: header.shape,
                tensor: None,
            })
        }
        Format::Safetensors => {
            let header = TensorsHeader::parse(bytes).map_err(|e| file_error(e.into()))?;
            header
                .check_len(file_len)
                .map_err(|e| file_error(e.into()))?;
            let tensor = header
                .rows_tensor(options.tensor.as_deref())
                .map_err(|e| file_error(e.into()))?;
            let element = match tensor.dtype {
                safetensors::Dtype::F64 => Element::F64Le,
                _ => Element::F32Le,
            };
            Ok(Layout {
                element,
                data: tensor.range.clone(),
                dtype: format!("{:?}", tensor.dtype),
                shape: tensor.shape.clone(),
                tensor: Some(tensor.name.clone()),
            })
        }
    }
}

/// What the data file `path` holds, from its header: any rank, nothing converted.
pub fn describe(path: &Path, options: &OpenOptions) -> Result<Description, DataError> {
    open(path, options).map(|opened| opened.description)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_apart_by_their_first_bytes() {
        let idx = crate::idx::encode(ElementType::U8, &[2, 2], &[1, 2, 3, 4]);
        assert_eq!(recognise(&idx), Some(Format::Idx));
        let npy = crate::npy::encode_f32(&[1, 1], &[1.0]);
        assert_eq!(recognise(&npy), Some(Format::Npy));
        assert_eq!(recognise(b"\x93NUM"), Some(Format::Npy));
        let mut st = 0x0108_0000u64.to_le_bytes().to_vec();
        st.push(b'{');
        // 00 00 08 01: an IDX u8 header of rank 1, but a first dimension of 0.
        assert_eq!(recognise(&st), Some(Format::Safetensors));
        st[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert_eq!(recognise(&st), Some(Format::Safetensors));
        // An IDX vector of 123s has `{` at byte 8 too.
        let braces = crate::idx::encode(ElementType::U8, &[3], b"{{{");
        assert_eq!(recognise(&braces), Some(Format::Idx));
        // Broken IDX headers are still IDX, so that their errors say what is wrong.
        assert_eq!(recognise(&[0, 0, 7, 1]), Some(Format::Idx));
        assert_eq!(recognise(&[]), Some(Format::Idx));
        assert_eq!(recognise(b"hello"), None);
        assert_eq!(recognise(&[1, 2, 8, 1, 0, 0, 0, 1]), None);
    }
}
