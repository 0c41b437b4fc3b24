//! Store throughput: puts/s and gets/s of 4 KiB and 1 MiB objects through the public
//! `reef_cache::Store` API, sequentially and with 16 concurrent tasks.
//!
//! ```sh
//! cargo run --release -p reef-cache --example store_throughput
//! ```
//!
//! A put is a full durable fill: `fill` → `start` → `write` (64 KiB chunks) → `commit`, which
//! fsyncs the temp file, renames it into `blobs/`, fsyncs the directory and commits the index.
//! A get is `get` (index lookup, open, length check; for a small object read before, its copy
//! in memory) plus reading the whole body. Every body is
//! distinct, so no put is deduplicated. The store lives in a fresh temp dir (on the file system
//! of `$TMPDIR`, default `/tmp`); run with `TMPDIR=...` to measure another disk.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_cache_semantics::CachePolicy;
use reef_cache::{Config, Fill, HitBody, Meta, Store};
use reef_proto::ContentKey;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// Chunk size of `Writer::write`, like a body streamed from upstream.
const CHUNK: usize = 64 * KIB;
const CONCURRENCY: usize = 16;
/// Each case runs at least this many operations and at least this long (whichever ends
/// later), capped at `MAX_OPS`, so small objects get enough samples and big ones finish.
const MIN_OPS: usize = 64;
const MAX_OPS: usize = 4000;
/// Disk written per case is capped too (512 1 MiB puts), so a fast disk is not filled.
const MAX_CASE_BYTES: usize = 512 * MIB;
const TARGET: Duration = Duration::from_secs(4);

#[derive(Clone, Copy)]
struct Case {
    label: &'static str,
    size: usize,
    tasks: usize,
}

impl Case {
    fn max_puts(&self) -> usize {
        MAX_OPS.min(MAX_CASE_BYTES / self.size)
    }
}

struct Row {
    case: Case,
    puts: usize,
    put_secs: f64,
    gets: usize,
    get_secs: f64,
}

fn meta(url: &str) -> Result<Meta> {
    let req = http::Request::get(url).body(())?;
    let res = http::Response::builder()
        .header("cache-control", "public, max-age=3600")
        .body(())?;
    Ok(Meta::new(
        url.to_owned(),
        CachePolicy::new(&req, &res),
        200,
        vec![("content-type".into(), b"application/octet-stream".to_vec())],
    ))
}

/// A body that differs per object (the index is in the first 8 bytes), so blobs never dedupe.
fn body(template: &[u8], n: u64) -> Vec<u8> {
    let mut b = template.to_vec();
    let len = b.len().min(8);
    b[..len].copy_from_slice(&n.to_le_bytes()[..len]);
    b
}

fn key(case_id: u64, n: u64) -> ContentKey {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&case_id.to_le_bytes());
    k[8..16].copy_from_slice(&n.to_le_bytes());
    ContentKey::from_bytes(k)
}

async fn put(store: &Store, key: ContentKey, url: &str, body: &[u8]) -> Result<()> {
    let Fill::Leader(guard) = store.fill(key) else {
        return Err("another fill of this key is in progress".into());
    };
    let mut writer = guard.start(meta(url)?, Some(body.len() as u64)).await?;
    for chunk in body.chunks(CHUNK) {
        writer.write(chunk).await?;
    }
    writer.commit().await?;
    Ok(())
}

async fn get(store: &Store, key: &ContentKey, size: usize, buf: &mut Vec<u8>) -> Result<()> {
    let Some(hit) = store.get(key).await? else {
        return Err("a stored object is missing".into());
    };
    buf.clear();
    match hit.body {
        HitBody::Memory(bytes) => buf.extend_from_slice(&bytes),
        HitBody::File(mut file) => {
            std::io::Read::read_to_end(&mut file, buf)?;
        }
    }
    if buf.len() != size || hit.meta.body_len != size as u64 {
        return Err(format!("read {} bytes, expected {size}", buf.len()).into());
    }
    Ok(())
}

/// Runs `tasks` workers that share one counter of operations; returns (ops, seconds).
async fn run_puts(store: &Store, case: Case, case_id: u64) -> Result<(usize, f64)> {
    let template = Arc::new(vec![0xa5u8; case.size]);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..case.tasks {
        let (store, template, next) = (store.clone(), template.clone(), next.clone());
        workers.spawn(async move {
            let mut done = 0usize;
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let enough = n >= case.max_puts() || (n >= MIN_OPS && start.elapsed() >= TARGET);
                if enough {
                    return Ok::<usize, Box<dyn std::error::Error + Send + Sync>>(done);
                }
                let url = format!("http://bench.invalid/{case_id}/{n}");
                put(
                    &store,
                    key(case_id, n as u64),
                    &url,
                    &body(&template, n as u64),
                )
                .await?;
                done += 1;
            }
        });
    }
    let mut ops = 0;
    while let Some(r) = workers.join_next().await {
        ops += r??;
    }
    Ok((ops, start.elapsed().as_secs_f64()))
}

/// Gets the `stored` objects of `case_id` in a loop (round-robin) until enough were read.
async fn run_gets(store: &Store, case: Case, case_id: u64, stored: usize) -> Result<(usize, f64)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..case.tasks {
        let (store, next) = (store.clone(), next.clone());
        workers.spawn(async move {
            let mut buf = Vec::with_capacity(case.size);
            let mut done = 0usize;
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let enough = n >= MAX_OPS * 4 || (n >= MIN_OPS && start.elapsed() >= TARGET);
                if enough {
                    return Ok::<usize, Box<dyn std::error::Error + Send + Sync>>(done);
                }
                let k = key(case_id, (n % stored) as u64);
                get(&store, &k, case.size, &mut buf).await?;
                done += 1;
            }
        });
    }
    let mut ops = 0;
    while let Some(r) = workers.join_next().await {
        ops += r??;
    }
    Ok((ops, start.elapsed().as_secs_f64()))
}

fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn disk_of(dir: &Path) -> String {
    // The file system type is what matters for fsync cost; /proc/mounts has it on Linux.
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return "unknown".into();
    };
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 3 && dir.starts_with(f[1]) && best.as_ref().is_none_or(|b| f[1].len() > b.0) {
            best = Some((f[1].len(), format!("{} on {} ({})", f[0], f[1], f[2])));
        }
    }
    best.map_or_else(|| "unknown".into(), |b| b.1)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("reef-store-throughput-")
        .tempdir()?;
    let store = Store::open(Config {
        dir: dir.path().join("cache"),
        max_bytes: 64 << 30,
        quotas: Default::default(),
    })?;
    let cases = [
        Case {
            label: "4 KiB",
            size: 4 * KIB,
            tasks: 1,
        },
        Case {
            label: "4 KiB",
            size: 4 * KIB,
            tasks: CONCURRENCY,
        },
        Case {
            label: "1 MiB",
            size: MIB,
            tasks: 1,
        },
        Case {
            label: "1 MiB",
            size: MIB,
            tasks: CONCURRENCY,
        },
    ];
    let mut rows = Vec::new();
    for (id, case) in cases.into_iter().enumerate() {
        let id = id as u64;
        let (puts, put_secs) = run_puts(&store, case, id).await?;
        let (gets, get_secs) = run_gets(&store, case, id, puts).await?;
        eprintln!(
            "{} x{}: {puts} puts in {put_secs:.2} s, {gets} gets in {get_secs:.2} s",
            case.label, case.tasks
        );
        rows.push(Row {
            case,
            puts,
            put_secs,
            gets,
            get_secs,
        });
    }

    println!("Command: `cargo run --release -p reef-cache --example store_throughput`\n");
    println!(
        "Machine: {} CPUs (nproc), {}; store on {}\n",
        nproc(),
        cpu_model(),
        disk_of(dir.path())
    );
    println!("| object | tasks | puts | puts/s | put MiB/s | gets | gets/s | get MiB/s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let mib = r.case.size as f64 / MIB as f64;
        let put_rate = r.puts as f64 / r.put_secs;
        let get_rate = r.gets as f64 / r.get_secs;
        println!(
            "| {} | {} | {} | {:.0} | {:.1} | {} | {:.0} | {:.1} |",
            r.case.label,
            r.case.tasks,
            r.puts,
            put_rate,
            put_rate * mib,
            r.gets,
            get_rate,
            get_rate * mib
        );
    }
    println!(
        "\nA put is fill → start → write (64 KiB chunks) → commit (fsync temp file, rename, \
         fsync dir, index commit). A get is `Store::get` (lookup, open, length check) plus \
         reading the whole body; gets read objects just written, so mostly from the page cache. \
         Each case runs ≥ {MIN_OPS} ops and ~{} s.",
        TARGET.as_secs()
    );
    Ok(())
}
