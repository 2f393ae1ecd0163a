//! IDX files (the MNIST format), memory-mapped and validated before anything is trusted.
//!
//! Layout: magic `0x00 0x00 TYPE RANK`, then `RANK` big-endian u32 dimensions, then the
//! data, big-endian for multi-byte types. u8 and i8 data are viewed in place in the
//! map; multi-byte types are converted to native f32 once, on request
//! ([`IdxFile::to_f32`]), since they need a byte swap anyway.
//!
//! A gzipped file (as Debian ships them) is decompressed once into a cache directory
//! (see [`crate::cache`]) and the decompressed copy is mapped.

use crate::error::{IdxError, IdxErrorKind};
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The element type named by the third magic byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElementType {
    /// `0x08`: unsigned byte.
    U8,
    /// `0x09`: signed byte.
    I8,
    /// `0x0B`: big-endian i16.
    I16,
    /// `0x0C`: big-endian i32.
    I32,
    /// `0x0D`: big-endian f32.
    F32,
    /// `0x0E`: big-endian f64.
    F64,
}

impl ElementType {
    /// The type for an IDX type code.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x08 => Self::U8,
            0x09 => Self::I8,
            0x0B => Self::I16,
            0x0C => Self::I32,
            0x0D => Self::F32,
            0x0E => Self::F64,
            _ => return None,
        })
    }

    /// The IDX type code.
    pub fn code(self) -> u8 {
        match self {
            Self::U8 => 0x08,
            Self::I8 => 0x09,
            Self::I16 => 0x0B,
            Self::I32 => 0x0C,
            Self::F32 => 0x0D,
            Self::F64 => 0x0E,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::I16 => 2,
            Self::I32 | Self::F32 => 4,
            Self::F64 => 8,
        }
    }

    /// A lower-case name: `u8`, `i8`, `i16`, `i32`, `f32`, `f64`.
    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "u8",
            Self::I8 => "i8",
            Self::I16 => "i16",
            Self::I32 => "i32",
            Self::F32 => "f32",
            Self::F64 => "f64",
        }
    }
}

/// A validated IDX header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxHeader {
    /// Element type.
    pub element_type: ElementType,
    /// Dimensions, outermost first (e.g. `[60000, 28, 28]`).
    pub dims: Vec<usize>,
}

impl IdxHeader {
    /// Byte length of the header: 4 magic bytes and 4 per dimension.
    pub fn len(&self) -> usize {
        4 + 4 * self.dims.len()
    }

    /// Never true: a header has at least its magic bytes.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Number of elements, the product of the dimensions: 0 if one of them is 0, however
    /// large the others (whose product [`IdxHeader::parse`] does not bound then).
    pub fn element_count(&self) -> usize {
        if self.dims.contains(&0) {
            return 0;
        }
        self.dims.iter().product()
    }

    /// Parses and checks a header against the total length of the file it starts.
    ///
    /// Everything is checked before it is used: the magic, the type code, a rank of at
    /// least 1, that the dimensions' product times the element size cannot overflow, and
    /// that header plus data is exactly `file_len` bytes.
    pub fn parse(bytes: &[u8], file_len: u64) -> Result<Self, IdxErrorKind> {
        let magic = bytes.get(..4).ok_or(IdxErrorKind::TruncatedHeader {
            needed: 4,
            found: file_len,
        })?;
        if magic[0] != 0 || magic[1] != 0 {
            return Err(IdxErrorKind::BadMagic {
                found: [magic[0], magic[1]],
            });
        }
        let element_type =
            ElementType::from_code(magic[2]).ok_or(IdxErrorKind::UnknownType { code: magic[2] })?;
        let rank = usize::from(magic[3]);
        if rank == 0 {
            return Err(IdxErrorKind::ZeroRank);
        }
        let header_len = 4 + 4 * rank;
        let dim_bytes = bytes
            .get(4..header_len)
            .ok_or(IdxErrorKind::TruncatedHeader {
                needed: header_len as u64,
                found: file_len,
            })?;
        let dims: Vec<usize> = dim_bytes
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
            .collect();
        let data_len = dims
            .iter()
            .try_fold(element_type.size() as u64, |acc, &d| {
                acc.checked_mul(d as u64)
            })
            .and_then(|n| n.checked_add(header_len as u64))
            .ok_or_else(|| IdxErrorKind::DimensionOverflow { dims: dims.clone() })?;
        if data_len != file_len {
            return Err(IdxErrorKind::LengthMismatch {
                dims,
                element_type: element_type.name(),
                expected: data_len,
                found: file_len,
            });
        }
        Ok(Self { element_type, dims })
    }
}

/// An open, validated IDX file whose data is memory-mapped.
#[derive(Debug)]
pub struct IdxFile {
    path: PathBuf,
    header: IdxHeader,
    map: Mmap,
}

impl IdxFile {
    /// Opens an IDX file; a gzipped one (by its magic bytes) is first decompressed into
    /// `cache_dir` (see [`crate::cache::decompressed`]), or into the default cache.
    pub fn open(path: &Path) -> Result<Self, IdxError> {
        Self::open_with_cache(path, None)
    }

    /// As [`IdxFile::open`], with an explicit cache directory for gzipped input.
    pub fn open_with_cache(path: &Path, cache_dir: Option<&Path>) -> Result<Self, IdxError> {
        let fail = |kind| IdxError::new(path, kind);
        let meta = std::fs::metadata(path).map_err(|e| fail(IdxErrorKind::Io(e)))?;
        if !meta.is_file() {
            return Err(fail(IdxErrorKind::NotAFile));
        }
        if crate::cache::is_gzip(path).map_err(|e| fail(IdxErrorKind::Io(e)))? {
            let plain = crate::cache::decompressed(path, cache_dir)?;
            return Self::open_plain(&plain).map_err(|e| IdxError::new(path, e.kind));
        }
        Self::open_plain(path)
    }

    /// Opens an uncompressed IDX file.
    fn open_plain(path: &Path) -> Result<Self, IdxError> {
        let fail = |kind| IdxError::new(path, kind);
        let file = File::open(path).map_err(|e| fail(IdxErrorKind::Io(e)))?;
        let len = file
            .metadata()
            .map_err(|e| fail(IdxErrorKind::Io(e)))?
            .len();
        // SAFETY: the map is read-only and only ever read through `&[u8]`. Mapping is
        // undefined behaviour if another process truncates or rewrites the file while it
        // is mapped; this program never writes an input, and the cache writes a new file
        // and renames it into place, so the mapped inode is never modified by us.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| fail(IdxErrorKind::Io(e)))?;
        if map.len() as u64 != len {
            return Err(fail(IdxErrorKind::LengthMismatch {
                dims: vec![],
                element_type: "?",
                expected: len,
                found: map.len() as u64,
            }));
        }
        let header = IdxHeader::parse(&map, len).map_err(fail)?;
        Ok(Self {
            path: path.to_path_buf(),
            header,
            map,
        })
    }

    /// The path this file was opened from (the decompressed copy for gzipped input).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The validated header.
    pub fn header(&self) -> &IdxHeader {
        &self.header
    }

    /// Dimensions, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.header.dims
    }

    /// Element type.
    pub fn element_type(&self) -> ElementType {
        self.header.element_type
    }

    /// The raw data bytes after the header.
    pub fn data_bytes(&self) -> &[u8] {
        &self.map[self.header.len()..]
    }

    /// The data viewed in place, if the elements are u8.
    pub fn as_u8(&self) -> Option<&[u8]> {
        (self.element_type() == ElementType::U8).then(|| self.data_bytes())
    }

    /// The data viewed in place, if the elements are i8.
    pub fn as_i8(&self) -> Option<&[i8]> {
        (self.element_type() == ElementType::I8).then(|| bytemuck::cast_slice(self.data_bytes()))
    }

    /// Every element converted to f32 (exact for all types but large i32 and f64).
    pub fn to_f32(&self) -> Vec<f32> {
        let bytes = self.data_bytes();
        match self.element_type() {
            ElementType::U8 => bytes.iter().map(|&b| f32::from(b)).collect(),
            ElementType::I8 => bytemuck::cast_slice::<u8, i8>(bytes)
                .iter()
                .map(|&b| f32::from(b))
                .collect(),
            ElementType::I16 => bytes
                .chunks_exact(2)
                .map(|c| f32::from(i16::from_be_bytes([c[0], c[1]])))
                .collect(),
            ElementType::I32 => bytes
                .chunks_exact(4)
                .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
            ElementType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            ElementType::F64 => bytes
                .chunks_exact(8)
                .map(|c| f64::from_be_bytes(c.try_into().expect("chunk of 8")) as f32)
                .collect(),
        }
    }
}

/// Encodes an IDX file in memory: the header for `dims` and `element_type`, then `data`
/// (already big-endian for multi-byte types).
///
/// # Panics
/// If `dims` has more than 255 entries or one exceeds `u32::MAX`.
pub fn encode(element_type: ElementType, dims: &[usize], data: &[u8]) -> Vec<u8> {
    let rank = u8::try_from(dims.len()).expect("IDX rank fits in a byte");
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&[0, 0, element_type.code(), rank]);
    for &d in dims {
        out.extend_from_slice(
            &u32::try_from(d)
                .expect("IDX dimension fits in u32")
                .to_be_bytes(),
        );
    }
    out.extend_from_slice(data);
    out
}

/// Encodes f32 values as a big-endian IDX f32 file.
pub fn encode_f32(dims: &[usize], values: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    encode(ElementType::F32, dims, &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_counts() {
        let bytes = encode(ElementType::U8, &[3, 2, 2], &[7; 12]);
        let header = IdxHeader::parse(&bytes, bytes.len() as u64).unwrap();
        assert_eq!(header.dims, vec![3, 2, 2]);
        assert_eq!(header.element_count(), 12);
        assert_eq!(header.len(), 16);
    }

    #[test]
    fn every_broken_header_is_a_distinct_error() {
        let ok = encode(ElementType::I16, &[2, 3], &[0; 12]);
        let parse = |b: &[u8]| IdxHeader::parse(b, b.len() as u64).unwrap_err();
        assert!(matches!(
            parse(&ok[..3]),
            IdxErrorKind::TruncatedHeader { .. }
        ));
        assert!(matches!(
            parse(&ok[..9]),
            IdxErrorKind::TruncatedHeader { .. }
        ));
        assert!(matches!(
            parse(&ok[..ok.len() - 1]),
            IdxErrorKind::LengthMismatch { .. }
        ));
        let mut trailing = ok.clone();
        trailing.push(0);
        assert!(matches!(
            parse(&trailing),
            IdxErrorKind::LengthMismatch { .. }
        ));
        assert!(matches!(
            parse(&[1, 0, 8, 1, 0, 0, 0, 0]),
            IdxErrorKind::BadMagic { .. }
        ));
        assert!(matches!(
            parse(&[0, 0, 7, 1, 0, 0, 0, 0]),
            IdxErrorKind::UnknownType { code: 7 }
        ));
        assert!(matches!(parse(&[0, 0, 8, 0]), IdxErrorKind::ZeroRank));
        let huge = [
            0, 0, 0x0E, 4, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
            255, 255,
        ];
        assert!(matches!(
            parse(&huge),
            IdxErrorKind::DimensionOverflow { .. }
        ));
    }
}
