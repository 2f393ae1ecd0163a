//! Gzipped data files decompressed once into a cache directory, then reused.
//!
//! The cached copy's name carries a hash of the source's path, length and modification
//! time, so a changed source gets a fresh copy. A copy is written under a temporary name
//! in the cache directory, flushed, and renamed into place: a crash leaves either no copy
//! or a complete one, never a half-written file under the final name. Writers racing for
//! the same copy (threads or processes) each write their own temporary file, and every
//! rename puts the same bytes in place. Decompression stops as soon as the output
//! outgrows what the header inside declares (IDX, `.npy` or safetensors), so a gzip bomb
//! or a lying header costs no more disk than the real file.

use crate::error::{IdxError, IdxErrorKind};
use crate::idx::IdxHeader;
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Whether the file starts with the gzip magic bytes `1f 8b`.
pub fn is_gzip(path: &Path) -> std::io::Result<bool> {
    let mut magic = [0u8; 2];
    let mut file = File::open(path)?;
    let mut read = 0;
    while read < 2 {
        match file.read(&mut magic[read..])? {
            0 => return Ok(false),
            n => read += n,
        }
    }
    Ok(magic == [0x1f, 0x8b])
}

/// The default cache directory: `$XDG_CACHE_HOME/sae` or `~/.cache/sae`, else a
/// directory under the system's temporary directory.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("sae");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache").join("sae");
    }
    std::env::temp_dir().join("sae-cache")
}

fn cache_name(source: &Path, meta: &std::fs::Metadata) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::fs::canonicalize(source)
        .unwrap_or_else(|_| source.to_path_buf())
        .hash(&mut hasher);
    meta.len().hash(&mut hasher);
    if let Ok(modified) = meta.modified() {
        modified.hash(&mut hasher);
    }
    let stem = source
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".gz").to_string())
        .unwrap_or_else(|| "data".into());
    format!("{stem}.{:016x}", hasher.finish())
}

/// The path of the decompressed copy of gzipped `source`, an IDX file, creating it if
/// needed.
///
/// `cache_dir` defaults to [`default_cache_dir`]. Reports on standard error when it
/// decompresses, since that takes a moment the first time.
pub fn decompressed(source: &Path, cache_dir: Option<&Path>) -> Result<PathBuf, IdxError> {
    let short = |head: &[u8], found: u64| match IdxHeader::parse(head, found) {
        Err(kind) => kind,
        Ok(_) => IdxErrorKind::TrailingData { expected: found },
    };
    decompressed_as(source, cache_dir, declare_idx, short).map_err(|fault| {
        IdxError::new(
            source,
            match fault {
                Fault::Format(kind) => kind,
                Fault::Io(e) => IdxErrorKind::Io(e),
                Fault::Gzip(e) => IdxErrorKind::Gzip(e),
                Fault::Cache { path, source } => IdxErrorKind::Cache { path, source },
                Fault::TrailingData { expected } => IdxErrorKind::TrailingData { expected },
            },
        )
    })
}

/// The IDX header at the start of a stream, and the length it declares.
fn declare_idx(reader: &mut dyn Read) -> Result<Declared, Fault<IdxErrorKind>> {
    let mut head = Vec::new();
    read_head(reader, &mut head, 4).map_err(Fault::Gzip)?;
    let rank = head.get(3).map_or(0, |&r| usize::from(r));
    read_head(reader, &mut head, 4 + 4 * rank).map_err(Fault::Gzip)?;
    match IdxHeader::parse(&head, u64::MAX) {
        Err(IdxErrorKind::LengthMismatch { expected, .. }) => Ok(Declared {
            head,
            len: expected,
        }),
        // The stream ended inside the header: it is all in `head`.
        Err(IdxErrorKind::TruncatedHeader { needed, .. }) => {
            Err(Fault::Format(IdxErrorKind::TruncatedHeader {
                needed,
                found: head.len() as u64,
            }))
        }
        Err(other) => Err(Fault::Format(other)),
        // No header makes a file of u64::MAX bytes; were there one, too long it is.
        Ok(_) => Err(Fault::TrailingData { expected: u64::MAX }),
    }
}

/// What a decompressed stream declares about itself: the first bytes, which hold its
/// header, and the exact length in bytes that header gives the whole stream.
pub(crate) struct Declared {
    /// The bytes read so far, from the start of the stream.
    pub(crate) head: Vec<u8>,
    /// The length the stream must have.
    pub(crate) len: u64,
}

/// Why a decompression failed; `E` describes what is wrong inside, in the terms of the
/// decompressed file's own format.
pub(crate) enum Fault<E> {
    /// The decompressed file's header is broken, or its data is shorter than declared.
    Format(E),
    /// The source could not be read.
    Io(std::io::Error),
    /// The gzip stream is corrupt or truncated.
    Gzip(std::io::Error),
    /// The copy could not be written.
    Cache {
        /// Where the copy was to go.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The data goes on past the declared length.
    TrailingData {
        /// The declared length.
        expected: u64,
    },
}

/// The path of the decompressed copy of gzipped `source`, creating it if needed, for a
/// file of any format: `declare` reads the header from the start of the decompressed
/// stream and says how long the whole must be, and `short` describes a stream that ends
/// early, given its header and the bytes it has. Decompression stops one byte past the
/// declared length, so a lying header or a gzip bomb costs no more than the honest file.
pub(crate) fn decompressed_as<E>(
    source: &Path,
    cache_dir: Option<&Path>,
    declare: impl FnOnce(&mut dyn Read) -> Result<Declared, Fault<E>>,
    short: impl FnOnce(&[u8], u64) -> E,
) -> Result<PathBuf, Fault<E>> {
    let meta = std::fs::metadata(source).map_err(Fault::Io)?;
    let dir = cache_dir.map_or_else(default_cache_dir, Path::to_path_buf);
    let target = dir.join(cache_name(source, &meta));
    if target.is_file() {
        return Ok(target);
    }
    let cache_error = |source_err| Fault::Cache {
        path: target.clone(),
        source: source_err,
    };
    std::fs::create_dir_all(&dir).map_err(cache_error)?;
    eprintln!(
        "decompressing {} into {}",
        source.display(),
        target.display()
    );
    // A name of its own for each decompression, threads of one process included: with
    // the process id alone, two threads opening the same file at once wrote one
    // temporary file, and the second to finish found it already renamed away.
    static DECOMPRESSIONS: AtomicU64 = AtomicU64::new(0);
    let temp = dir.join(format!(
        ".{}.partial-{}-{}",
        target.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        DECOMPRESSIONS.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_decompressed(source, &temp, declare, short);
    match result {
        Ok(()) => {
            if let Err(e) = std::fs::rename(&temp, &target) {
                let _ = std::fs::remove_file(&temp);
                // Where a finished copy may not be replaced (a mapped file on some
                // systems), another writer's copy in place is as good as this one.
                if !target.is_file() {
                    return Err(cache_error(e));
                }
            }
        }
        Err(fault) => {
            let _ = std::fs::remove_file(&temp);
            return Err(fault);
        }
    }
    Ok(target)
}

fn write_decompressed<E>(
    source: &Path,
    temp: &Path,
    declare: impl FnOnce(&mut dyn Read) -> Result<Declared, Fault<E>>,
    short: impl FnOnce(&[u8], u64) -> E,
) -> Result<(), Fault<E>> {
    let input = File::open(source).map_err(Fault::Io)?;
    let mut decoder = MultiGzDecoder::new(BufReader::new(input));
    let cache_err = |e: std::io::Error| Fault::Cache {
        path: temp.to_path_buf(),
        source: e,
    };
    let mut out = File::create(temp).map_err(cache_err)?;

    // Read the header first to learn how long the data can honestly be.
    let Declared { head, len: limit } = declare(&mut decoder)?;
    let head_len = head.len() as u64;
    if head_len > limit {
        return Err(Fault::TrailingData { expected: limit });
    }
    out.write_all(&head).map_err(cache_err)?;
    // One byte past the limit is enough to tell that there is too much.
    let mut limited = (&mut decoder).take(limit - head_len + 1);
    let copied = std::io::copy(&mut limited, &mut out).map_err(Fault::Gzip)?;
    let total = head_len + copied;
    if total > limit {
        return Err(Fault::TrailingData { expected: limit });
    }
    if total < limit {
        return Err(Fault::Format(short(&head, total)));
    }
    out.sync_all().map_err(cache_err)?;
    Ok(())
}

/// Reads from `reader` until `head` holds `len` bytes or the stream ends; returns
/// whether it ended. A gzip error is returned as it is.
pub(crate) fn read_head(
    reader: &mut dyn Read,
    head: &mut Vec<u8>,
    len: usize,
) -> std::io::Result<bool> {
    let mut filled = head.len();
    if filled >= len {
        return Ok(false);
    }
    head.resize(len, 0);
    while filled < len {
        match reader.read(&mut head[filled..]) {
            Ok(0) => {
                head.truncate(filled);
                return Ok(true);
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                head.truncate(filled);
                return Err(e);
            }
        }
    }
    Ok(false)
}
