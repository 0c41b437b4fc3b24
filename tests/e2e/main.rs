//! End-to-end tests: real `reef` processes on loopback, a real origin, real sockets.
//!
//! Each test launches its own small testnet (nodes on 127.0.0.x with ports picked by the
//! kernel) and waits on readiness, never on sleeps; everything it starts is killed on drop.

mod abuse;
mod cli;
mod cold;
mod crash;
mod dashboard;
mod dns;
mod errors;
mod fetch;
mod flash;
mod freshness;
mod limits;
mod load;
mod metrics;
mod offers;
mod peering;
mod private;
mod providers;
mod purge;
mod quota;
mod semantics;
mod services;
mod support;
mod tls;
mod vary;
mod verify;
