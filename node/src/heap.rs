//! Keeps the heap small: one allocator arena for the whole process, and freed pages handed
//! back to the kernel.
//!
//! glibc gives each thread that allocates its own arena (up to 8 per core), and memory freed
//! in one arena is reused only by the threads on it. The runtime's workers take turns at the
//! same connections, so each arena ended up holding the free space of the others: at 100
//! nodes, one arena for all cut an idle node's private memory from 11.6 to 10.3 MiB. The
//! price is a lock the workers share on allocations their thread caches miss; on the hit
//! path it was within this machine's run-to-run noise (docs/benchmarks.md).
//!
//! glibc returns memory by itself only from the top of its main heap. Pages freed anywhere
//! else (a pruned connection's buffers, the burst of connections a node makes while it
//! joins) stay resident until `malloc_trim` gives them back: measured at 50 nodes, about
//! 3 MiB of an idle node's 12 MiB of private memory. Trimming walks the free lists, which
//! costs well under a millisecond at these heap sizes, so it runs on a timer.

use std::time::Duration;

/// How often freed pages are handed back.
const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Puts every thread on one arena. Call before any thread other than the main one starts.
pub fn single_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tuning parameter of glibc's allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Trims the heap every [`TRIM_INTERVAL`] until the runtime stops; does nothing where the
/// allocator is not glibc's.
pub fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // SAFETY: malloc_trim takes no pointers and only rearranges the allocator's own
            // free pages; it is safe to call from any thread at any time.
            unsafe { libc::malloc_trim(0) };
        }
    });
}
