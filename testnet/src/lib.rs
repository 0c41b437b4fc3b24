//! `reef-testnet`: run a real Reef network on one machine.
//!
//! What this crate owns:
//! - [`Origin`], an in-process HTTP/1.1 origin (optionally TLS) with deterministic,
//!   streamed bodies, per-path hit and 304 counters, and a route whose response header
//!   fields a test sets in the URL, so tests can check bytes, count how often the origin
//!   was really asked, and exercise each caching rule;
//! - [`NodeProcess`], one real `reef` process: argument building, log file, readiness
//!   (`runtime.json`), status polling over the admin API, graceful stop, crash (SIGKILL),
//!   restart, and cleanup that leaves no orphan behind;
//! - [`Testnet`], N nodes of K providers on their own loopback addresses plus an origin,
//!   launched, joined and described in a JSON [`Manifest`]; each provider is a real key made
//!   with `reef provider init`, and its nodes are certified with it;
//! - [`client`], a tiny hyper client that fetches through a node used as forward proxy, or
//!   asks a node for a service by name;
//! - [`crowd`], an open-loop flash crowd of such clients that follow redirects;
//! - [`bench`], the foundation measurements (join time, DHT lookup, peer fetch, origin
//!   offload, idle memory) behind `reef-testnet bench`;
//! - [`bench_cold`], a cold flash crowd (many clients on many nodes asking for the same new
//!   objects at once) and how often the origin was asked per object, behind
//!   `reef-testnet bench-cold`;
//! - [`bench_dht`], provider lookup latency and peers asked, idle memory and CPU per node, at
//!   several testnet sizes, behind `reef-testnet bench-dht`;
//! - [`bench_load`], load gossip convergence and traffic at several testnet sizes, behind
//!   `reef-testnet bench-load`;
//! - [`bench_dns`], DNS answers per second and answer latency of one node, behind
//!   `reef-testnet bench-dns`, with [`dns_client`], the few bytes of DNS it needs;
//! - [`bench_peering`], a flash crowd on a primary provider until a peer serves for it, behind
//!   `reef-testnet bench-peering`;
//! - [`bench_metrics`], what a `/metrics` scrape every second costs the hit path, behind
//!   `reef-testnet bench-metrics`;
//! - the `reef-testnet` binary (`up`, `demo`, `bench`, `bench-cold`, `bench-dht`, `bench-load`, `bench-discovery`,
//!   `bench-dns`, `bench-peering`, `bench-metrics`).
//!
//! What it must not do: reimplement node logic. Everything a node does (caching, the
//! overlay, peering) happens inside the spawned `reef` processes; this crate only starts
//! them, talks to their public HTTP and admin interfaces, and reads the files they write.
//! It never passes `--mdns`, so testnets on one host cannot find each other.
//!
//! Cleanup: every child is SIGKILLed and reaped when its [`NodeProcess`] is dropped, and
//! is also started with `PR_SET_PDEATHSIG = SIGKILL` from a dedicated, never-exiting
//! spawner thread, so even a SIGKILLed testnet process leaves no orphan `reef` behind.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod bench;
pub mod bench_cold;
pub mod bench_dht;
pub mod bench_discovery;
pub mod bench_dns;
pub mod bench_load;
pub mod bench_metrics;
pub mod bench_nginx;
pub mod bench_peering;
pub mod client;
pub mod crowd;
pub mod dns_client;
mod error;
pub mod flash;
pub mod link;
mod node;
pub mod origin;
mod testnet;

pub use error::Error;
pub use node::{
    Announcements, ChildProcess, NodeProcess, NodeSpec, READY_TIMEOUT, Runtime, STATUS_TIMEOUT,
    STOP_TIMEOUT, locate_reef_binary, read_runtime,
};
pub use origin::Origin;
pub use testnet::{
    JOIN_TIMEOUT, Manifest, ManifestNode, Options, Testnet, node_ip, provider_key_path,
    provider_region,
};
