//! Safetensors files read as data: the header read and checked before anything is
//! trusted, and the tensor that holds the rows chosen.
//!
//! Layout: a little-endian u64 `N`, then `N` bytes of JSON mapping each tensor's name to
//! its `dtype`, `shape` and `data_offsets` (begin and end, relative to the end of the
//! header), with an optional `__metadata__` map of strings; then the tensors' data,
//! little-endian, one after the other with no gap. Every rule of the format is checked
//! here, with checked arithmetic, and the file must end exactly where the last tensor
//! does.
//!
//! Rows come from one tensor of rank 2 or more, F32 or F64 (dimension 0 counts the rows,
//! the rest are flattened into each row): the one named, or, with no name given, the only
//! such tensor in the file.

use crate::error::SafetensorsErrorKind;
use safetensors::Dtype;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Longest header read, in bytes: the limit of the `safetensors` package itself.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// Whether `start`, a file's first bytes, looks like safetensors: a header length, then
/// the opening brace of its JSON.
pub fn looks_like(start: &[u8]) -> bool {
    start.get(8) == Some(&b'{')
}

/// One tensor's entry in the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Where its data begins and ends in the file, header included.
    pub range: std::ops::Range<usize>,
}

impl TensorInfo {
    /// Whether this tensor can hold rows: F32 or F64, of rank 2 or more.
    pub fn holds_rows(&self) -> bool {
        matches!(self.dtype, Dtype::F32 | Dtype::F64) && self.shape.len() >= 2
    }

    /// `name (F32 [3, 4])`.
    pub fn describe(&self) -> String {
        format!("{} ({:?} {:?})", self.name, self.dtype, self.shape)
    }
}

/// A validated safetensors header.
#[derive(Clone, Debug)]
pub struct TensorsHeader {
    /// The tensors, in the order of their data.
    pub tensors: Vec<TensorInfo>,
    /// The `__metadata__` entries (empty if there are none).
    pub metadata: HashMap<String, String>,
    /// Where the data starts: 8 bytes of length, then the header.
    pub data_offset: usize,
    /// Bytes of data the tensors cover.
    pub data_len: u64,
}

#[derive(Deserialize)]
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

impl TensorsHeader {
    /// Parses and checks the header at the start of `bytes` (the file, or at least its
    /// header): a length no longer than [`MAX_HEADER_LEN`], valid JSON, known dtypes, and
    /// tensors whose data covers the data section without gap or overlap, each exactly as
    /// long as its shape and dtype say. The file's length is checked separately, by
    /// [`TensorsHeader::check_len`].
    pub fn parse(bytes: &[u8]) -> Result<Self, SafetensorsErrorKind> {
        let truncated = |needed: u64| SafetensorsErrorKind::TruncatedHeader {
            needed,
            found: bytes.len() as u64,
        };
        let Some(len) = bytes.get(..8) else {
            return Err(truncated(8));
        };
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
        if len > MAX_HEADER_LEN {
            return Err(SafetensorsErrorKind::HeaderTooLong {
                len,
                max: MAX_HEADER_LEN,
            });
        }
        let data_offset = 8 + len as usize;
        let Some(json) = bytes.get(8..data_offset) else {
            return Err(truncated(data_offset as u64));
        };
        let bad = |e: serde_json::Error| SafetensorsErrorKind::BadHeader(e.to_string());
        let entries: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(json).map_err(bad)?;
        let mut metadata = HashMap::new();
        let mut tensors = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            if name == "__metadata__" {
                metadata = serde_json::from_value(value).map_err(bad)?;
                continue;
            }
            let entry: Entry =
                serde_json::from_value(value).map_err(|e| SafetensorsErrorKind::BadTensor {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            tensors.push((name, entry));
        }
        tensors.sort_by_key(|(_, e)| e.data_offsets);
        let mut end = 0usize;
        let mut checked = Vec::with_capacity(tensors.len());
        for (name, entry) in tensors {
            let [begin, stop] = entry.data_offsets;
            let bad = |reason: String| SafetensorsErrorKind::BadTensor {
                name: name.clone(),
                reason,
            };
            if begin != end || stop < begin {
                return Err(bad(format!(
                    "data_offsets [{begin}, {stop}] do not start where the data before ends ({end}): a gap, an overlap or a range backwards"
                )));
            }
            let bits = entry
                .shape
                .iter()
                .try_fold(entry.dtype.bitsize(), |acc, &d| acc.checked_mul(d));
            let bytes = bits.filter(|b| b % 8 == 0).map(|b| b / 8);
            if bytes != Some(stop - begin) {
                return Err(bad(format!(
                    "shape {:?} of {:?} is {} but data_offsets [{begin}, {stop}] span {} bytes",
                    entry.shape,
                    entry.dtype,
                    bytes.map_or("more bytes than any file".into(), |b| format!("{b} bytes")),
                    stop - begin
                )));
            }
            let range = data_offset
                .checked_add(begin)
                .zip(data_offset.checked_add(stop))
                .map(|(b, e)| b..e)
                .ok_or_else(|| bad("data_offsets past any file".into()))?;
            end = stop;
            checked.push(TensorInfo {
                name,
                dtype: entry.dtype,
                shape: entry.shape,
                range,
            });
        }
        Ok(Self {
            tensors: checked,
            metadata,
            data_offset,
            data_len: end as u64,
        })
    }

    /// Bytes of a file holding this header and its data.
    pub fn total_len(&self) -> u64 {
        self.data_offset as u64 + self.data_len
    }

    /// Checks that a file of `file_len` bytes ends exactly where the last tensor does.
    pub fn check_len(&self, file_len: u64) -> Result<(), SafetensorsErrorKind> {
        if file_len == self.total_len() {
            return Ok(());
        }
        Err(SafetensorsErrorKind::LengthMismatch {
            expected: self.total_len(),
            found: file_len,
        })
    }

    /// The tensor named `name`, which must be F32 or F64; with no name, the only tensor
    /// that [holds rows](TensorInfo::holds_rows).
    pub fn rows_tensor(&self, name: Option<&str>) -> Result<&TensorInfo, SafetensorsErrorKind> {
        if let Some(name) = name {
            let tensor = self
                .tensors
                .iter()
                .find(|t| t.name == name)
                .ok_or_else(|| SafetensorsErrorKind::NoSuchTensor {
                    name: name.into(),
                    available: list(self.tensors.iter()),
                })?;
            if !matches!(tensor.dtype, Dtype::F32 | Dtype::F64) {
                return Err(SafetensorsErrorKind::NotFloat {
                    name: name.into(),
                    dtype: format!("{:?}", tensor.dtype),
                });
            }
            return Ok(tensor);
        }
        let mut candidates = self.tensors.iter().filter(|t| t.holds_rows());
        match (candidates.next(), candidates.next()) {
            (Some(only), None) => Ok(only),
            (None, _) => Err(SafetensorsErrorKind::NoRows {
                available: list(self.tensors.iter()),
            }),
            (Some(_), Some(_)) => Err(SafetensorsErrorKind::Ambiguous {
                candidates: list(self.tensors.iter().filter(|t| t.holds_rows())),
            }),
        }
    }
}

/// The `__metadata__` entries of the safetensors file `path`, read from its header alone
/// (its tensors are not checked): for telling a saved model from a data file. `Ok(None)`
/// when the file's first bytes say it is another data format (IDX, `.npy`, gzip); an
/// error when it cannot be read, is not a regular file, is of no known format, or its
/// header is not readable JSON.
pub fn read_metadata(path: &Path) -> std::io::Result<Option<HashMap<String, String>>> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(invalid("not a regular file".into()));
    }
    let mut file = std::fs::File::open(path)?;
    let mut start = Vec::new();
    (&mut file).take(16).read_to_end(&mut start)?;
    match crate::source::recognise(&start) {
        _ if start.starts_with(&[0x1f, 0x8b]) => return Ok(None),
        Some(crate::source::Format::Safetensors) => {}
        Some(_) => return Ok(None),
        None => return Err(invalid("not a data file".into())),
    }
    let len = u64::from_le_bytes(start[..8].try_into().expect("recognised: 9 bytes or more"));
    if len > MAX_HEADER_LEN || len + 8 > meta.len() {
        return Err(invalid(format!("header length {len} is absurd")));
    }
    let mut json = Vec::new();
    file.seek(SeekFrom::Start(8))?;
    file.take(len).read_to_end(&mut json)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|e| invalid(e.to_string()))?;
    match header.get("__metadata__") {
        None => Ok(Some(HashMap::new())),
        Some(entries) => serde_json::from_value(entries.clone())
            .map(Some)
            .map_err(|e| invalid(e.to_string())),
    }
}

/// The tensors described, the first few of a long list.
fn list<'a>(tensors: impl Iterator<Item = &'a TensorInfo>) -> String {
    const SHOWN: usize = 12;
    let tensors: Vec<&TensorInfo> = tensors.collect();
    let count = tensors.len();
    if count == 0 {
        return "no tensor".into();
    }
    let mut names: Vec<String> = tensors.iter().take(SHOWN).map(|t| t.describe()).collect();
    if count > SHOWN {
        names.push(format!("and {} more", count - SHOWN));
    }
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + data, 0);
        bytes
    }

    #[test]
    fn header_is_checked_and_the_rows_tensor_chosen() {
        let header = r#"{"__metadata__": {"k": "v"},
            "b": {"dtype": "F32", "shape": [3], "data_offsets": [24, 36]},
            "a": {"dtype": "F64", "shape": [1, 3], "data_offsets": [0, 24]}}"#;
        let bytes = file(header, 36);
        let parsed = TensorsHeader::parse(&bytes).unwrap();
        parsed.check_len(bytes.len() as u64).unwrap();
        assert!(parsed.check_len(bytes.len() as u64 + 1).is_err());
        assert_eq!(parsed.metadata["k"], "v");
        assert_eq!(parsed.tensors[0].name, "a");
        assert_eq!(
            parsed.tensors[0].range,
            8 + header.len()..8 + header.len() + 24
        );
        assert_eq!(parsed.rows_tensor(None).unwrap().name, "a");
        assert_eq!(parsed.rows_tensor(Some("b")).unwrap().name, "b");
        assert!(matches!(
            parsed.rows_tensor(Some("c")),
            Err(SafetensorsErrorKind::NoSuchTensor { available, .. }) if available.contains("b (F32 [3])")
        ));
    }

    #[test]
    fn lying_headers_are_refused() {
        let one = |dtype: &str, shape: &str, offsets: &str| {
            format!(
                r#"{{"x": {{"dtype": "{dtype}", "shape": {shape}, "data_offsets": {offsets}}}}}"#
            )
        };
        for (header, data) in [
            (one("F32", "[2, 2]", "[0, 12]"), 12),
            (one("F32", "[2, 2]", "[4, 20]"), 20),
            (one("F32", "[2, 2]", "[16, 0]"), 16),
            (
                one("F32", "[4294967296, 4294967296, 4294967296]", "[0, 16]"),
                16,
            ),
        ] {
            let err = TensorsHeader::parse(&file(&header, data)).unwrap_err();
            assert!(
                matches!(err, SafetensorsErrorKind::BadTensor { .. }),
                "{header}: {err}"
            );
        }
        let err = TensorsHeader::parse(&file(&one("Q7", "[2]", "[0, 2]"), 2)).unwrap_err();
        assert!(
            matches!(err, SafetensorsErrorKind::BadTensor { .. }),
            "{err}"
        );
        let err = TensorsHeader::parse(&file("{\"x\": ", 0)).unwrap_err();
        assert!(matches!(err, SafetensorsErrorKind::BadHeader(_)), "{err}");
        let absurd = [(1u64 << 60).to_le_bytes().as_slice(), b"{}"].concat();
        let err = TensorsHeader::parse(&absurd).unwrap_err();
        assert!(
            matches!(err, SafetensorsErrorKind::HeaderTooLong { .. }),
            "{err}"
        );
        let short = [100u64.to_le_bytes().as_slice(), b"{}"].concat();
        let err = TensorsHeader::parse(&short).unwrap_err();
        assert!(
            matches!(
                err,
                SafetensorsErrorKind::TruncatedHeader { needed: 108, .. }
            ),
            "{err}"
        );

        let ints = TensorsHeader::parse(&file(&one("I32", "[2, 2]", "[0, 16]"), 16)).unwrap();
        assert!(matches!(
            ints.rows_tensor(None),
            Err(SafetensorsErrorKind::NoRows { .. })
        ));
        assert!(matches!(
            ints.rows_tensor(Some("x")),
            Err(SafetensorsErrorKind::NotFloat { .. })
        ));
        let two = r#"{"a": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]},
                      "b": {"dtype": "F32", "shape": [1, 1], "data_offsets": [4, 8]}}"#;
        let two = TensorsHeader::parse(&file(two, 8)).unwrap();
        assert!(matches!(
            two.rows_tensor(None),
            Err(SafetensorsErrorKind::Ambiguous { .. })
        ));
    }
}
