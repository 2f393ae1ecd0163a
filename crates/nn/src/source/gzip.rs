//! Gzipped data files: decompressed once into the cache, whatever format they hold, with
//! the decompression bounded by the length the header inside declares.

use super::{layout, recognise, Format, OpenOptions};
use crate::cache::{self, Declared, Fault};
use crate::error::SafetensorsErrorKind;
use crate::error::{DataError, FileError, FileErrorKind, IdxError, IdxErrorKind, NpyErrorKind};
use std::io::Read;
use std::path::{Path, PathBuf};

/// How many bytes of header `error` says were missing, if that is all it says.
fn header_needs(error: &DataError) -> Option<u64> {
    match error {
        DataError::Idx(IdxError {
            kind: IdxErrorKind::TruncatedHeader { needed, .. },
            ..
        })
        | DataError::File(FileError {
            kind:
                FileErrorKind::Npy(NpyErrorKind::TruncatedHeader { needed, .. })
                | FileErrorKind::Safetensors(SafetensorsErrorKind::TruncatedHeader { needed, .. }),
            ..
        }) => Some(*needed),
        _ => None,
    }
}

/// The length a file's header declares for the whole, if `error` (from checking it
/// against a length no file has) says so.
fn declared_len(error: &DataError) -> Option<u64> {
    match error {
        DataError::Idx(IdxError {
            kind: IdxErrorKind::LengthMismatch { expected, .. },
            ..
        })
        | DataError::File(FileError {
            kind:
                FileErrorKind::Npy(NpyErrorKind::LengthMismatch { expected, .. })
                | FileErrorKind::Safetensors(SafetensorsErrorKind::LengthMismatch { expected, .. }),
            ..
        }) => Some(*expected),
        _ => None,
    }
}

/// The decompressed copy of gzipped `path`, whatever format it holds.
pub(super) fn decompressed(path: &Path, options: &OpenOptions) -> Result<PathBuf, DataError> {
    // Checking a header against a length no file has makes every format report the
    // length it declares.
    const NO_FILE_LEN: u64 = u64::MAX;
    let declare = |reader: &mut dyn Read| -> Result<Declared, Fault<DataError>> {
        let mut head = Vec::new();
        let mut ended = cache::read_head(reader, &mut head, 16).map_err(Fault::Gzip)?;
        let format = recognise(&head).ok_or_else(|| {
            Fault::Format(DataError::File(FileError::new(
                path,
                FileErrorKind::Unrecognised {
                    start: head[..head.len().min(12)].to_vec(),
                },
            )))
        })?;
        loop {
            let Err(error) = layout(format, &head, NO_FILE_LEN, path, options) else {
                return Err(Fault::TrailingData {
                    expected: NO_FILE_LEN,
                });
            };
            if let Some(len) = declared_len(&error) {
                return Ok(Declared { head, len });
            }
            match header_needs(&error) {
                Some(needed) if !ended && needed > head.len() as u64 => {
                    let needed = usize::try_from(needed).unwrap_or(usize::MAX);
                    ended = cache::read_head(reader, &mut head, needed).map_err(Fault::Gzip)?;
                }
                // The stream ended inside the header, so `head` is all of it.
                Some(_) => {
                    let len = head.len() as u64;
                    return Err(Fault::Format(
                        layout(format, &head, len, path, options)
                            .err()
                            .unwrap_or(error),
                    ));
                }
                None => return Err(Fault::Format(error)),
            }
        }
    };
    let short = |head: &[u8], found: u64| {
        let format = recognise(head).unwrap_or(Format::Idx);
        match layout(format, head, found, path, options) {
            Err(error) => error,
            Ok(_) => DataError::File(FileError::new(
                path,
                FileErrorKind::TrailingData { expected: found },
            )),
        }
    };
    cache::decompressed_as(path, options.cache_dir.as_deref(), declare, short).map_err(|fault| {
        let kind = match fault {
            Fault::Format(error) => return error,
            Fault::Io(e) => FileErrorKind::Io(e),
            Fault::Gzip(e) => FileErrorKind::Gzip(e),
            Fault::Cache { path, source } => FileErrorKind::Cache { path, source },
            Fault::TrailingData { expected } => FileErrorKind::TrailingData { expected },
        };
        DataError::File(FileError::new(path, kind))
    })
}
