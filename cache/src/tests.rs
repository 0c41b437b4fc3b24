//! Store-level tests against real files in temp dirs.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use http_cache_semantics::CachePolicy;
use reef_proto::ContentKey;
use tokio::sync::mpsc;

use crate::{Config, Error, Fill, Hit, HitBody, MAX_HOT_BODY, Meta, Outcome, Store, Tail, Writer};

fn key(n: u8) -> ContentKey {
    ContentKey::from_bytes([n; 32])
}

fn meta(url: &str) -> Meta {
    let req = http::Request::get(url).body(()).unwrap();
    let res = http::Response::builder()
        .header("cache-control", "max-age=60")
        .body(())
        .unwrap();
    Meta::new(
        url.to_string(),
        CachePolicy::new(&req, &res),
        200,
        vec![("content-type".into(), b"text/plain".to_vec())],
    )
}

/// Deterministic bytes that differ per seed, so a mix-up between bodies shows.
fn body(seed: u8, len: usize) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn open(dir: &Path, max_bytes: u64) -> Store {
    Store::open(Config {
        dir: dir.to_path_buf(),
        max_bytes,
        quotas: HashMap::new(),
    })
    .unwrap()
}

fn leader(store: &Store, k: ContentKey) -> crate::FillGuard {
    match store.fill(k) {
        Fill::Leader(g) => g,
        Fill::Follower(_) => panic!("expected to lead"),
    }
}

fn follower(store: &Store, k: ContentKey) -> crate::FillWait {
    match store.fill(k) {
        Fill::Follower(w) => w,
        Fill::Leader(_) => panic!("expected to follow"),
    }
}

async fn start(store: &Store, k: ContentKey) -> Writer {
    leader(store, k)
        .start(meta("http://a/x"), None)
        .await
        .unwrap()
}

async fn put(store: &Store, k: ContentKey, data: &[u8]) -> Meta {
    let mut w = start(store, k).await;
    for chunk in data.chunks(10_000) {
        w.write(chunk).await.unwrap();
    }
    w.commit().await.unwrap()
}

async fn read(store: &Store, k: ContentKey) -> Option<Vec<u8>> {
    let hit = store.get(&k).await.unwrap()?;
    let len = hit.meta.body_len;
    let out = body_of(hit);
    assert_eq!(out.len() as u64, len);
    Some(out)
}

/// The whole body of a hit, from memory or from its file.
fn body_of(hit: Hit) -> Vec<u8> {
    match hit.body {
        HitBody::Memory(bytes) => bytes.to_vec(),
        HitBody::File(mut file) => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut file, &mut out).unwrap();
            out
        }
    }
}

async fn drain(tail: &mut Tail) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    while let Some(chunk) = tail.next_chunk().await? {
        assert!(chunk.len() <= crate::TAIL_CHUNK);
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn temps(dir: &Path) -> usize {
    files_under(&dir.join("tmp")).len()
}

fn blobs(dir: &Path) -> Vec<PathBuf> {
    files_under(&dir.join("blobs"))
}

fn blob_path(dir: &Path, m: &Meta) -> PathBuf {
    let hex = blake3::Hash::from_bytes(m.body_hash).to_hex();
    dir.join("blobs").join(&hex[..2]).join(hex.as_str())
}

#[tokio::test]
async fn round_trip_keeps_exact_bytes_and_fills_meta() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10 << 20);
    let data = body(1, 300_000);
    let before = SystemTime::now();
    let m = put(&store, key(1), &data).await;
    assert_eq!(m.body_len, data.len() as u64);
    assert_eq!(m.body_hash, *blake3::hash(&data).as_bytes());
    assert!(m.stored_at >= before);

    let hit = store.get(&key(1)).await.unwrap().unwrap();
    assert_eq!(hit.meta.url, "http://a/x");
    assert_eq!(hit.meta.body_hash, m.body_hash);
    assert!(!hit.meta.policy.is_stale(SystemTime::now()));
    drop(hit);
    assert_eq!(read(&store, key(1)).await.unwrap(), data);

    let s = store.stats();
    assert_eq!((s.objects, s.bytes, s.max_bytes), (1, 300_000, 10 << 20));
    assert_eq!(store.keys(), vec![key(1)]);
    assert_eq!(temps(dir.path()), 0);
}

#[tokio::test]
async fn peek_reads_the_metadata_of_committed_objects_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1 << 20);
    let m = put(&store, key(1), &body(2, 1000)).await;
    let peeked = store.peek(&key(1)).await.unwrap().unwrap();
    assert_eq!(
        (peeked.url.as_str(), peeked.body_hash),
        ("http://a/x", m.body_hash)
    );
    assert!(store.peek(&key(2)).await.unwrap().is_none());
}

#[tokio::test]
async fn empty_body_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1000);
    put(&store, key(1), b"").await;
    assert_eq!(read(&store, key(1)).await.unwrap(), b"");
}

#[tokio::test]
async fn miss_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1000);
    assert!(store.get(&key(9)).await.unwrap().is_none());
    assert!(store.tail(&key(9)).is_none());
}

#[tokio::test]
async fn remove_deletes_entry_and_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1000);
    put(&store, key(1), b"hello").await;
    assert_eq!(blobs(dir.path()).len(), 1);
    assert!(store.remove(&key(1)).await.unwrap());
    assert!(store.get(&key(1)).await.unwrap().is_none());
    assert!(blobs(dir.path()).is_empty());
    assert_eq!(store.stats().bytes, 0);
    assert!(!store.remove(&key(1)).await.unwrap());
}

#[tokio::test]
async fn replacing_a_key_serves_the_new_body_and_frees_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1000);
    put(&store, key(1), b"old body").await;
    put(&store, key(1), b"new").await;
    assert_eq!(read(&store, key(1)).await.unwrap(), b"new");
    assert_eq!(blobs(dir.path()).len(), 1);
    assert_eq!(store.stats().bytes, 3);
    assert_eq!(store.stats().objects, 1);
}

fn open_lru(dir: &Path, max_bytes: u64) -> Store {
    let config = Config {
        dir: dir.to_path_buf(),
        max_bytes,
        quotas: HashMap::new(),
    };
    Store::open_with(config, |_| Box::new(crate::Lru::new())).unwrap()
}

#[tokio::test]
async fn lru_eviction_drops_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_lru(dir.path(), 300);
    put(&store, key(1), &body(1, 100)).await;
    put(&store, key(2), &body(2, 100)).await;
    put(&store, key(3), &body(3, 100)).await;
    // Touching 1 makes 2 the oldest.
    assert!(store.get(&key(1)).await.unwrap().is_some());
    put(&store, key(4), &body(4, 100)).await;
    assert!(store.get(&key(2)).await.unwrap().is_none());
    assert_eq!(store.stats().bytes, 300);
    put(&store, key(5), &body(5, 150)).await;
    // 3 (oldest), then 1 had to go to fit 150 more bytes.
    let mut keys = store.keys();
    keys.sort();
    assert_eq!(keys, vec![key(4), key(5)]);
    assert_eq!(store.stats().bytes, 250);
    assert_eq!(blobs(dir.path()).len(), 2);
    assert_eq!(read(&store, key(4)).await.unwrap(), body(4, 100));
}

#[tokio::test]
async fn default_eviction_keeps_objects_read_again_through_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1000);
    for n in 1..=5 {
        put(&store, key(n), &body(n, 100)).await;
        assert!(store.get(&key(n)).await.unwrap().is_some());
    }
    // Twenty objects fetched once each: ten times what is left of the budget.
    for n in 100..120 {
        put(&store, key(n), &body(n, 100)).await;
        assert!(store.stats().bytes <= 1000);
    }
    for n in 1..=5 {
        assert_eq!(read(&store, key(n)).await.unwrap(), body(n, 100));
    }
    assert_eq!(blobs(dir.path()).len(), store.keys().len());
}

#[tokio::test]
async fn default_eviction_does_not_let_one_huge_object_flush_the_hot_set() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1000);
    for n in 1..=8 {
        put(&store, key(n), &body(n, 100)).await;
        assert!(store.get(&key(n)).await.unwrap().is_some());
    }
    // Larger than the small queue's tenth of the budget and than the free space.
    put(&store, key(50), &body(50, 700)).await;
    assert!(store.stats().bytes <= 1000);
    for n in 1..=8 {
        assert_eq!(read(&store, key(n)).await.unwrap(), body(n, 100));
    }
    assert!(store.get(&key(50)).await.unwrap().is_none());
}

#[tokio::test]
async fn evicting_an_object_being_read_keeps_the_reader_working() {
    let dir = tempfile::tempdir().unwrap();
    // LRU, so the object just read is the one evicted.
    let store = open_lru(dir.path(), 100);
    let data = body(1, 100);
    put(&store, key(1), &data).await;
    let hit = store.get(&key(1)).await.unwrap().unwrap();
    put(&store, key(2), &body(2, 100)).await;
    assert!(store.get(&key(1)).await.unwrap().is_none());
    assert_eq!(body_of(hit), data);
}

#[tokio::test]
async fn too_large_body_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 100);
    let mut w = start(&store, key(1)).await;
    w.write(&[1; 60]).await.unwrap();
    assert!(matches!(w.write(&[2; 60]).await, Err(Error::TooLarge)));
    // A writer that failed can never commit a truncated body.
    assert!(matches!(w.write(&[3; 10]).await, Err(Error::Aborted)));
    assert!(matches!(w.commit().await, Err(Error::Aborted)));
    assert!(store.get(&key(1)).await.unwrap().is_none());
    assert_eq!(temps(dir.path()), 0);
    assert!(blobs(dir.path()).is_empty());
    // Exactly the budget is fine.
    put(&store, key(1), &[7; 100]).await;
    assert_eq!(read(&store, key(1)).await.unwrap(), vec![7; 100]);
}

#[tokio::test]
async fn aborted_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1000);
    let mut w = start(&store, key(1)).await;
    w.write(b"partial").await.unwrap();
    assert_eq!(temps(dir.path()), 1);
    drop(w);
    assert_eq!(temps(dir.path()), 0);
    assert!(blobs(dir.path()).is_empty());
    assert!(store.get(&key(1)).await.unwrap().is_none());
    assert!(store.keys().is_empty());
    assert!(store.tail(&key(1)).is_none());
    // The key can be filled again.
    put(&store, key(1), b"whole").await;
    assert_eq!(read(&store, key(1)).await.unwrap(), b"whole");
}

#[tokio::test]
async fn reopen_keeps_objects_and_orders_eviction_by_stored_at() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), 1000);
        put(&store, key(1), &body(1, 100)).await;
        put(&store, key(2), &body(2, 100)).await;
        put(&store, key(3), &body(3, 100)).await;
        // Recency is not persisted, so this touch is forgotten across the restart.
        assert!(store.get(&key(1)).await.unwrap().is_some());
    }
    let store = open(dir.path(), 1000);
    assert_eq!(store.stats().objects, 3);
    assert_eq!(store.stats().bytes, 300);
    for n in 1..=3 {
        assert_eq!(read(&store, key(n)).await.unwrap(), body(n, 100));
    }
    drop(store);

    // A smaller budget at open evicts the oldest stored first.
    let store = open(dir.path(), 200);
    let mut keys = store.keys();
    keys.sort();
    assert_eq!(keys, vec![key(2), key(3)]);
    assert_eq!(blobs(dir.path()).len(), 2);
}

#[tokio::test]
async fn crash_leftovers_are_cleaned_at_open_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let truncated;
    {
        let store = open(dir.path(), 10_000);
        put(&store, key(1), &body(1, 1000)).await;
        let m = put(&store, key(2), &body(2, 1000)).await;
        put(&store, key(3), &body(3, 1000)).await;
        truncated = blob_path(dir.path(), &m);
    }
    // A fill cut off before its rename, a blob renamed but never indexed, a body cut short,
    // and something that is not a blob at all.
    fs::write(
        dir.path().join("tmp/0123abcd.00000000000000ff.part"),
        b"half a body",
    )
    .unwrap();
    let stray = blake3::hash(b"stray").to_hex();
    let stray_path = dir
        .path()
        .join("blobs")
        .join(&stray[..2])
        .join(stray.as_str());
    fs::write(&stray_path, b"stray").unwrap();
    fs::write(dir.path().join("blobs/ab/not-a-blob"), b"?").unwrap();
    let f = fs::OpenOptions::new().write(true).open(&truncated).unwrap();
    f.set_len(500).unwrap();
    drop(f);

    let store = open(dir.path(), 10_000);
    assert_eq!(temps(dir.path()), 0);
    assert!(!stray_path.exists());
    assert!(!dir.path().join("blobs/ab/not-a-blob").exists());
    assert!(!truncated.exists());
    assert!(store.get(&key(2)).await.unwrap().is_none());
    let mut keys = store.keys();
    keys.sort();
    assert_eq!(keys, vec![key(1), key(3)]);
    assert_eq!(store.stats().bytes, 2000);
    assert_eq!(read(&store, key(1)).await.unwrap(), body(1, 1000));
    assert_eq!(read(&store, key(3)).await.unwrap(), body(3, 1000));
    drop(store);

    // The cleanup was persisted: a second open finds nothing more to drop.
    let store = open(dir.path(), 10_000);
    assert_eq!(store.stats().objects, 2);
}

#[tokio::test]
async fn get_drops_an_entry_whose_body_was_damaged_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10_000);
    let m = put(&store, key(1), &body(1, 1000)).await;
    let m2 = put(&store, key(2), &body(2, 1000)).await;
    fs::OpenOptions::new()
        .write(true)
        .open(blob_path(dir.path(), &m))
        .unwrap()
        .set_len(999)
        .unwrap();
    fs::remove_file(blob_path(dir.path(), &m2)).unwrap();
    assert!(store.get(&key(1)).await.unwrap().is_none());
    assert!(store.get(&key(2)).await.unwrap().is_none());
    assert!(store.keys().is_empty());
    assert_eq!(store.stats().bytes, 0);
    assert!(blobs(dir.path()).is_empty());
    drop(store);
    assert_eq!(open(dir.path(), 10_000).stats().objects, 0);
}

#[tokio::test]
async fn identical_bodies_are_stored_once_and_removal_keeps_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10_000);
    let data = body(7, 5000);
    let a = put(&store, key(1), &data).await;
    let b = put(&store, key(2), &data).await;
    assert_eq!(a.body_hash, b.body_hash);
    assert_eq!(blobs(dir.path()).len(), 1);
    assert_eq!(store.stats().objects, 2);
    assert_eq!(store.stats().bytes, 5000);
    assert_eq!(temps(dir.path()), 0);

    assert!(store.remove(&key(1)).await.unwrap());
    assert_eq!(read(&store, key(2)).await.unwrap(), data);
    assert_eq!(blobs(dir.path()).len(), 1);
    drop(store);

    // Sharing is rebuilt at open.
    let store = open(dir.path(), 10_000);
    put(&store, key(3), &data).await;
    assert!(store.remove(&key(2)).await.unwrap());
    assert_eq!(read(&store, key(3)).await.unwrap(), data);
    assert!(store.remove(&key(3)).await.unwrap());
    assert!(blobs(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_stream_the_leaders_bytes_while_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10 << 20);
    let data = body(3, 400_000);
    let half = 150_000;

    let guard = leader(&store, key(1));
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let wait = follower(&store, key(1));
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let Outcome::Streaming(mut tail) = wait.wait().await else {
                panic!("expected streaming");
            };
            assert_eq!(tail.meta().body_len, 0);
            let mut got = Vec::new();
            while got.len() < half {
                got.extend_from_slice(&tail.next_chunk().await.unwrap().unwrap());
            }
            // The leader holds the rest back until every follower has seen the first part.
            tx.send(()).await.unwrap();
            got.extend(drain(&mut tail).await.unwrap());
            got
        }));
    }
    drop(tx);

    let mut w = guard.start(meta("http://a/x"), None).await.unwrap();
    w.write(&data[..half]).await.unwrap();
    for _ in 0..10 {
        rx.recv().await.unwrap();
    }
    for chunk in data[half..].chunks(30_000) {
        w.write(chunk).await.unwrap();
    }
    w.commit().await.unwrap();

    for t in tasks {
        assert_eq!(t.await.unwrap(), data);
    }
    assert_eq!(read(&store, key(1)).await.unwrap(), data);
    // Once committed, the next caller leads a new fill.
    assert!(matches!(store.fill(key(1)), Fill::Leader(_)));
}

#[tokio::test]
async fn skip_tells_followers_to_fetch_uncached() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1000);
    let guard = leader(&store, key(1));
    let waits: Vec<_> = (0..10).map(|_| follower(&store, key(1))).collect();
    guard.skip();
    for w in waits {
        assert!(matches!(w.wait().await, Outcome::Uncached));
    }
    assert!(matches!(store.fill(key(1)), Fill::Leader(_)));
}

#[tokio::test]
async fn dropped_leader_fails_followers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1000);
    let guard = leader(&store, key(1));
    let waits: Vec<_> = (0..10).map(|_| follower(&store, key(1))).collect();
    let pending = tokio::spawn(follower(&store, key(1)).wait());
    drop(guard);
    for w in waits {
        assert!(matches!(w.wait().await, Outcome::Failed));
    }
    assert!(matches!(pending.await.unwrap(), Outcome::Failed));
    assert!(matches!(store.fill(key(1)), Fill::Leader(_)));
}

#[tokio::test]
async fn aborted_writer_fails_tails_midway() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1000);
    let guard = leader(&store, key(1));
    let wait = follower(&store, key(1));
    let mut w = guard.start(meta("http://a/x"), None).await.unwrap();
    w.write(b"first part").await.unwrap();
    let Outcome::Streaming(mut tail) = wait.wait().await else {
        panic!("expected streaming");
    };
    assert_eq!(
        tail.next_chunk().await.unwrap().unwrap(),
        &b"first part"[..]
    );
    let reader = tokio::spawn(async move { tail.next_chunk().await });
    drop(w);
    assert!(matches!(reader.await.unwrap(), Err(Error::Aborted)));
    // A follower arriving after the abort leads instead.
    assert!(matches!(store.fill(key(1)), Fill::Leader(_)));
    assert_eq!(temps(dir.path()), 0);
}

#[tokio::test]
async fn tail_reads_an_in_progress_fill_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1000);
    let guard = leader(&store, key(1));
    // Nothing to read until the leader knows the response is cacheable.
    assert!(store.tail(&key(1)).is_none());
    let mut w = guard.start(meta("http://a/tail"), None).await.unwrap();
    w.write(b"abc").await.unwrap();
    let mut early = store.tail(&key(1)).unwrap();
    assert_eq!(early.meta().url, "http://a/tail");
    assert_eq!(early.next_chunk().await.unwrap().unwrap(), &b"abc"[..]);
    w.write(b"def").await.unwrap();
    let mut late = store.tail(&key(1)).unwrap();
    w.commit().await.unwrap();
    assert_eq!(drain(&mut early).await.unwrap(), b"def");
    assert_eq!(drain(&mut late).await.unwrap(), b"abcdef");
    assert!(store.tail(&key(1)).is_none());
}

#[tokio::test]
async fn fills_beyond_the_cap_fetch_without_storing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1000);
    let guards: Vec<_> = (0..crate::MAX_FILLS)
        .map(|i| {
            leader(
                &store,
                ContentKey::from_bytes([
                    (i % 256) as u8,
                    (i / 256) as u8,
                    1,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ]),
            )
        })
        .collect();
    let extra = leader(&store, key(200));
    assert!(matches!(
        extra.start(meta("http://a/x"), None).await,
        Err(Error::Busy)
    ));
    drop(guards);
    put(&store, key(200), b"ok").await;
}

#[tokio::test]
async fn oversized_meta_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1000);
    let big = "x".repeat(crate::MAX_META_LEN);
    let m = Meta::new(big, meta("http://a/x").policy, 200, Vec::new());
    assert!(matches!(
        leader(&store, key(1)).start(m, None).await,
        Err(Error::MetaTooLarge { .. })
    ));
    assert_eq!(temps(dir.path()), 0);
}

#[tokio::test]
async fn meta_encoding_round_trips_and_rejects_unknown_versions() {
    let m = meta("http://a/x");
    let bytes = crate::meta::encode(&m).unwrap();
    let back = crate::meta::decode(&bytes).unwrap();
    assert_eq!(back.url, m.url);
    assert_eq!(back.stored_at, m.stored_at);
    let mut wrong = bytes.clone();
    wrong[0] = 99;
    assert!(matches!(
        crate::meta::decode(&wrong),
        Err(Error::Corrupt(_))
    ));
    assert!(matches!(crate::meta::decode(&[]), Err(Error::Corrupt(_))));
}

#[tokio::test]
async fn a_second_store_on_a_live_directory_is_refused_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1000);
    let mut w = start(&store, key(1)).await;
    w.write(b"in progress").await.unwrap();
    let second = Store::open(Config {
        dir: dir.path().to_path_buf(),
        max_bytes: 1000,
        quotas: HashMap::new(),
    });
    assert!(matches!(second, Err(Error::Db(_))));
    assert_eq!(temps(dir.path()), 1);
    w.commit().await.unwrap();
    assert_eq!(read(&store, key(1)).await.unwrap(), b"in progress");
}

#[tokio::test]
async fn refresh_replaces_metadata_but_only_for_the_same_body() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1 << 20);
    let k = key(201);
    let stored = put(&store, k, b"same body").await;

    let mut updated = stored.clone();
    updated.headers = vec![("etag".into(), b"\"v2\"".to_vec())];
    assert!(store.refresh(&k, updated).await.unwrap());
    let hit = store.get(&k).await.unwrap().unwrap();
    assert_eq!(
        hit.meta.headers,
        vec![("etag".to_string(), b"\"v2\"".to_vec())]
    );
    assert_eq!(read(&store, k).await.unwrap(), b"same body");

    // A refresh naming another body, or a key that is gone, writes nothing.
    let mut other = stored.clone();
    other.body_hash = [7; 32];
    assert!(!store.refresh(&k, other).await.unwrap());
    assert!(store.remove(&k).await.unwrap());
    assert!(!store.refresh(&k, stored).await.unwrap());
    assert!(store.get(&k).await.unwrap().is_none());
}

#[tokio::test]
async fn removing_a_family_removes_every_variant_also_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1 << 20);
    let (primary, gzip, plain, other) = (key(1), key(2), key(3), key(4));
    let mut index = meta("http://a/v");
    index.vary = Some(vec!["accept-encoding".into()]);
    leader(&store, primary)
        .start(index, None)
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    for (k, seed) in [(gzip, 2), (plain, 3)] {
        let mut m = meta("http://a/v");
        m.variant_of = Some(primary);
        let mut w = leader(&store, k).start(m, None).await.unwrap();
        w.write(&body(seed, 100)).await.unwrap();
        w.commit().await.unwrap();
    }
    put(&store, other, &body(4, 100)).await;
    drop(store);

    let store = open(dir.path(), 1 << 20);
    let hit = store.get(&primary).await.unwrap().unwrap();
    assert!(hit.meta.is_vary_index());
    let mut removed = store.purge_url(&primary, "http://a/v").await.unwrap();
    removed.sort();
    assert_eq!(removed, vec![primary, gzip, plain]);
    assert!(read(&store, gzip).await.is_none());
    assert!(read(&store, plain).await.is_none());
    assert_eq!(read(&store, other).await.unwrap(), body(4, 100));
    assert!(
        store
            .purge_url(&primary, "http://a/v")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_bodiless_entry_is_stored_and_followers_look_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1 << 20);
    let guard = leader(&store, key(1));
    let wait = follower(&store, key(1));
    guard.put_bodiless(meta("http://a/i")).await.unwrap();
    assert!(matches!(wait.wait().await, Outcome::Uncached));
    let hit = store.get(&key(1)).await.unwrap().unwrap();
    assert_eq!(hit.meta.body_len, 0);
    // A second bodiless entry shares the empty blob; removing one keeps the other readable.
    leader(&store, key(2))
        .put_bodiless(meta("http://a/j"))
        .await
        .unwrap();
    assert!(store.remove(&key(1)).await.unwrap());
    assert_eq!(read(&store, key(2)).await.unwrap(), b"");
    assert_eq!(temps(dir.path()), 0);
}

// Quotas.

fn open_quotas(dir: &Path, max_bytes: u64, quotas: &[(&str, u64)]) -> Store {
    Store::open(Config {
        dir: dir.to_path_buf(),
        max_bytes,
        quotas: quotas.iter().map(|(t, q)| (t.to_string(), *q)).collect(),
    })
    .unwrap()
}

fn tenant_meta(tenant: &str) -> Meta {
    meta("http://a/x").with_tenant(tenant)
}

/// Stores `data` for `tenant`, announcing its length up front.
async fn put_for(store: &Store, k: ContentKey, tenant: &str, data: &[u8]) -> Result<Meta, Error> {
    let len = Some(data.len() as u64);
    let mut w = leader(store, k).start(tenant_meta(tenant), len).await?;
    for chunk in data.chunks(10_000) {
        w.write(chunk).await?;
    }
    w.commit().await
}

fn usage(store: &Store, tenant: &str) -> (u64, u64, u64) {
    let q = store.quotas()[tenant];
    (q.bytes, q.objects, q.rejected)
}

fn reserved(store: &Store, tenant: &str) -> u64 {
    crate::store::lock(&store.inner.catalog).reserved(tenant)
}

#[tokio::test]
async fn a_known_length_over_the_quota_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_quotas(dir.path(), 10_000, &[("t", 1000)]);
    put_for(&store, key(1), "t", &body(1, 600)).await.unwrap();
    assert_eq!(usage(&store, "t"), (600, 1, 0));

    let guard = leader(&store, key(2));
    let wait = follower(&store, key(2));
    let refused = guard.start(tenant_meta("t"), Some(600)).await;
    assert!(matches!(refused, Err(Error::OverQuota { ref tenant }) if tenant == "t"));
    // Followers fetch on their own, as for any response that is not stored.
    assert!(matches!(wait.wait().await, Outcome::Uncached));
    assert_eq!(usage(&store, "t"), (600, 1, 1));
    assert_eq!(temps(dir.path()), 0);
    assert!(store.get(&key(2)).await.unwrap().is_none());

    // What still fits is stored, up to exactly the quota; other tenants only share the budget.
    put_for(&store, key(3), "t", &body(3, 400)).await.unwrap();
    put_for(&store, key(4), "u", &body(4, 5000)).await.unwrap();
    put(&store, key(5), &body(5, 2000)).await;
    assert_eq!(usage(&store, "t"), (1000, 2, 1));
    assert_eq!(store.quotas().len(), 1);
    assert_eq!(store.quotas()["t"].quota, 1000);
    assert_eq!(store.stats().bytes, 8000);
}

#[tokio::test]
async fn a_body_that_goes_over_the_quota_midway_reaches_its_readers_but_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_quotas(dir.path(), 10_000, &[("t", 1000)]);
    put_for(&store, key(1), "t", &body(1, 600)).await.unwrap();
    let data = body(2, 900);

    let guard = leader(&store, key(2));
    let late_follower = follower(&store, key(2));
    let mut w = guard.start(tenant_meta("t"), None).await.unwrap();
    let mut tail = store.tail(&key(2)).unwrap();
    w.write(&data[..300]).await.unwrap();
    assert_eq!(reserved(&store, "t"), 300);
    assert_eq!(tail.next_chunk().await.unwrap().unwrap(), &data[..300]);
    // 600 stored + 600 written would pass 1000: still written, no longer held.
    w.write(&data[300..600]).await.unwrap();
    assert_eq!(reserved(&store, "t"), 0);
    assert_eq!(usage(&store, "t"), (600, 1, 1));
    // What the refused body gave back, another fill of the tenant may use meanwhile.
    put_for(&store, key(3), "t", &body(3, 400)).await.unwrap();
    w.write(&data[600..]).await.unwrap();
    assert!(matches!(w.commit().await, Err(Error::OverQuota { .. })));

    assert_eq!(drain(&mut tail).await.unwrap(), &data[300..]);
    // A follower that looks only after the end still reads the whole body.
    let Outcome::Streaming(mut late) = late_follower.wait().await else {
        panic!("expected streaming");
    };
    assert_eq!(drain(&mut late).await.unwrap(), data);

    assert!(store.get(&key(2)).await.unwrap().is_none());
    assert!(store.tail(&key(2)).is_none());
    assert_eq!(temps(dir.path()), 0);
    assert_eq!(blobs(dir.path()).len(), 2);
    assert_eq!(usage(&store, "t"), (1000, 2, 1));
    assert_eq!(reserved(&store, "t"), 0);
    // The key can be filled again once there is room.
    assert!(store.remove(&key(1)).await.unwrap());
    put_for(&store, key(2), "t", &data[..500]).await.unwrap();
    assert_eq!(read(&store, key(2)).await.unwrap(), &data[..500]);
}

#[tokio::test]
async fn fills_in_progress_hold_their_share_until_they_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_quotas(dir.path(), 10_000, &[("t", 1000)]);
    let first = leader(&store, key(1))
        .start(tenant_meta("t"), Some(600))
        .await
        .unwrap();
    assert_eq!(reserved(&store, "t"), 600);
    let second = leader(&store, key(2))
        .start(tenant_meta("t"), Some(600))
        .await;
    assert!(matches!(second, Err(Error::OverQuota { .. })));
    // An aborted fill gives its share back.
    drop(first);
    assert_eq!(reserved(&store, "t"), 0);
    put_for(&store, key(2), "t", &body(2, 600)).await.unwrap();
    assert_eq!(usage(&store, "t"), (600, 1, 1));
    assert_eq!(reserved(&store, "t"), 0);
}

#[tokio::test]
async fn usage_drops_on_removal_eviction_and_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        dir: dir.path().to_path_buf(),
        max_bytes: 300,
        quotas: HashMap::from([("t".to_string(), 250)]),
    };
    let store = Store::open_with(config, |_| Box::new(crate::Lru::new())).unwrap();
    put_for(&store, key(1), "t", &body(1, 100)).await.unwrap();
    put_for(&store, key(2), "t", &body(2, 100)).await.unwrap();
    assert_eq!(usage(&store, "t"), (200, 2, 0));
    assert!(store.remove(&key(1)).await.unwrap());
    assert_eq!(usage(&store, "t"), (100, 1, 0));

    // Replacing a key is credited with the copy it replaces: 100 + 200 would not fit in 250.
    put_for(&store, key(2), "t", &body(3, 200)).await.unwrap();
    assert_eq!(usage(&store, "t"), (200, 1, 0));

    // The global budget evicts the least recently used, whoever it belongs to.
    put(&store, key(3), &body(4, 100)).await;
    put(&store, key(4), &body(5, 100)).await;
    assert!(store.get(&key(2)).await.unwrap().is_none());
    assert_eq!(usage(&store, "t"), (0, 0, 0));
}

#[tokio::test]
async fn a_shared_body_counts_for_each_tenant_that_stores_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_quotas(dir.path(), 10_000, &[("a", 1000), ("b", 1000)]);
    let data = body(1, 500);
    put_for(&store, key(1), "a", &data).await.unwrap();
    put_for(&store, key(2), "b", &data).await.unwrap();
    assert_eq!(store.stats().bytes, 500);
    assert_eq!(usage(&store, "a"), (500, 1, 0));
    assert_eq!(usage(&store, "b"), (500, 1, 0));
    assert!(store.remove(&key(1)).await.unwrap());
    assert_eq!(usage(&store, "a"), (0, 0, 0));
    assert_eq!(usage(&store, "b"), (500, 1, 0));
}

#[tokio::test]
async fn usage_is_rebuilt_at_open_from_the_quotas_of_that_run() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_quotas(dir.path(), 10_000, &[("t", 1000)]);
        put_for(&store, key(1), "t", &body(1, 300)).await.unwrap();
        put_for(&store, key(2), "t", &body(2, 200)).await.unwrap();
        assert!(put_for(&store, key(3), "t", &body(3, 600)).await.is_err());
        put_for(&store, key(4), "other", &body(4, 50))
            .await
            .unwrap();
        put(&store, key(5), &body(5, 100)).await;
    }
    let store = open_quotas(dir.path(), 10_000, &[("t", 1000)]);
    // Refusals are counted per run.
    assert_eq!(usage(&store, "t"), (500, 2, 0));
    drop(store);

    // A quota added later counts what the tenant already holds, and evicts none of it.
    let store = open_quotas(dir.path(), 10_000, &[("other", 10)]);
    assert_eq!(usage(&store, "other"), (50, 1, 0));
    assert!(matches!(
        put_for(&store, key(6), "other", b"x").await,
        Err(Error::OverQuota { .. })
    ));
    assert_eq!(read(&store, key(4)).await.unwrap(), body(4, 50));
    assert_eq!(store.stats().objects, 4);
}

#[tokio::test]
async fn entries_written_before_tenants_existed_still_open() {
    // The layout of a version-1 entry before it carried a tenant.
    let m = meta("http://a/x");
    let mut old = serde_json::to_value(&m).unwrap();
    old.as_object_mut().unwrap().remove("tenant");
    let mut bytes = vec![1u8];
    bytes.extend(serde_json::to_vec(&old).unwrap());
    let back = crate::meta::decode(&bytes).unwrap();
    assert_eq!(back.tenant, None);
    assert!(
        crate::meta::decode_summary(&bytes)
            .unwrap()
            .tenant
            .is_none()
    );
    let tagged = crate::meta::encode(&m.with_tenant("t")).unwrap();
    assert_eq!(
        crate::meta::decode_summary(&tagged)
            .unwrap()
            .tenant
            .as_deref(),
        Some("t")
    );
}

async fn put_url(store: &Store, k: ContentKey, url: &str, data: &[u8]) -> Meta {
    let mut w = leader(store, k).start(meta(url), None).await.unwrap();
    w.write(data).await.unwrap();
    w.commit().await.unwrap()
}

#[tokio::test]
async fn purge_url_removes_the_object_and_its_body() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1000);
    put(&store, key(1), b"hello").await;
    assert_eq!(
        store.purge_url(&key(1), "http://a/x").await.unwrap(),
        vec![key(1)]
    );
    assert!(store.get(&key(1)).await.unwrap().is_none());
    assert!(blobs(dir.path()).is_empty());
    assert!(
        store
            .purge_url(&key(1), "http://a/x")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn purge_prefix_removes_exactly_the_matching_urls() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10_000);
    put_url(&store, key(1), "http://h/dir/a", b"one").await;
    put_url(&store, key(2), "http://h/dir/sub/b", b"two").await;
    put_url(&store, key(3), "http://h/directory", b"three").await;
    put_url(&store, key(4), "http://h/other/dir/c", b"four").await;
    // Shares its body with a purged object: the body file must survive.
    put_url(&store, key(5), "http://other/dir/a", b"one").await;

    let mut removed = store.purge_prefix("http://h/dir/").await.unwrap();
    removed.sort();
    assert_eq!(removed, vec![key(1), key(2)]);
    for k in [1, 2] {
        assert!(store.get(&key(k)).await.unwrap().is_none(), "{k}");
    }
    for (k, body) in [(3, &b"three"[..]), (4, b"four"), (5, b"one")] {
        assert_eq!(read(&store, key(k)).await.unwrap(), body, "{k}");
    }
    assert_eq!(store.stats().objects, 3);
    assert_eq!(blobs(dir.path()).len(), 3);
    assert!(
        store
            .purge_prefix("http://h/dir/")
            .await
            .unwrap()
            .is_empty()
    );

    // What a purge removed stays removed after a restart.
    drop(store);
    let store = open(dir.path(), 10_000);
    assert_eq!(store.stats().objects, 3);
    assert!(store.get(&key(1)).await.unwrap().is_none());
}

#[tokio::test]
async fn a_fill_under_way_is_served_but_not_stored_after_a_purge() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10_000);
    let guard = leader(&store, key(1));
    let wait = follower(&store, key(1));
    let mut w = guard.start(meta("http://h/dir/x"), None).await.unwrap();
    w.write(b"before ").await.unwrap();
    let Outcome::Streaming(mut tail) = wait.wait().await else {
        panic!("expected streaming");
    };

    assert!(
        store
            .purge_prefix("http://h/dir/")
            .await
            .unwrap()
            .is_empty()
    );
    // A request after the purge does not join the old fill.
    let fresh = leader(&store, key(1));
    assert!(store.tail(&key(1)).is_none());

    w.write(b"purge").await.unwrap();
    assert!(matches!(w.commit().await, Err(Error::Purged)));
    // The reader that was already there gets the whole body.
    assert_eq!(drain(&mut tail).await.unwrap(), b"before purge");
    assert!(store.get(&key(1)).await.unwrap().is_none());
    assert!(blobs(dir.path()).is_empty());
    assert_eq!(temps(dir.path()), 0);

    // The fill started after the purge stores normally.
    let mut w = fresh.start(meta("http://h/dir/x"), None).await.unwrap();
    w.write(b"after").await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(read(&store, key(1)).await.unwrap(), b"after");
}

#[tokio::test]
async fn a_prefix_purge_stops_fills_that_do_not_know_their_url_yet_and_spares_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10_000);
    // Waiting for its response head: its URL is unknown, so the purge must assume it matches.
    let pending = leader(&store, key(1));
    // Streaming another URL: not touched.
    let mut other = leader(&store, key(2))
        .start(meta("http://h/elsewhere"), None)
        .await
        .unwrap();
    store.purge_prefix("http://h/dir/").await.unwrap();

    let mut w = pending.start(meta("http://h/dir/y"), None).await.unwrap();
    w.write(b"x").await.unwrap();
    assert!(matches!(w.commit().await, Err(Error::Purged)));
    other.write(b"kept").await.unwrap();
    other.commit().await.unwrap();
    assert!(store.get(&key(1)).await.unwrap().is_none());
    assert_eq!(read(&store, key(2)).await.unwrap(), b"kept");
}

#[tokio::test]
async fn purge_url_stops_a_fill_of_that_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10_000);
    let mut purged = leader(&store, key(1))
        .start(meta("http://h/a"), None)
        .await
        .unwrap();
    let mut kept = leader(&store, key(2))
        .start(meta("http://h/b"), None)
        .await
        .unwrap();
    assert!(
        store
            .purge_url(&key(1), "http://h/a")
            .await
            .unwrap()
            .is_empty()
    );
    purged.write(b"a").await.unwrap();
    kept.write(b"b").await.unwrap();
    assert!(matches!(purged.commit().await, Err(Error::Purged)));
    kept.commit().await.unwrap();
    assert!(store.get(&key(1)).await.unwrap().is_none());
    assert_eq!(read(&store, key(2)).await.unwrap(), b"b");
}

#[tokio::test]
async fn hot_entries_follow_every_change_of_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10_000_000);
    let a = body(1, 1000);
    put(&store, key(1), &a).await;
    // Read from disk first, then from memory; the same bytes either way.
    for _ in 0..2 {
        let hit = store.get(&key(1)).await.unwrap().unwrap();
        assert!(matches!(hit.body, HitBody::Memory(_)));
        assert_eq!(body_of(hit), a);
    }
    // Replaced: the new body at once.
    let b = body(2, 2000);
    put(&store, key(1), &b).await;
    assert_eq!(read(&store, key(1)).await.unwrap(), b);
    assert_eq!(read(&store, key(1)).await.unwrap(), b);
    // Refreshed (a revalidation's new headers): the new metadata at once.
    let mut refreshed = store
        .get(&key(1))
        .await
        .unwrap()
        .unwrap()
        .meta
        .as_ref()
        .clone();
    refreshed
        .headers
        .push(("x-refreshed".into(), b"1".to_vec()));
    assert!(store.refresh(&key(1), refreshed).await.unwrap());
    let hit = store.get(&key(1)).await.unwrap().unwrap();
    assert!(hit.meta.headers.iter().any(|(n, _)| n == "x-refreshed"));
    assert_eq!(body_of(hit), b);
    // Removed, or purged: gone at once.
    assert!(store.remove(&key(1)).await.unwrap());
    assert!(store.get(&key(1)).await.unwrap().is_none());
    put(&store, key(2), &a).await;
    assert_eq!(read(&store, key(2)).await.unwrap(), a);
    store.purge_url(&key(2), "http://x/").await.unwrap();
    assert!(store.get(&key(2)).await.unwrap().is_none());
}

#[tokio::test]
async fn a_hot_small_object_is_served_without_touching_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10_000_000);
    let data = body(4, 5000);
    let m = put(&store, key(1), &data).await;
    assert_eq!(read(&store, key(1)).await.unwrap(), data);
    // The file changes behind the store's back; the copy read (and length-checked) stays.
    fs::OpenOptions::new()
        .write(true)
        .open(blob_path(dir.path(), &m))
        .unwrap()
        .set_len(10)
        .unwrap();
    assert_eq!(read(&store, key(1)).await.unwrap(), data);
}

#[tokio::test]
async fn large_bodies_are_read_from_their_file_on_every_hit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10_000_000);
    let data = body(3, MAX_HOT_BODY as usize + 1);
    put(&store, key(1), &data).await;
    for _ in 0..2 {
        let hit = store.get(&key(1)).await.unwrap().unwrap();
        assert!(matches!(hit.body, HitBody::File(_)));
        assert_eq!(body_of(hit), data);
    }
}
