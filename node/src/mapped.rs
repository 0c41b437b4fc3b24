//! Chunks of stored bodies mapped read-only into memory, so that a large hit hands hyper
//! `Bytes` that point into the page cache: one copy (into the socket) instead of two (into a
//! read buffer, then into the socket), and chunks far larger than a read buffer could afford
//! to be.
//!
//! A blob of up to [`KEEP_FILE_MAX`] is mapped whole and the mapping kept for the responses
//! after: a profile of 10 MiB hits showed a quarter of the node's time in making
//! and unmapping a mapping per chunk (`mmap`, `munmap` and the other core's TLB flush, a
//! page fault per 64 KiB, `mincore` looking each page up in the page cache). A kept mapping's
//! pages stay mapped once faulted in, so the next response only copies. Kept mappings are
//! bounded ([`KEEP_BYTES`], [`KEEP_FILES`]) and let go after [`KEEP_IDLE`] unused, so an idle
//! node maps none; a blob evicted from the cache while kept frees its disk space when it is
//! let go. Larger blobs get one mapping per chunk, unmapped when hyper has written it.
//!
//! Blobs are never written in place once committed (eviction unlinks them), so a mapping's
//! bytes never change under it. A chunk is mapped only when the page cache holds all of it,
//! so writing it reads nothing from the disk. What would still end the process with SIGBUS:
//! a blob truncated behind the node's back while one of its chunks is being written, or a
//! page evicted between the check and the copy whose read from the disk then fails. A blob
//! that is already short is never mapped (its last pages are not resident, and the caller
//! checks the length); it is read, and reported, instead.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::ptr::NonNull;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// The largest blob mapped whole and kept; larger ones are mapped a chunk at a time.
const KEEP_FILE_MAX: u64 = 64 * 1024 * 1024;
/// Bytes of blobs kept mapped at most, and blobs at most; past either the least recently
/// used goes.
const KEEP_BYTES: usize = 256 * 1024 * 1024;
const KEEP_FILES: usize = 64;
/// A kept mapping no response used for this long is let go.
const KEEP_IDLE: Duration = Duration::from_secs(30);

/// The whole blob `file` (described by `meta`) mapped, from the kept mappings or newly kept;
/// `None` for a blob too large to keep, or if it cannot be mapped.
///
/// A blob is known by its device and inode. A kept mapping holds its file open, so the inode
/// cannot be reused while the mapping is kept, and blobs are never written in place, so the
/// same inode means the same bytes.
pub fn whole(file: &File, meta: &Metadata) -> Option<Arc<Whole>> {
    let len = usize::try_from(meta.len())
        .ok()
        .filter(|&len| len > 0 && meta.len() <= KEEP_FILE_MAX)?;
    let id = (meta.dev(), meta.ino());
    let now = Instant::now();
    let mut kept = KEPT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(entry) = kept.files.get_mut(&id).filter(|e| e.map.len() == len) {
        entry.used = now;
        return Some(entry.map.clone());
    }
    let map = Arc::new(Whole(Mapping::new(file, 0, len)?));
    kept.keep(id, map.clone(), now);
    Some(map)
}

/// Lets go of the kept mappings no response used for [`KEEP_IDLE`], every [`KEEP_IDLE`], so
/// that a node that stopped serving large objects maps none.
pub fn spawn_sweeper() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(KEEP_IDLE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut kept = KEPT.lock().unwrap_or_else(PoisonError::into_inner);
            kept.let_go_idle(Instant::now());
        }
    });
}

/// A whole blob, mapped.
pub struct Whole(Mapping);

impl Whole {
    fn len(&self) -> usize {
        self.0.len
    }

    /// `len` bytes from `offset`, if they lie in the blob and the page cache holds them all.
    pub fn chunk(self: &Arc<Self>, offset: u64, len: usize) -> Option<Bytes> {
        let start = usize::try_from(offset).ok()?;
        let end = start
            .checked_add(len)
            .filter(|&end| len > 0 && end <= self.len())?;
        self.0.resident(start, end).then(|| {
            Bytes::from_owner(Slice {
                whole: self.clone(),
                start,
                end,
            })
        })
    }
}

/// Part of a kept mapping, as `Bytes` hand it on; the mapping stays while any part is held.
struct Slice {
    whole: Arc<Whole>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for Slice {
    fn as_ref(&self) -> &[u8] {
        self.whole
            .0
            .as_ref()
            .get(self.start..self.end)
            .unwrap_or_default()
    }
}

static KEPT: LazyLock<Mutex<Kept>> = LazyLock::new(|| {
    Mutex::new(Kept {
        files: HashMap::new(),
    })
});

/// The kept mappings, by (device, inode). Dropping one leaves it to the responses still
/// writing from it, which keep it until they end.
struct Kept {
    files: HashMap<(u64, u64), KeptFile>,
}

struct KeptFile {
    map: Arc<Whole>,
    used: Instant,
}

impl Kept {
    /// Bytes kept mapped; a sum over at most [`KEEP_FILES`] entries.
    fn bytes(&self) -> usize {
        self.files.values().map(|e| e.map.len()).sum()
    }

    fn keep(&mut self, id: (u64, u64), map: Arc<Whole>, now: Instant) {
        self.files.insert(id, KeptFile { map, used: now });
        while self.bytes() > KEEP_BYTES || self.files.len() > KEEP_FILES {
            let Some(oldest) = self
                .files
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(id, _)| *id)
            else {
                break;
            };
            self.files.remove(&oldest);
        }
    }

    fn let_go_idle(&mut self, now: Instant) {
        self.files
            .retain(|_, e| now.duration_since(e.used) < KEEP_IDLE);
    }
}

/// `len` bytes of `file` from `offset`, mapped, if the page cache holds all of them (so
/// writing them will not wait for the disk). `None` when it does not, when it cannot tell
/// (the kernel reports the page cache only for files the process owns or may write), or when
/// the mapping fails: the caller then reads the bytes instead.
pub fn cached_chunk(file: &File, offset: u64, len: usize) -> Option<Bytes> {
    let mapping = Mapping::new(file, offset, len)?;
    mapping
        .resident(mapping.skew, mapping.len)
        .then(|| Bytes::from_owner(mapping))
}

/// A read-only shared mapping of whole pages of a file; the chunk asked for starts `skew`
/// bytes into it.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    skew: usize,
}

// SAFETY: the mapping is read-only memory that lives as long as this value; sharing it
// between threads is like sharing a `&[u8]`.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

static PAGE: LazyLock<usize> = LazyLock::new(|| {
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page)
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
});

impl Mapping {
    fn new(file: &File, offset: u64, len: usize) -> Option<Self> {
        let skew = usize::try_from(offset % *PAGE as u64).ok()?;
        let start = libc::off_t::try_from(offset - skew as u64).ok()?;
        let map_len = skew.checked_add(len).filter(|_| len > 0)?;
        // SAFETY: a fresh read-only shared mapping of an open file at an address the kernel
        // picks; it aliases no Rust memory. See the module's doc for why its pages stay
        // backed.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                start,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        Some(Self {
            ptr: NonNull::new(ptr.cast::<u8>())?,
            len: map_len,
            skew,
        })
    }

    /// Whether the page cache holds every page of bytes `start..end` of the mapping.
    fn resident(&self, start: usize, end: usize) -> bool {
        let first = start / *PAGE * *PAGE;
        let Some(len) = end.checked_sub(first).filter(|_| end <= self.len) else {
            return false;
        };
        let mut pages = vec![0u8; len.div_ceil(*PAGE)];
        // SAFETY: `first..end` lies in our mapping, which starts on a page boundary, and so
        // does `first`; `pages` has one byte per page of it.
        let ok =
            unsafe { libc::mincore(self.ptr.as_ptr().add(first).cast(), len, pages.as_mut_ptr()) };
        ok == 0 && pages.iter().all(|p| p & 1 == 1)
    }
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `self` is dropped.
        let all = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) };
        all.get(self.skew..).unwrap_or_default()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; the slices handed out borrow `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file_of(data: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(data).unwrap();
        file
    }

    #[test]
    fn a_chunk_is_the_files_content_from_any_offset() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let file = file_of(&data);
        for (offset, len) in [(0, 100_000), (5000, 65_000), (4096, 1), (99_999, 1)] {
            let chunk = cached_chunk(&file, offset as u64, len).unwrap();
            assert_eq!(&chunk[..], &data[offset..offset + len], "{offset}+{len}");
        }
    }

    fn whole_of(file: &File) -> Arc<Whole> {
        whole(file, &file.metadata().unwrap()).unwrap()
    }

    #[test]
    fn a_kept_blob_is_mapped_once_and_sliced_for_every_response() {
        let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let file = file_of(&data);
        let first = whole_of(&file);
        assert!(
            Arc::ptr_eq(&first, &whole_of(&file)),
            "the same inode, kept"
        );
        for (offset, len) in [
            (0, data.len()),
            (4095, 2 * 1024 * 1024),
            (3_000_000, 145_728),
        ] {
            let chunk = first.chunk(offset as u64, len).unwrap();
            assert_eq!(&chunk[..], &data[offset..offset + len], "{offset}+{len}");
        }
        assert!(
            first.chunk(data.len() as u64 - 1, 2).is_none(),
            "past the end"
        );
        assert!(first.chunk(0, 0).is_none());
    }

    #[test]
    fn a_slice_outlives_the_kept_mapping() {
        let data = vec![5u8; 300_000];
        let file = file_of(&data);
        let chunk = whole_of(&file).chunk(100, 1000).unwrap();
        KEPT.lock().unwrap().files.clear();
        assert_eq!(&chunk[..], &data[100..1100]);
    }

    #[test]
    fn kept_mappings_are_bounded_and_let_go_when_idle() {
        let now = Instant::now();
        let mut kept = Kept {
            files: HashMap::new(),
        };
        let files: Vec<File> = (0..KEEP_FILES + 3).map(|_| file_of(&[1u8; 5000])).collect();
        for (i, file) in files.iter().enumerate() {
            let map = Arc::new(Whole(Mapping::new(file, 0, 5000).unwrap()));
            kept.keep((0, i as u64), map, now + Duration::from_millis(i as u64));
        }
        assert_eq!(kept.files.len(), KEEP_FILES);
        assert_eq!(kept.bytes(), KEEP_FILES * 5000);
        assert!(
            !kept.files.contains_key(&(0, 0)),
            "the least recently used went first"
        );
        kept.let_go_idle(now + KEEP_IDLE + Duration::from_millis(10));
        assert_eq!(kept.files.len(), KEEP_FILES + 3 - 11);
        kept.let_go_idle(now + 2 * KEEP_IDLE);
        assert!(kept.files.is_empty());
        assert_eq!(kept.bytes(), 0);
    }

    #[test]
    fn a_blob_too_large_or_empty_is_not_kept() {
        let file = file_of(&[]);
        assert!(whole(&file, &file.metadata().unwrap()).is_none());
        let large = tempfile::tempfile().unwrap();
        large.set_len(KEEP_FILE_MAX + 1).unwrap();
        assert!(whole(&large, &large.metadata().unwrap()).is_none());
    }

    #[test]
    fn pages_past_the_end_of_the_file_are_not_resident() {
        let file = file_of(&[7u8; 5000]);
        assert!(cached_chunk(&file, 0, 5000).is_some());
        assert!(cached_chunk(&file, 0, 3 * 4096 + 1).is_none());
        assert!(cached_chunk(&file, 0, 0).is_none());
    }
}
