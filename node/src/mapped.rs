//! Stored bodies mapped read-only into memory, so that a large hit hands hyper its chunks as
//! `Bytes` that point into the page cache: one copy (into the socket) instead of two (into a
//! read buffer, then into the socket), and chunks far larger than a read buffer could afford
//! to be. Blobs are never written in place once committed (eviction unlinks them), so a
//! mapping's bytes never change under it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;

/// A read-only shared mapping of a file's first `len` bytes.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
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
    /// Maps the first `len` bytes of `file` (which must be at least that long: the store
    /// checked a blob's length when it opened it).
    pub fn new(file: &File, len: u64) -> std::io::Result<Arc<Self>> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0)
            .ok_or_else(|| std::io::Error::other("nothing to map"))?;
        // SAFETY: a fresh read-only shared mapping of an open file at an address the kernel
        // picks; it aliases no Rust memory. The file is never truncated while stored, so its
        // pages stay backed (the length was checked against the file when it was opened).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| std::io::Error::other("mmap"))?;
        Ok(Arc::new(Self { ptr, len }))
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `self` is dropped.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Whether the page cache holds all of `start..end` (so sending it will not wait for the
    /// disk). Reports `false` when it cannot tell (the kernel tells a process about the page
    /// cache only for files it owns or may write), which sends the caller down the path
    /// that reads on the blocking pool.
    pub fn resident(&self, start: usize, end: usize) -> bool {
        let page = *PAGE;
        let end = end.min(self.len);
        if start >= end {
            return true;
        }
        let first = start & !(page - 1);
        let pages = (end - first).div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: the range lies inside our mapping and starts on a page boundary; `vec` has
        // one byte per page of it.
        let ok = unsafe {
            libc::mincore(
                self.ptr.as_ptr().add(first).cast(),
                end - first,
                vec.as_mut_ptr(),
            )
        } == 0;
        ok && vec.iter().all(|v| v & 1 == 1)
    }

    /// `start..end` of the mapping as `Bytes` that keep it alive.
    pub fn chunk(self: &Arc<Self>, start: usize, end: usize) -> Bytes {
        Bytes::from_owner(MappedChunk {
            map: self.clone(),
            start,
            end: end.min(self.len),
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; no `MappedChunk` outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

struct MappedChunk {
    map: Arc<Mapping>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MappedChunk {
    fn as_ref(&self) -> &[u8] {
        self.map
            .bytes()
            .get(self.start..self.end)
            .unwrap_or_default()
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
    fn a_chunk_is_the_files_content_and_outlives_its_mapping_handle() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let map = Mapping::new(&file_of(&data), data.len() as u64).unwrap();
        assert!(
            map.resident(5000, 70_000),
            "just written, so in the page cache"
        );
        assert!(map.resident(70_000, 5000), "an empty range is there");
        let chunk = map.chunk(5000, 70_000);
        let tail = map.chunk(90_000, 200_000);
        drop(map);
        assert_eq!(&chunk[..], &data[5000..70_000]);
        assert_eq!(&tail[..], &data[90_000..], "clipped to the mapping");
    }

    #[test]
    fn nothing_is_mapped_for_an_empty_body() {
        assert!(Mapping::new(&file_of(b""), 0).is_err());
    }
}
