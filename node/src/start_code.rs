//! Hands back the pages of code an idle node does not run: the idea of the kernel's
//! `free_initmem`, for a user-space program, done twice a minute.
//!
//! The release binary lays out its functions by a profile (`node/build.rs`,
//! `node/link-order.txt`): first what an idle node runs, then, from
//! [`reef_start_code_begin`] on, what only starting runs (parsing its configuration, making
//! its key and databases, building the swarm, joining), then the request path and the rest.
//! A page of code, once run, stays mapped and counts in the node's RSS long after, so an idle
//! node of a 100-node testnet kept 1.4 MiB of start-up code, and about 1.5 MiB of functions
//! the profile had not placed, 64 KiB around each.
//! Every [`DROP_EVERY`] the mapping of everything from the marker to the end of the code is
//! dropped (`MADV_DONTNEED`); what runs again comes back from the page cache, 64 KiB at a
//! time, for about a microsecond per page.
//!
//! Correctness does not depend on the layout: the pages are the binary's own code, mapped
//! read-only and privately from the file and never written, so dropping any of them only
//! costs the fault that maps it back. The layout only decides whether dropping is worth it,
//! so it is done only where the build applied one (`reef_link_order`, set by `build.rs`).

use std::time::Duration;

use tracing::debug;

/// How often code not run lately is dropped; the first time is this long after start, by
/// when a node has joined.
const DROP_EVERY: Duration = Duration::from_secs(30);

/// The first function of the start-only code (`node/link-order.txt`). Never called: only
/// its address is used.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn reef_start_code_begin() -> u32 {
    std::hint::black_box(0x5ee1)
}

/// Drops the code after [`reef_start_code_begin`] every [`DROP_EVERY`], where the build laid
/// the code out for it.
pub fn spawn_dropper() {
    if !cfg!(reef_link_order) {
        return;
    }
    // The mapping does not move while the process lives: find it once.
    let (first, len) = match range() {
        Ok(range) => range,
        Err(why) => {
            debug!(%why, "keeping the code mapped");
            return;
        }
    };
    tokio::spawn(async move {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + DROP_EVERY, DROP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            drop_pages(first, len);
        }
    });
}

/// Whole pages from the marker to the end of the executable mapping that holds it.
fn range() -> Result<(usize, usize), String> {
    let marker = reef_start_code_begin as extern "C" fn() -> u32 as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
    let end = code_mapping_end(&maps, marker).ok_or("no executable mapping holds the marker")?;
    // SAFETY: sysconf only reads a system constant.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|p| p.is_power_of_two())
        .ok_or("no page size")?;
    let first = marker.checked_add(page - 1).ok_or("marker at the top")? & !(page - 1);
    match end.checked_sub(first) {
        Some(len) if len > 0 => Ok((first, len)),
        _ => Err("nothing after the marker".into()),
    }
}

/// The end of the `r-xp` mapping in `maps` (`/proc/self/maps`) that holds `address`.
fn code_mapping_end(maps: &str, address: usize) -> Option<usize> {
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let (start, end) = (
            usize::from_str_radix(start, 16).ok()?,
            usize::from_str_radix(end, 16).ok()?,
        );
        let executable = fields.next()? == "r-xp";
        (executable && (start..end).contains(&address)).then_some(end)
    })
}

fn drop_pages(first: usize, len: usize) {
    // SAFETY: [first, first + len) is whole pages of the executable mapping of this binary's
    // code: read-only, private, file-backed and never written. MADV_DONTNEED only unmaps
    // them; the next call into one maps it back from the file. No Rust object lives there.
    let done = unsafe { libc::madvise(first as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    if done == 0 {
        debug!(
            kib = len / 1024,
            "dropped the code an idle node does not run"
        );
    } else {
        debug!(error = %std::io::Error::last_os_error(), "madvise on the code failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55c4218a8000-55c421d87000 r--p 00000000 fe:00 5311015 /srv/reef
55c421d87000-55c422e95000 r-xp 004df000 fe:00 5311015 /srv/reef
55c453e6b000-55c454c88000 rw-p 00000000 00:00 0 [heap]
";

    #[test]
    fn finds_the_end_of_the_code_holding_the_address() {
        assert_eq!(code_mapping_end(MAPS, 0x55c421d87000), Some(0x55c422e95000));
        assert_eq!(code_mapping_end(MAPS, 0x55c422e94fff), Some(0x55c422e95000));
    }

    #[test]
    fn ignores_addresses_outside_code() {
        assert_eq!(code_mapping_end(MAPS, 0x55c422e95000), None);
        assert_eq!(code_mapping_end(MAPS, 0x55c4218a8000), None);
        assert_eq!(code_mapping_end(MAPS, 0x55c453e6b000), None);
        assert_eq!(code_mapping_end("garbage\n- r-xp", 1), None);
    }

    #[test]
    fn the_range_lies_in_this_binary_s_code() {
        let (first, len) = range().expect("a test binary has code after the marker");
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert_eq!(code_mapping_end(&maps, first), Some(first + len));
        assert_eq!(first % 4096, 0);
    }

    #[test]
    fn dropped_code_still_runs() {
        let before = range().unwrap();
        drop_pages(before.0, before.1);
        // Whatever of this test's code lay in the range is mapped back as it runs.
        assert_eq!(range().unwrap(), before);
    }
}
