//! Sign and verify cost per record kind: the figure "sign and verify cost per record".
//!
//! ```sh
//! cargo run --release -p reef-proto --example sign_verify            # 10 000 iterations
//! cargo run --release -p reef-proto --example sign_verify -- 50000
//! ```
//!
//! Prints a markdown table: for each kind, the sealed size, then µs per `seal` and per `open`
//! (signature check, time checks, decoding and the record's own checks; a carried provider
//! certificate is opened too) and the matching operations per second on one core.

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use reef_proto::ContentKey;
use reef_proto::records::{
    Capacity, CapacityOffer, ContentRecord, LoadReport, NodeRecord, ProviderCert, ProviderKey,
    Record, RecordError, open, peer_id_bytes, seal,
};

/// 2027-01-15, an arbitrary fixed clock.
const NOW: u64 = 1_800_000_000_000;
const HOUR: u64 = 60 * 60 * 1000;
const DEFAULT_ITERATIONS: u32 = 10_000;

struct Row {
    name: &'static str,
    bytes: usize,
    seal: Duration,
    open: Duration,
}

fn main() -> Result<(), Box<dyn Error>> {
    let iterations = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => DEFAULT_ITERATIONS,
    };
    let provider = ProviderKey::from_bytes(&[1; 32]);
    let node = SigningKey::from_bytes(&[2; 32]);
    let peer_id = peer_id_bytes(&node.verifying_key().to_bytes());
    let cert_record = ProviderCert {
        provider: provider.id(),
        name: "acme".into(),
        node: peer_id.clone(),
    };
    let cert = seal(provider.signing_key(), &cert_record, NOW, NOW + 24 * HOUR)?;
    let node_record = |cert: Option<Vec<u8>>| NodeRecord {
        peer_id: peer_id.clone(),
        http: "198.51.100.7:8080".into(),
        region: "eu".into(),
        listen_addrs: vec![
            "/ip4/198.51.100.7/tcp/4001".into(),
            "/ip4/198.51.100.7/udp/4001/quic-v1".into(),
        ],
        capacity: Capacity {
            req_per_s: 5_000,
            mbit_per_s: 1_000,
        },
        cert,
    };
    let load_report = |cert: Option<Vec<u8>>| LoadReport {
        peer_id: peer_id.clone(),
        cert,
        seq: 7,
        req_per_s: 1_200,
        egress_bytes_per_s: 50_000_000,
        utilisation_permille: 640,
        hit_ratio_permille: 910,
        demand_permille: 900,
    };
    let content = ContentRecord {
        key: ContentKey::from_bytes([0xc0; 32]),
        body_hash: *blake3::hash(b"hello").as_bytes(),
        body_len: 5,
        etag: Some("\"5d41402abc4b2a76\"".into()),
        last_modified: Some("Sun, 06 Nov 1994 08:49:37 GMT".into()),
    };
    let offer = CapacityOffer {
        provider: provider.id(),
        name: "acme".into(),
        req_per_s: 20_000,
        mbit_per_s: 10_000,
        regions: vec!["eu".into(), "us-east".into()],
        price_micros_per_gb: 12_000,
        min_duration_s: 300,
        max_duration_s: 86_400,
    };

    let rows = vec![
        baseline(&node, iterations),
        measure(
            "ProviderCert",
            provider.signing_key(),
            &cert_record,
            24 * HOUR,
            iterations,
        )?,
        measure(
            "NodeRecord, no cert",
            &node,
            &node_record(None),
            HOUR,
            iterations,
        )?,
        measure(
            "NodeRecord + cert",
            &node,
            &node_record(Some(cert.clone())),
            HOUR,
            iterations,
        )?,
        measure("ContentRecord", &node, &content, HOUR, iterations)?,
        measure(
            "CapacityOffer",
            provider.signing_key(),
            &offer,
            HOUR,
            iterations,
        )?,
        measure(
            "LoadReport, no cert",
            &node,
            &load_report(None),
            5_000,
            iterations,
        )?,
        measure(
            "LoadReport + cert",
            &node,
            &load_report(Some(cert)),
            5_000,
            iterations,
        )?,
    ];

    println!("{iterations} iterations each, one thread\n");
    println!("| record | bytes | seal µs/op | seal ops/s | open µs/op | open ops/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {:.1} | {:.0} | {:.1} | {:.0} |",
            row.name,
            row.bytes,
            micros_per_op(row.seal, iterations),
            ops_per_s(row.seal, iterations),
            micros_per_op(row.open, iterations),
            ops_per_s(row.open, iterations),
        );
    }
    Ok(())
}

/// Bare ed25519 over a 64-byte message, to show what the envelope adds.
fn baseline(key: &SigningKey, iterations: u32) -> Row {
    let message = [0x5a; 64];
    let signature = key.sign(&message);
    let public = key.verifying_key();
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(key.sign(black_box(&message)));
    }
    let seal = start.elapsed();
    let start = Instant::now();
    for _ in 0..iterations {
        let _ = black_box(public.verify_strict(black_box(&message), &signature));
    }
    Row {
        name: "(bare ed25519 sign / verify_strict, 64 B)",
        bytes: 64,
        seal,
        open: start.elapsed(),
    }
}

fn measure<T: Record>(
    name: &'static str,
    key: &SigningKey,
    record: &T,
    lifetime: u64,
    iterations: u32,
) -> Result<Row, RecordError> {
    let sealed = seal(key, record, NOW, NOW + lifetime)?;
    // Warm up, and make sure what is timed is the success path.
    open::<T>(&sealed, NOW)?;
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(seal(key, black_box(record), NOW, NOW + lifetime)?);
    }
    let seal_time = start.elapsed();
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(open::<T>(black_box(&sealed), NOW)?);
    }
    Ok(Row {
        name,
        bytes: sealed.len(),
        seal: seal_time,
        open: start.elapsed(),
    })
}

fn micros_per_op(total: Duration, iterations: u32) -> f64 {
    total.as_secs_f64() * 1e6 / f64::from(iterations.max(1))
}

fn ops_per_s(total: Duration, iterations: u32) -> f64 {
    f64::from(iterations) / total.as_secs_f64().max(f64::MIN_POSITIVE)
}
