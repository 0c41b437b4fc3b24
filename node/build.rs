//! Links the release `reef` binary with its functions in the order of `link-order.txt`: the
//! code a node runs while idle first, then what it runs to start, then the request path.
//!
//! Why: a page of code counts in a process's RSS once anything on it runs, and the kernel maps
//! the 64 KiB around every page it faults in. With the linker's default layout the few MiB a
//! node runs are spread over the whole 19 MiB of code, so nearly all of it ended up resident;
//! grouped, an idle node maps about 7 MiB instead of 17, and under 3 MiB once `code_pages`
//! has dropped what it ran only to start. The file is made by
//! `testnet/bench/link-order.sh` from a profile of running nodes; names it lists that the
//! binary no longer has (code changed since) are skipped, so a stale file costs memory, never
//! correctness. Our crates are built as one codegen unit each (the workspace's
//! `Cargo.toml` says why), so that their functions' names do not change with every edit.
//!
//! Only for release builds for x86_64 Linux, where rustc links with lld since 1.90 (our
//! `rust-version`), and lld takes a symbol-ordering file where GNU ld does not. The same
//! build packs relative relocations, which needs glibc 2.36 or newer where the binary runs.
//! `REEF_LINK_ORDER=0` turns both off (another linker, an older glibc).

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=REEF_LINK_ORDER");
    let wanted = env::var("REEF_LINK_ORDER").map_or(true, |v| v != "0");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let lld_by_default = env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    let Ok(dir) = env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let order = Path::new(&dir).join("link-order.txt");
    if wanted && release && lld_by_default && order.is_file() {
        println!(
            "cargo:rustc-link-arg-bin=reef=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=reef=-Wl,--no-warn-symbol-ordering");
        // Relative relocations packed (DT_RELR, glibc 2.36+): the loader reads some KiB at
        // start instead of 1.3 MB of `.rela.dyn`, which then stayed resident.
        println!("cargo:rustc-link-arg-bin=reef=-Wl,-z,pack-relative-relocs");
    }
}
