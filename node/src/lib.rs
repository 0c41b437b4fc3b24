//! The Reef node: configuration and CLI, the HTTP edge (forward proxy and customers'
//! services), the fetch pipeline (local cache → nearest peer that holds the object → origin),
//! purge and load reports over gossip, peering (policy, mediator, agent, arrangements,
//! redirection), the DNS redirector and the admin API.
//!
//! It talks to the overlay only through `reef_overlay::Client` and must not reach into the
//! libp2p Swarm; it stores objects only through `reef_cache::Store`.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod activity;
pub mod admin;
pub mod admin_client;
pub mod body;
#[cfg(target_os = "linux")]
pub mod code_pages;
pub mod config;
pub mod dashboard;
pub mod dns;
pub mod edge;
pub mod fetch;
pub mod fetch_cmd;
pub mod heap;
pub mod hex;
pub mod identity;
pub mod limits;
pub mod load;
pub mod mapped;
pub mod metrics;
pub mod node;
pub mod offers;
pub mod peering;
pub mod peering_cmd;
pub mod private;
pub mod provider;
pub mod purge;
pub mod republish;
pub mod runtime_file;
pub mod secret_file;
pub mod services;
pub mod status_cmd;
pub mod telemetry;
pub mod token_cmd;
