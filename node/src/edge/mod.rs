//! The HTTP edge: accepts HTTP/1.1 and h2c clients, routes each request through the fetch
//! pipeline (or to the peer object endpoint), and labels every response with where it came from.

mod conditional;
mod range;
mod respond;
mod route;
mod server;

pub use route::{Edge, Gate, PEERING_HEADER, PROBE_HEADER};
pub use server::serve;
