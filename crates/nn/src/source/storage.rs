//! How an opened file's values are held: read in place in the memory map where their
//! type and alignment allow it, else converted to f32 once, into memory.

use super::{Description, Element, Layout, Scaling};
use memmap2::{Advice, Mmap, UncheckedAdvice};
use std::ops::Range;

/// What the reader is about to do with part of a mapped file, told to the kernel so that
/// a file larger than memory streams through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residency {
    /// Read soon: start reading it from disk now, in the background.
    Soon,
    /// Done with: unmap its pages from this process (they stay in the page cache, and are
    /// mapped again, unchanged, if read again).
    Done,
}

/// The values as held, for a dataset.
#[derive(Debug)]
pub(crate) enum Storage {
    /// u8 values in the map.
    MappedU8 { map: Mmap, data: Range<usize> },
    /// Little-endian f32 values in the map, at an address aligned for f32.
    MappedF32 { map: Mmap, data: Range<usize> },
    /// Big-endian f32 values in the map, at an address aligned for u32.
    MappedF32Be { map: Mmap, data: Range<usize> },
    /// u8 values in memory.
    OwnedU8(Vec<u8>),
    /// f32 values in memory.
    F32(Vec<f32>),
}

/// The stored values, whichever storage holds them.
#[derive(Clone, Copy)]
pub(crate) enum Values<'a> {
    /// Pixels, scaled by [`U8_SCALE`] when read.
    Bytes(&'a [u8]),
    /// Floats, as they are.
    Floats(&'a [f32]),
    /// Big-endian f32 bit patterns, to be swapped when read.
    BigEndian(&'a [u32]),
}

impl Storage {
    pub(crate) fn values(&self) -> Values<'_> {
        match self {
            Storage::MappedU8 { map, data } => Values::Bytes(&map[data.clone()]),
            Storage::MappedF32 { map, data } => {
                Values::Floats(bytemuck::cast_slice(&map[data.clone()]))
            }
            Storage::MappedF32Be { map, data } => {
                Values::BigEndian(bytemuck::cast_slice(&map[data.clone()]))
            }
            Storage::OwnedU8(bytes) => Values::Bytes(bytes),
            Storage::F32(values) => Values::Floats(values),
        }
    }

    /// The whole mapped file, if the values are read from a map.
    pub(crate) fn mapping(&self) -> Option<&[u8]> {
        match self {
            Storage::MappedU8 { map, .. }
            | Storage::MappedF32 { map, .. }
            | Storage::MappedF32Be { map, .. } => Some(map),
            Storage::OwnedU8(_) | Storage::F32(_) => None,
        }
    }

    /// Where the first value lies in the mapped file, in bytes (0 for values held in
    /// memory).
    pub(crate) fn file_offset(&self) -> usize {
        match self {
            Storage::MappedU8 { data, .. }
            | Storage::MappedF32 { data, .. }
            | Storage::MappedF32Be { data, .. } => data.start,
            Storage::OwnedU8(_) | Storage::F32(_) => 0,
        }
    }

    /// Tells the kernel what is about to happen to `bytes` (counted from the first value)
    /// of a mapped file; nothing for values held in memory. Only advice: a kernel that
    /// refuses it changes nothing but speed and resident memory, so its errors are
    /// ignored.
    pub(crate) fn advise(&self, bytes: Range<usize>, residency: Residency) {
        let (map, data) = match self {
            Storage::MappedU8 { map, data }
            | Storage::MappedF32 { map, data }
            | Storage::MappedF32Be { map, data } => (map, data),
            Storage::OwnedU8(_) | Storage::F32(_) => return,
        };
        let start = (data.start + bytes.start).min(data.end);
        let len = (data.start + bytes.end).min(data.end).saturating_sub(start);
        if len == 0 {
            return;
        }
        let _ = match residency {
            Residency::Soon => map.advise_range(Advice::WillNeed, start, len),
            // SAFETY: the map is a read-only shared mapping of a file that is never
            // written while mapped (see `map_file`), so after MADV_DONTNEED its pages
            // read back the same bytes from the file: every `&[u8]`/`&[f32]` view of the
            // map keeps its values. Only a private or anonymous mapping would lose data.
            Residency::Done => unsafe {
                map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, len)
            },
        };
    }

    /// The scaling the stored element type gets.
    pub(crate) fn scaling(&self) -> Scaling {
        match self.values() {
            Values::Bytes(_) => Scaling::DivideBy255,
            Values::Floats(_) | Values::BigEndian(_) => Scaling::Identity,
        }
    }
}

/// An opened, validated data file: its map and what its header says.
pub(crate) struct Opened {
    pub(super) map: Mmap,
    pub(super) layout: Layout,
    pub(crate) description: Description,
}

impl Opened {
    /// Holds the values as the module documentation says: in the map where they can be
    /// read in place, else converted once into memory.
    pub(crate) fn into_storage(self) -> Storage {
        let Opened { map, layout, .. } = self;
        let data = layout.data;
        if !reads_in_place(layout.element, &map[data.clone()]) {
            return Storage::F32(convert(layout.element, &map[data]));
        }
        match layout.element {
            Element::U8 => Storage::MappedU8 { map, data },
            Element::F32Le => Storage::MappedF32 { map, data },
            Element::F32Be => Storage::MappedF32Be { map, data },
            _ => unreachable!("only u8 and f32 are read in place"),
        }
    }
}

/// Whether values of type `element` stored as `bytes` (in a map) are read where they lie:
/// u8 always, f32 of either byte order where the bytes are aligned for it.
///
/// The map starts on a page boundary, so the values are aligned when their offset in the
/// file is: always for IDX (4 + 4 * rank header bytes) and for the files NumPy and the
/// safetensors package write (headers padded to 64 and 8 bytes). A hand-made file can put
/// them anywhere; a misaligned `&[f32]` would be undefined behaviour (and `bytemuck`
/// refuses to make one), so such values are converted into memory like f64.
pub(super) fn reads_in_place(element: Element, bytes: &[u8]) -> bool {
    match element {
        Element::U8 => true,
        Element::F32Le | Element::F32Be => bytemuck::try_cast_slice::<u8, u32>(bytes).is_ok(),
        _ => false,
    }
}

/// Every element converted to f32 (exact for all types but large i32 and f64).
fn convert(element: Element, bytes: &[u8]) -> Vec<f32> {
    fn each<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        bytes
            .chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N")))
            .collect()
    }
    match element {
        Element::U8 => each(bytes, |[b]| f32::from(b)),
        Element::I8 => each(bytes, |[b]| f32::from(b as i8)),
        Element::I16Be => each(bytes, |b| f32::from(i16::from_be_bytes(b))),
        Element::I32Be => each(bytes, |b| i32::from_be_bytes(b) as f32),
        Element::F32Le => each(bytes, f32::from_le_bytes),
        Element::F32Be => each(bytes, f32::from_be_bytes),
        Element::F64Le => each(bytes, |b| f64::from_le_bytes(b) as f32),
        Element::F64Be => each(bytes, |b| f64::from_be_bytes(b) as f32),
    }
}
