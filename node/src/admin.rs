//! The admin API: `/healthz` and `/api/status` (more operator surfaces come later).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use reef_cache::Store;
use serde::Serialize;
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
    announcements: crate::fetch::AnnounceStats,
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/status", get(status))
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
        announcements: state.announcer.stats(),
    })
    .into_response()
}
