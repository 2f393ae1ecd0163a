//! NumPy's `.npy` format: the header read and checked before anything is trusted, and
//! arrays written.
//!
//! Layout: the magic `\x93NUMPY`, a major and a minor version byte, the header length
//! (little-endian u16 for version 1.0, u32 for 2.0 and 3.0), then the header: a Python
//! dictionary literal such as `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`,
//! padded with spaces and a newline. The data follows, in C order for the arrays read
//! here. Version 3.0 only allows UTF-8 in the header, which changes nothing for the keys
//! read here.
//!
//! Dtypes read: `<f4` and `<f8` (little-endian f32 and f64), `>f4` and `>f8` (their
//! big-endian forms, byte-swapped when read: the swap costs nothing beside the copy into
//! a batch), and `|u1` (u8, which a dataset scales by 1/255 like IDX images).

use crate::error::NpyErrorKind;
use dict::{Dict, Literal};

mod dict;

/// The first six bytes of every `.npy` file.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Longest header read, in bytes. NumPy itself refuses headers over 10000 bytes unless
/// told otherwise; only structured dtypes, which are not read here, come near that.
pub const MAX_HEADER_LEN: u64 = 1 << 20;

/// An element type this reader takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NpyDtype {
    /// `|u1`: unsigned byte.
    U8,
    /// `<f4`: little-endian f32.
    F32Le,
    /// `>f4`: big-endian f32.
    F32Be,
    /// `<f8`: little-endian f64.
    F64Le,
    /// `>f8`: big-endian f64.
    F64Be,
}

impl NpyDtype {
    /// The type for a `descr` string; u8 takes any byte-order mark, as it has no order.
    pub fn from_descr(descr: &str) -> Option<Self> {
        Some(match descr {
            "|u1" | "<u1" | ">u1" | "=u1" | "u1" => Self::U8,
            "<f4" => Self::F32Le,
            ">f4" => Self::F32Be,
            "<f8" => Self::F64Le,
            ">f8" => Self::F64Be,
            _ => return None,
        })
    }

    /// The `descr` string NumPy writes for this type.
    pub fn descr(self) -> &'static str {
        match self {
            Self::U8 => "|u1",
            Self::F32Le => "<f4",
            Self::F32Be => ">f4",
            Self::F64Le => "<f8",
            Self::F64Be => ">f8",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::F32Le | Self::F32Be => 4,
            Self::F64Le | Self::F64Be => 8,
        }
    }
}

/// A validated `.npy` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// Format version, `(major, minor)`.
    pub version: (u8, u8),
    /// Element type.
    pub dtype: NpyDtype,
    /// Dimensions, outermost first; empty for a scalar.
    pub shape: Vec<usize>,
    /// Where the data starts: the magic, version, length field and header.
    pub data_offset: usize,
    /// Bytes of data the shape and dtype imply (already checked not to overflow).
    pub data_len: u64,
}

impl NpyHeader {
    /// Parses and checks the header at the start of `bytes` (the file, or at least its
    /// header): the magic, the version, a header length no longer than
    /// [`MAX_HEADER_LEN`], the dictionary with its three keys, C order, a dtype read here,
    /// and a shape whose size in bytes does not overflow. The data's length is checked
    /// separately, by [`NpyHeader::check_len`].
    pub fn parse(bytes: &[u8]) -> Result<Self, NpyErrorKind> {
        let truncated = |needed: usize| NpyErrorKind::TruncatedHeader {
            needed: needed as u64,
            found: bytes.len() as u64,
        };
        let start = &bytes[..bytes.len().min(MAGIC.len())];
        if start != &MAGIC[..start.len()] {
            return Err(NpyErrorKind::BadMagic);
        }
        let (major, minor) = match bytes.get(6..8) {
            Some(v) => (v[0], v[1]),
            None => return Err(truncated(10)),
        };
        let field = match (major, minor) {
            (1, 0) => 2,
            (2, 0) | (3, 0) => 4,
            _ => return Err(NpyErrorKind::UnsupportedVersion { major, minor }),
        };
        let Some(len_bytes) = bytes.get(8..8 + field) else {
            return Err(truncated(8 + field));
        };
        let header_len = len_bytes
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        if header_len > MAX_HEADER_LEN {
            return Err(NpyErrorKind::HeaderTooLong {
                len: header_len,
                max: MAX_HEADER_LEN,
            });
        }
        let data_offset = 8 + field + header_len as usize;
        let Some(text) = bytes.get(8 + field..data_offset) else {
            return Err(truncated(data_offset));
        };
        let dict = Dict::parse(text)?;
        let bad = |reason: &str| dict::bad_header(text, reason);
        let descr = match dict.get("descr")? {
            Literal::Str(s) => s.clone(),
            Literal::Other(s) => return Err(NpyErrorKind::UnsupportedDtype { descr: s.clone() }),
            _ => return Err(bad("'descr' is not a string")),
        };
        let fortran = match dict.get("fortran_order")? {
            Literal::Bool(b) => *b,
            _ => return Err(bad("'fortran_order' is not True or False")),
        };
        let raw_shape = match dict.get("shape")? {
            Literal::Tuple(dims) => dims.clone(),
            _ => return Err(bad("'shape' is not a tuple of integers")),
        };
        if dict.entries.len() != 3 {
            return Err(bad(
                "expected exactly the keys 'descr', 'fortran_order' and 'shape'",
            ));
        }
        let dtype = NpyDtype::from_descr(&descr).ok_or_else(|| NpyErrorKind::UnsupportedDtype {
            descr: descr.clone(),
        })?;
        if fortran {
            return Err(NpyErrorKind::FortranOrder);
        }
        let overflow = || NpyErrorKind::DimensionOverflow {
            shape: raw_shape.clone(),
        };
        let shape = raw_shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| overflow()))
            .collect::<Result<Vec<usize>, _>>()?;
        let data_len = raw_shape
            .iter()
            .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d))
            .filter(|len| len.checked_add(data_offset as u64).is_some())
            .ok_or_else(overflow)?;
        Ok(Self {
            version: (major, minor),
            dtype,
            shape,
            data_offset,
            data_len,
        })
    }

    /// Number of elements, the product of the dimensions: 0 if one of them is 0, however
    /// large the others (whose product [`NpyHeader::parse`] does not bound then).
    pub fn element_count(&self) -> usize {
        if self.shape.contains(&0) {
            return 0;
        }
        self.shape.iter().product()
    }

    /// Bytes of a file holding this header and its data.
    pub fn total_len(&self) -> u64 {
        self.data_offset as u64 + self.data_len
    }

    /// Checks that a file of `file_len` bytes holds exactly this header and its data.
    pub fn check_len(&self, file_len: u64) -> Result<(), NpyErrorKind> {
        if file_len == self.total_len() {
            return Ok(());
        }
        Err(NpyErrorKind::LengthMismatch {
            shape: self.shape.clone(),
            descr: self.dtype.descr().into(),
            expected: self.total_len(),
            found: file_len,
        })
    }
}

/// The `.npy` bytes (version 1.0, or 2.0 for a header too long for it) of a C-ordered
/// array of `descr` elements of `shape`, with `data` already in that type's byte order.
///
/// # Panics
/// If `data` is not as long as `shape` and `descr` say (for the dtypes of [`NpyDtype`];
/// others are written as given).
pub fn encode(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    if let Some(dtype) = NpyDtype::from_descr(descr) {
        assert_eq!(
            Some(data.len()),
            shape
                .iter()
                .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d)),
            "npy: shape does not match the data"
        );
    }
    let mut out = header(descr, shape);
    out.extend_from_slice(data);
    out
}

/// The header alone of [`encode`]'s output: what goes before the data of a C-ordered
/// array of `descr` elements of `shape`, for writers that stream the data after it.
pub fn header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + header length (2, or 4 from version 2.0) + dict, padded
    // with spaces to a multiple of 64 and ended by a newline, as the format asks.
    let padded = |field: usize| {
        let unpadded = 8 + field + dict.len() + 1;
        (unpadded, (64 - unpadded % 64) % 64)
    };
    let (version, field) = match padded(2) {
        (unpadded, padding) if unpadded - 10 + padding <= usize::from(u16::MAX) => (1u8, 2),
        _ => (2, 4),
    };
    let (unpadded, padding) = padded(field);
    let header_len = dict.len() + padding + 1;
    let mut out = Vec::with_capacity(unpadded + padding);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    let len_bytes = (header_len as u32).to_le_bytes();
    out.extend_from_slice(&len_bytes[..field]);
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', padding));
    out.push(b'\n');
    out
}

/// The `.npy` bytes of a C-ordered little-endian f32 array of `shape`, which
/// `numpy.load` reads.
///
/// # Panics
/// If `values.len()` is not the product of `shape`.
pub fn encode_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    encode(NpyDtype::F32Le.descr(), shape, &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_header_is_aligned_and_reads_back() {
        let bytes = encode_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let text = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(text.contains("'shape': (2, 3)") && text.ends_with('\n'));
        let header = NpyHeader::parse(&bytes).unwrap();
        assert_eq!(header.shape, vec![2, 3]);
        assert_eq!(header.dtype, NpyDtype::F32Le);
        assert_eq!(header.data_offset, 10 + header_len);
        assert_eq!(header.total_len(), bytes.len() as u64);
        header.check_len(bytes.len() as u64).unwrap();
        assert_eq!(&bytes[header.data_offset..][..4], &1.0f32.to_le_bytes());
        let vector = encode("|u1", &[3], &[1, 2, 3]);
        assert_eq!(NpyHeader::parse(&vector).unwrap().shape, vec![3]);
    }

    /// A file with the header text `dict`, version 1.0, and no data.
    fn with_header(dict: &str) -> Vec<u8> {
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        bytes.extend_from_slice(dict.as_bytes());
        bytes
    }

    #[test]
    fn headers_as_other_writers_spell_them_are_read() {
        for dict in [
            "{'descr': '<f8', 'fortran_order': False, 'shape': (4, 5), }",
            "{\"shape\":(4,5),\"fortran_order\":False,\"descr\":\"<f8\"}",
            "{'descr':'<f8','fortran_order':False,'shape':(4L, 5L)}\n",
        ] {
            let header = NpyHeader::parse(&with_header(dict)).unwrap();
            assert_eq!(
                (header.dtype, &header.shape[..]),
                (NpyDtype::F64Le, &[4, 5][..]),
                "{dict}"
            );
        }
        let scalar = with_header("{'descr': '>f4', 'fortran_order': False, 'shape': ()}");
        let header = NpyHeader::parse(&scalar).unwrap();
        assert_eq!((header.element_count(), header.data_len), (1, 4));
    }

    #[test]
    fn every_broken_header_is_its_own_error() {
        let parse = |dict: &str| NpyHeader::parse(&with_header(dict)).unwrap_err();
        let good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        assert!(matches!(
            parse(&good.replace("False", "True")),
            NpyErrorKind::FortranOrder
        ));
        assert!(matches!(
            parse(&good.replace("<f4", "<i8")),
            NpyErrorKind::UnsupportedDtype { descr } if descr == "<i8"
        ));
        assert!(matches!(
            parse(&good.replace("'<f4'", "[('a', '<f4')]")),
            NpyErrorKind::UnsupportedDtype { .. }
        ));
        assert!(matches!(
            parse(&good.replace("(2, 3)", "(99999999999999999999999, 3)")),
            NpyErrorKind::DimensionOverflow { .. }
        ));
        assert!(matches!(
            parse(&good.replace("(2, 3)", "(4294967296, 4294967296)")),
            NpyErrorKind::DimensionOverflow { .. }
        ));
        for broken in [
            good.replace("(2, 3)", "(2, -3)"),
            good.replace("'shape': (2, 3), ", ""),
            good.replace("}", ""),
            good.replace("False", "0"),
            format!("{good} trailing"),
            good.replace("'descr'", "'descr' 'x'"),
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}".into(),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}".into(),
            "".into(),
        ] {
            assert!(
                matches!(parse(&broken), NpyErrorKind::BadHeader { .. }),
                "{broken}"
            );
        }
        let file = with_header(good);
        assert!(matches!(
            NpyHeader::parse(&file[..file.len() - 1]).unwrap_err(),
            NpyErrorKind::TruncatedHeader { .. }
        ));
        assert!(matches!(
            NpyHeader::parse(&file[..7]).unwrap_err(),
            NpyErrorKind::TruncatedHeader { .. }
        ));
        assert!(matches!(
            NpyHeader::parse(b"\x93NUMPX\x01\x00").unwrap_err(),
            NpyErrorKind::BadMagic
        ));
        let mut v4 = file.clone();
        v4[6] = 4;
        assert!(matches!(
            NpyHeader::parse(&v4).unwrap_err(),
            NpyErrorKind::UnsupportedVersion { major: 4, minor: 0 }
        ));
        let huge = b"\x93NUMPY\x02\x00\xff\xff\xff\xff{".to_vec();
        assert!(matches!(
            NpyHeader::parse(&huge).unwrap_err(),
            NpyErrorKind::HeaderTooLong { .. }
        ));
        let header = NpyHeader::parse(&file).unwrap();
        assert!(matches!(
            header.check_len(file.len() as u64),
            Err(NpyErrorKind::LengthMismatch { expected, .. }) if expected == file.len() as u64 + 24
        ));
    }
}
