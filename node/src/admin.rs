//! The admin API: `/healthz`, `/api/status` and `/api/holders?url=` (more operator surfaces
//! come later).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use reef_cache::Store;
use reef_proto::{CanonicalUrl, ContentKey};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub struct AdminState {
    pub overlay: reef_overlay::Client,
    pub store: Store,
    pub announcer: crate::fetch::Announcer,
    pub provider: String,
    pub region: String,
    pub http: SocketAddr,
    pub admin: SocketAddr,
}

#[derive(Serialize)]
struct StatusBody {
    peer_id: String,
    provider: String,
    region: String,
    http: SocketAddr,
    admin: SocketAddr,
    listen_addrs: Vec<String>,
    connected_peers: Vec<String>,
    routing_table_size: usize,
    joined: bool,
    cache: reef_cache::Stats,
    /// Per service with a storage quota: the quota, bytes stored, and objects refused.
    quotas: BTreeMap<String, reef_cache::QuotaStats>,
    announcements: crate::fetch::AnnounceStats,
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/status", get(status))
        .route("/api/holders", get(holders))
        .with_state(state)
}

pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = router(state);
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::warn!(error = %e, "admin API stopped");
    }
}

async fn status(State(state): State<Arc<AdminState>>) -> Response {
    let overlay = match state.overlay.status().await {
        Ok(s) => s,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("overlay unavailable: {e}\n"),
            )
                .into_response();
        }
    };
    Json(StatusBody {
        peer_id: overlay.peer_id,
        provider: state.provider.clone(),
        region: state.region.clone(),
        http: state.http,
        admin: state.admin,
        listen_addrs: overlay.listen_addrs,
        connected_peers: overlay.connected_peers,
        routing_table_size: overlay.routing_table_size,
        joined: overlay.joined,
        cache: state.store.stats(),
        quotas: state.store.quotas(),
        announcements: state.announcer.stats(),
    })
    .into_response()
}

/// How many holders `/api/holders` lists; the fetch path asks for as many.
const HOLDERS_LIMIT: usize = 8;

#[derive(Deserialize)]
struct HoldersQuery {
    url: String,
}

#[derive(Serialize)]
struct HolderBody {
    peer_id: String,
    http: String,
    provider: String,
    region: String,
    rtt_ms: Option<f64>,
}

#[derive(Serialize)]
struct HoldersBody {
    url: String,
    key: String,
    lookup_ms: f64,
    holders: Vec<HolderBody>,
}

/// Which nodes the DHT says hold a URL, and how long the lookup took.
async fn holders(State(state): State<Arc<AdminState>>, Query(q): Query<HoldersQuery>) -> Response {
    let url = match CanonicalUrl::parse(&q.url) {
        Ok(url) => url,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let key = ContentKey::for_url(&url);
    let started = std::time::Instant::now();
    let found = match state.overlay.find_holders(key, HOLDERS_LIMIT).await {
        Ok(found) => found,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("lookup failed: {e}\n"),
            )
                .into_response();
        }
    };
    let lookup_ms = started.elapsed().as_secs_f64() * 1e3;
    Json(HoldersBody {
        url: url.to_string(),
        key: key.to_string(),
        lookup_ms,
        holders: found
            .into_iter()
            .map(|h| HolderBody {
                peer_id: h.peer.to_string(),
                http: h.record.http,
                provider: h.record.provider,
                region: h.record.region,
                rtt_ms: h.rtt.map(|d| d.as_secs_f64() * 1e3),
            })
            .collect(),
    })
    .into_response()
}
