//! Chunks of stored bodies mapped read-only into memory, so that a large hit hands hyper
//! `Bytes` that point into the page cache: one copy (into the socket) instead of two (into a
//! read buffer, then into the socket), and chunks far larger than a read buffer could afford
//! to be. Each chunk is its own mapping, unmapped when hyper has written it, so a response in
//! flight maps one chunk or two, as it held one read buffer or two before.
//!
//! Blobs are never written in place once committed (eviction unlinks them), so a mapping's
//! bytes never change under it. A chunk is mapped only when the page cache holds all of it,
//! so writing it reads nothing from the disk. What would still end the process with SIGBUS:
//! a blob truncated behind the node's back while one of its chunks is being written, or a
//! page evicted between the check and the copy whose read from the disk then fails. A blob
//! that is already short is never mapped (its last pages are not resident, and the caller
//! checks the length); it is read, and reported, instead.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::LazyLock;

use bytes::Bytes;

/// `len` bytes of `file` from `offset`, mapped, if the page cache holds all of them (so
/// writing them will not wait for the disk). `None` when it does not, when it cannot tell
/// (the kernel reports the page cache only for files the process owns or may write), or when
/// the mapping fails: the caller then reads the bytes instead.
pub fn cached_chunk(file: &File, offset: u64, len: usize) -> Option<Bytes> {
    let mapping = Mapping::new(file, offset, len)?;
    mapping.resident().then(|| Bytes::from_owner(mapping))
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

    /// Whether the page cache holds every page of the mapping.
    fn resident(&self) -> bool {
        let mut pages = vec![0u8; self.len.div_ceil(*PAGE)];
        // SAFETY: the range is exactly our mapping, which starts on a page boundary; `pages`
        // has one byte per page of it.
        let ok = unsafe { libc::mincore(self.ptr.as_ptr().cast(), self.len, pages.as_mut_ptr()) };
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

    #[test]
    fn pages_past_the_end_of_the_file_are_not_resident() {
        let file = file_of(&[7u8; 5000]);
        assert!(cached_chunk(&file, 0, 5000).is_some());
        assert!(cached_chunk(&file, 0, 3 * 4096 + 1).is_none());
        assert!(cached_chunk(&file, 0, 0).is_none());
    }
}
