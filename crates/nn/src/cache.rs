//! Gzipped IDX files decompressed once into a cache directory, then reused.
//!
//! The cached copy's name carries a hash of the source's path, length and modification
//! time, so a changed source gets a fresh copy. A copy is written under a temporary name
//! in the cache directory, flushed, and renamed into place: a crash leaves either no copy
//! or a complete one, never a half-written file under the final name. Writers racing for
//! the same copy (threads or processes) each write their own temporary file, and every
//! rename puts the same bytes in place. Decompression stops as soon as the output
//! outgrows what the IDX header inside declares, so a gzip bomb or a lying header costs
//! no more disk than the real file.

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

/// The path of the decompressed copy of gzipped `source`, creating it if needed.
///
/// `cache_dir` defaults to [`default_cache_dir`]. Reports on standard error when it
/// decompresses, since that takes a moment the first time.
pub fn decompressed(source: &Path, cache_dir: Option<&Path>) -> Result<PathBuf, IdxError> {
    let fail = |kind| IdxError::new(source, kind);
    let meta = std::fs::metadata(source).map_err(|e| fail(IdxErrorKind::Io(e)))?;
    let dir = cache_dir.map_or_else(default_cache_dir, Path::to_path_buf);
    let target = dir.join(cache_name(source, &meta));
    if target.is_file() {
        return Ok(target);
    }
    let cache_error = |source_err| {
        fail(IdxErrorKind::Cache {
            path: target.clone(),
            source: source_err,
        })
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
    let result = write_decompressed(source, &temp);
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
        Err(kind) => {
            let _ = std::fs::remove_file(&temp);
            return Err(fail(kind));
        }
    }
    Ok(target)
}

fn write_decompressed(source: &Path, temp: &Path) -> Result<(), IdxErrorKind> {
    let input = File::open(source)?;
    let mut decoder = MultiGzDecoder::new(BufReader::new(input));
    let cache_err = |e: std::io::Error| IdxErrorKind::Cache {
        path: temp.to_path_buf(),
        source: e,
    };
    let mut out = File::create(temp).map_err(cache_err)?;

    // Read the IDX header first to learn how long the data can honestly be.
    let mut head = vec![0u8; 4];
    let got = read_full(&mut decoder, &mut head)?;
    if got < 4 {
        return Err(IdxErrorKind::TruncatedHeader {
            needed: 4,
            found: got as u64,
        });
    }
    let rank = usize::from(head[3]);
    head.resize(4 + 4 * rank, 0);
    let got = read_full(&mut decoder, &mut head[4..])?;
    if got < 4 * rank {
        return Err(IdxErrorKind::TruncatedHeader {
            needed: head.len() as u64,
            found: (4 + got) as u64,
        });
    }
    let (dims, limit) = match IdxHeader::parse(&head, u64::MAX) {
        Err(IdxErrorKind::LengthMismatch { dims, expected, .. }) => (dims, expected),
        Err(other) => return Err(other),
        Ok(_) => unreachable!("no header is u64::MAX bytes long"),
    };
    out.write_all(&head).map_err(cache_err)?;
    // One byte past the limit is enough to tell that there is too much.
    let mut limited = (&mut decoder).take(limit - head.len() as u64 + 1);
    let copied = std::io::copy(&mut limited, &mut out).map_err(IdxErrorKind::Gzip)?;
    let total = head.len() as u64 + copied;
    if total > limit {
        return Err(IdxErrorKind::TrailingData { expected: limit });
    }
    if total < limit {
        return Err(IdxErrorKind::LengthMismatch {
            dims,
            element_type: crate::idx::ElementType::from_code(head[2]).map_or("?", |t| t.name()),
            expected: limit,
            found: total,
        });
    }
    out.sync_all().map_err(cache_err)?;
    Ok(())
}

/// Reads until `buf` is full or the stream ends; returns the bytes read. A gzip error,
/// or a stream that ends before the 4 magic bytes, is an error.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize, IdxErrorKind> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(IdxErrorKind::Gzip(e)),
        }
    }
    Ok(filled)
}
