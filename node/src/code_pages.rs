//! Hands back, twice a minute, the pages of code and read-only data a node mapped once and
//! no longer uses: the idea of the kernel's `free_initmem`, for a user-space program.
//!
//! A page of an executable or a library counts in the process's RSS from the first time
//! anything on it runs or is read until the process ends, and the kernel maps the 64 KiB
//! around every page it faults in. An idle node runs a small part of its code, but starting
//! and joining (configuration, keys, databases, the swarm, the first burst of connections)
//! touch much more of it and of the libraries' code and tables: at 100 nodes, an idle node
//! kept about 10 MiB of such pages. Every [`DROP_EVERY`] the node unmaps
//! (`MADV_DONTNEED`) every read-only mapping of every file it runs code from; what it uses
//! again comes back from the page cache, 64 KiB at a time, for about a microsecond per page,
//! so the pages that stay mapped are those it used in the last half minute.
//!
//! This cannot change what runs. Only mappings that are private, not writable and hold no
//! page of their own are dropped: no page of them was ever written, so none is a relocated
//! page of `.data.rel.ro` or holds a breakpoint a debugger set. Each of their pages is the
//! file's page, and the kernel itself unmaps such pages whenever it reclaims memory. The
//! pages stay in the page cache, which every node of a machine shares, so this changes what
//! each node counts, not what the machine holds: the node's own cost is its private memory
//! (`docs/benchmarks.md`). The release binary's profile-ordered layout (`node/build.rs`)
//! keeps what an idle node runs on few pages, so little comes back.

use std::collections::HashSet;
use std::time::Duration;

use tracing::debug;

/// How often mapped code not run lately is dropped; the first time is this long after start,
/// by when a node has joined.
const DROP_EVERY: Duration = Duration::from_secs(30);

/// Drops the clean, read-only mappings of the node's code every [`DROP_EVERY`]; does nothing
/// outside Linux.
pub fn spawn_dropper() {
    if !cfg!(target_os = "linux") {
        return;
    }
    tokio::spawn(async {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + DROP_EVERY, DROP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Reading procfs never waits for a disk: a few hundred microseconds on the
            // runtime's thread, twice a minute.
            match std::fs::read_to_string("/proc/self/smaps") {
                Ok(smaps) => drop_all(&droppable(&smaps)),
                Err(error) => debug!(%error, "cannot read /proc/self/smaps"),
            }
        }
    });
}

/// One mapping of `/proc/self/smaps`, with what decides whether it may be dropped.
#[derive(Debug)]
struct Mapping<'a> {
    start: usize,
    end: usize,
    readable_only: bool,
    executable: bool,
    /// A regular file (an absolute path), not `[heap]`, `[vdso]` or anonymous memory.
    path: Option<&'a str>,
    /// Its field lines were read (a mapping listed without them is never trusted).
    listed: bool,
    /// Some page of it was written, so it is the process's own copy, not the file's page.
    written: bool,
}

/// The address ranges of the mappings that may be dropped: read-only (`r--p` or `r-xp`),
/// clean mappings of the files the process has code mapped from (the binary and its
/// libraries, not the cache's blobs).
fn droppable(smaps: &str) -> Vec<(usize, usize)> {
    let mappings = parse(smaps);
    let with_code: HashSet<&str> = mappings
        .iter()
        .filter(|m| m.executable)
        .filter_map(|m| m.path)
        .collect();
    mappings
        .iter()
        .filter(|m| m.readable_only && m.listed && !m.written)
        .filter(|m| m.path.is_some_and(|p| with_code.contains(p)))
        .map(|m| (m.start, m.end))
        .collect()
}

fn parse(smaps: &str) -> Vec<Mapping<'_>> {
    let mut mappings: Vec<Mapping<'_>> = Vec::new();
    for line in smaps.lines() {
        if let Some(mapping) = header(line) {
            mappings.push(mapping);
            continue;
        }
        let Some(last) = mappings.last_mut() else {
            continue;
        };
        let mut fields = line.split_whitespace();
        let (Some(key), Some(kib)) = (fields.next(), fields.next()) else {
            continue;
        };
        last.listed = true;
        // A page written through a private mapping becomes the process's own copy, counted
        // as anonymous. Dirty is no sign of that: a file just written (a binary just built)
        // has dirty pages in the page cache, which the mapping shows as they are.
        if key == "Anonymous:" && kib != "0" {
            last.written = true;
        }
    }
    mappings
}

/// `start-end perms offset dev inode [path]`, or `None` for a field line of the mapping.
fn header(line: &str) -> Option<Mapping<'_>> {
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?.as_bytes();
    let path = fields.nth(3).filter(|p| p.starts_with('/'));
    if perms.len() != 4 || start >= end {
        return None;
    }
    Some(Mapping {
        start,
        end,
        readable_only: perms[0] == b'r' && perms[1] == b'-' && perms[3] == b'p',
        executable: perms[2] == b'x',
        path,
        listed: false,
        written: false,
    })
}

fn drop_all(ranges: &[(usize, usize)]) {
    let mut dropped = 0;
    for &(start, end) in ranges {
        // SAFETY: [start, end) is a whole mapping, as the kernel listed it, of a file the
        // process runs code from, private, read-only and with no page ever written, so the
        // file holds exactly what it maps. MADV_DONTNEED only unmaps those pages; the next
        // access maps them back from the page cache, as after the kernel reclaimed them. No
        // Rust object lives in them: they are code and constants.
        let done =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if done == 0 {
            dropped += end - start;
        } else {
            debug!(error = %std::io::Error::last_os_error(), "madvise on mapped code failed");
        }
    }
    debug!(
        mappings = ranges.len(),
        kib = dropped / 1024,
        "dropped mapped code and constants"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mappings of a node, cut short: its binary (constants, code, relocated constants,
    /// data), the heap, a mapped chunk of a blob, libc, the vDSO.
    const SMAPS: &str = "\
55c4218a8000-55c421d87000 r--p 00000000 fe:00 5311015 /srv/reef
Rss:                2744 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
55c421d87000-55c422e95000 r-xp 004df000 fe:00 5311015 /srv/reef
Rss:                5364 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
55c422e96000-55c422f77000 r--p 015ef000 fe:00 5311015 /srv/reef
Rss:                 900 kB
Private_Dirty:       900 kB
Anonymous:           900 kB
55c422f77000-55c422f80000 rw-p 016cf000 fe:00 5311015 /srv/reef
Rss:                  36 kB
Private_Dirty:        36 kB
Anonymous:            36 kB
55c453e6b000-55c454c88000 rw-p 00000000 00:00 0                          [heap]
Rss:                8800 kB
Private_Dirty:      8800 kB
7f1c00000000-7f1c00200000 r--s 00000000 fe:00 77 /srv/cache/blobs/ab/cd
Rss:                2048 kB
Private_Dirty:         0 kB
7f1c10000000-7f1c10200000 r--p 00000000 fe:00 78 /srv/cache/blobs/ef/01
Rss:                2048 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f1c20028000-7f1c201b0000 r-xp 00028000 fe:00 9 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                1160 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f1c201b0000-7f1c20205000 r--p 001b0000 fe:00 9 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 348 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f1c30000000-7f1c30002000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   8 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f1c40000000-7f1c40001000 r-xp 00001000 fe:00 10 /usr/lib/x86_64-linux-gnu/libm.so.6
";

    #[test]
    fn drops_the_clean_read_only_mappings_of_files_with_code() {
        assert_eq!(
            droppable(SMAPS),
            [
                (0x55c4218a8000, 0x55c421d87000),
                (0x55c421d87000, 0x55c422e95000),
                (0x7f1c20028000, 0x7f1c201b0000),
                (0x7f1c201b0000, 0x7f1c20205000),
            ]
        );
    }

    #[test]
    fn keeps_written_shared_anonymous_and_unlisted_mappings() {
        let kept = |start| !droppable(SMAPS).iter().any(|&(s, _)| s == start);
        assert!(
            kept(0x55c422e96000),
            "relocated constants (RELRO) are the process's own"
        );
        assert!(kept(0x55c422f77000), "writable data");
        assert!(kept(0x55c453e6b000), "the heap");
        assert!(kept(0x7f1c00000000), "a shared mapping");
        assert!(kept(0x7f1c10000000), "a file the process runs no code from");
        assert!(kept(0x7f1c30000000), "the vDSO is not a file");
        assert!(kept(0x7f1c40000000), "listed without its fields");
    }

    #[test]
    fn garbage_drops_nothing() {
        assert!(droppable("garbage\n- r-xp\n1-0 r-xp 0 0 0 /x\nRss: 4 kB\n").is_empty());
        assert!(droppable("").is_empty());
    }

    #[test]
    fn this_process_s_code_still_runs_after_the_drop() {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let ranges = droppable(&smaps);
        let here = this_process_s_code_still_runs_after_the_drop as fn() as usize;
        assert!(
            ranges.iter().any(|&(s, e)| (s..e).contains(&here)),
            "the test binary's code is droppable"
        );
        drop_all(&ranges);
        // Everything this test, the test harness and libc run from here on maps back in.
        let again = std::fs::read_to_string("/proc/self/smaps").unwrap();
        assert!(
            droppable(&again)
                .iter()
                .any(|&(s, e)| (s..e).contains(&here))
        );
    }
}
