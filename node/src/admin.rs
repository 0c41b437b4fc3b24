//! The admin API: `/healthz`, `/api/status`, `/api/peers`, `/api/cache`, `/api/holders?url=`,
//! `/api/node?peer=`, `/api/offers?region=`, `/api/load`, `/api/arrangements`,
//! `POST /api/arrangements/end`, `/api/ledger`, `POST /api/purge`, `/metrics`, and the
//! dashboard (`/`, its assets under `/dashboard/`, its data at `/api/dashboard`).
//!
//! Reading is open to whoever reaches the listener (loopback by default). The `POST`
//! endpoints change things and go through [`Guard`]: with an `admin_token` configured they
//! need `Authorization: Bearer <token>`; without one they answer only on a loopback listener.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use reef_cache::Store;
use reef_overlay::{PeerId, Published};
use reef_proto::{CanonicalUrl, ContentKey, PurgeTarget};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::activity::Activity;
use crate::config::AdminToken;
use crate::provider::ProviderStatus;

pub struct AdminState {
    pub overlay: reef_overlay::Client,
    pub store: Store,
    pub announcer: crate::fetch::Announcer,
    pub fetcher: crate::fetch::Fetcher,
    pub purger: crate::purge::Purger,
    /// Whom this node belongs to.
    pub provider: ProviderStatus,
    /// The node's metrics, served at `/metrics`.
    pub registry: Arc<Registry>,
    pub load: crate::load::Load,
    pub services: Arc<crate::services::Services>,
    pub arrangements: Arc<crate::peering::Arrangements>,
    /// The peering agent, on nodes with the provider key: it can end arrangements.
    pub agent: Option<Arc<crate::peering::agent::Agent>>,
    /// What this node's probes measure of the peers serving for us.
    pub health: Arc<crate::peering::health::Health>,
    pub ledger: Arc<crate::peering::ledger::Ledger>,
    pub region: String,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// The DNS server, when the node runs one.
    pub dns: Option<crate::dns::Handle>,
    /// Who may call the mutating endpoints.
    pub guard: Guard,
    /// The request mix and recent events, for the dashboard.
    pub activity: Arc<Activity>,
    /// Quotas and abuse control at the edge.
    pub limits: Arc<crate::limits::Limits>,
}

/// Who may call the admin API's mutating endpoints.
#[derive(Debug, Clone)]
pub enum Guard {
    /// Whoever presents this bearer token.
    Token(AdminToken),
    /// Whoever reaches the listener, which is on a loopback address: this machine only.
    Loopback,
    /// Nobody: other machines can reach the listener and no token is set.
    Closed,
}

impl Guard {
    /// The rule for a listener bound to `admin`.
    pub fn new(token: Option<AdminToken>, admin: SocketAddr) -> Guard {
        match token {
            Some(token) => Guard::Token(token),
            None if admin.ip().is_loopback() => Guard::Loopback,
            None => Guard::Closed,
        }
    }

    /// `Ok` if a request with `headers` may go on; else why not.
    fn check(&self, headers: &HeaderMap) -> Result<(), Refused> {
        match self {
            Guard::Loopback => Ok(()),
            Guard::Closed => Err(Refused::Closed),
            Guard::Token(token) => {
                let presented = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        let (scheme, rest) = v.split_once(' ')?;
                        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
                    });
                match presented {
                    Some(p) if token.matches(p) => Ok(()),
                    Some(_) => Err(Refused::WrongToken),
                    None => Err(Refused::NoToken),
                }
            }
        }
    }
}

/// Why the [`Guard`] turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Closed,
    NoToken,
    WrongToken,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let why = match self {
            Refused::Closed => {
                return one_line(
                    StatusCode::FORBIDDEN,
                    "this admin API is reachable from other machines and has no admin_token: \
                     set admin_token (or admin_token_file) in the config to use this endpoint",
                );
            }
            Refused::NoToken => {
                "this endpoint needs Authorization: Bearer <admin_token> \
                 (reef: --token or REEF_ADMIN_TOKEN)"
            }
            Refused::WrongToken => "the bearer token is not this node's admin_token",
        };
        let mut resp = one_line(StatusCode::UNAUTHORIZED, why);
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        resp
    }
}

/// Lets a mutating request through only if the [`Guard`] does.
async fn guarded(State(state): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    match state.guard.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused.into_response(),
    }
}

#[derive(Serialize)]
struct StatusBody {
    peer_id: String,
    /// `{id, name, certified}`: the certifying provider, or this node itself.
    provider: ProviderStatus,
    region: String,
    http: SocketAddr,
    admin: SocketAddr,
    listen_addrs: Vec<String>,
    connected_peers: Vec<String>,
    routing_table_size: usize,
    /// DHT records this node holds (its own and peers').
    dht_records: usize,
    joined: bool,
    cache: reef_cache::Stats,
    /// Per service with a storage quota: the quota, bytes stored, and objects refused.
    quotas: BTreeMap<String, reef_cache::QuotaStats>,
    services: crate::services::Stats,
    /// `/reef/peering/1` requests sent, failed, received and dropped since start.
    peering: reef_overlay::PeeringStats,
    announcements: crate::fetch::AnnounceStats,
    /// Bodies from peers that did not match their ContentRecord (each peer is then avoided
    /// for that content).
    peer_bodies_rejected: u64,
    /// Cold misses sent to (and answered as) the key's home node.
    home: crate::fetch::HomeStats,
    purges: crate::purge::PurgeStats,
    /// Client limits, bandwidth debts, and what was throttled, detected and refused.
    limits: crate::limits::Status,
    /// Gossip messages dropped because their consumer was behind.
    gossip_dropped: u64,
    /// DHT records refused, by `"<kind>/<reason>"` (see `/metrics`).
    records_rejected: BTreeMap<String, u64>,
    /// Peers refused now for sending too many invalid records, and bans since start.
    banned_peers: Vec<String>,
    peers_banned: u64,
    /// Load gossip: our own figures, the table's size, and what was received and rejected.
    load: crate::load::LoadStats,
    /// The DNS server's address, zone and counters by answer type; `null` without `--dns`.
    dns: Option<crate::dns::Status>,
    gossip: GossipBody,
}

/// Gossip traffic and peer scores (see `reef_overlay::Traffic` for exactly what is counted).
#[derive(Serialize)]
struct GossipBody {
    /// Message bytes received / sent over all topics.
    bytes_in: u64,
    bytes_out: u64,
    /// The same per topic, with message counts.
    topics: BTreeMap<String, reef_overlay::TopicTraffic>,
    /// All libp2p stream bytes, every protocol (gossip control messages included).
    streams_in: u64,
    streams_out: u64,
    /// Gossipsub score of each connected peer; below the graylist threshold a peer is ignored.
    scores: BTreeMap<String, f64>,
    graylist_threshold: f64,
}

pub fn router(state: Arc<AdminState>) -> Router {
    // Everything that changes something, behind the guard.
    let mutating = Router::new()
        .route("/api/arrangements/end", post(end_arrangement))
        .route(
            "/api/purge",
            post(purge).layer(DefaultBodyLimit::max(PURGE_BODY_LIMIT)),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), guarded));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/status", get(status))
        .route("/api/peers", get(peers))
        .route("/api/cache", get(cache))
        .route("/api/holders", get(holders))
        .route("/api/node", get(node))
        .route("/api/offers", get(offers))
        .route("/api/arrangements", get(arrangements))
        .route("/api/ledger", get(ledger))
        .route("/api/policy", get(policy))
        .route("/metrics", get(metrics))
        .route("/api/load", get(load))
        .route("/api/dashboard", get(dashboard))
        .merge(crate::dashboard::routes())
        .merge(mutating)
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
    let overlay = match overlay_status(&state).await {
        Ok(s) => s,
        Err(unavailable) => return unavailable,
    };
    let (bytes_in, bytes_out) = overlay.traffic.gossip_bytes();
    let gossip = GossipBody {
        bytes_in,
        bytes_out,
        topics: overlay.traffic.gossip,
        streams_in: overlay.traffic.streams_in,
        streams_out: overlay.traffic.streams_out,
        scores: overlay.gossip_scores,
        graylist_threshold: reef_overlay::GRAYLIST_THRESHOLD,
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
        dht_records: overlay.dht_records,
        joined: overlay.joined,
        cache: state.store.stats(),
        quotas: state.store.quotas(),
        announcements: state.announcer.stats(),
        peer_bodies_rejected: state.fetcher.verify_failures(),
        home: state.fetcher.home_stats(),
        purges: state.purger.stats(),
        limits: state.limits.status(),
        services: state.services.stats(),
        peering: overlay.peering,
        gossip_dropped: overlay.gossip_dropped,
        records_rejected: overlay.records_rejected,
        banned_peers: overlay.banned_peers,
        peers_banned: overlay.peers_banned,
        load: state.load.stats(),
        dns: state.dns.as_ref().map(crate::dns::Handle::status),
        gossip,
    })
    .into_response()
}

#[derive(Serialize)]
struct PeerBody {
    peer_id: String,
    /// Its provider as its load report says (verified), `null` while it is not listed.
    provider: Option<crate::load::view::ProviderRef>,
    utilisation_permille: Option<u16>,
    /// Gossipsub's score of it; `null` until it is scored.
    gossip_score: Option<f64>,
}

/// The peers connected now, with what the load table and gossipsub know of each.
async fn peers(State(state): State<Arc<AdminState>>) -> Response {
    let overlay = match overlay_status(&state).await {
        Ok(s) => s,
        Err(unavailable) => return unavailable,
    };
    let mut listed: BTreeMap<String, crate::load::view::NodeLoad> = state
        .load
        .view()
        .nodes
        .into_iter()
        .map(|n| (n.peer_id.clone(), n))
        .collect();
    let peers: Vec<PeerBody> = overlay
        .connected_peers
        .into_iter()
        .map(|peer_id| {
            let node = listed.remove(&peer_id);
            PeerBody {
                gossip_score: overlay.gossip_scores.get(&peer_id).copied(),
                utilisation_permille: node.as_ref().map(|n| n.utilisation_permille),
                provider: node.map(|n| n.provider),
                peer_id,
            }
        })
        .collect();
    Json(serde_json::json!({ "peers": peers })).into_response()
}

#[derive(Serialize)]
struct CacheBody {
    #[serde(flatten)]
    stats: reef_cache::Stats,
    quotas: BTreeMap<String, reef_cache::QuotaStats>,
    announcements: crate::fetch::AnnounceStats,
    peer_bodies_rejected: u64,
    purges: crate::purge::PurgeStats,
}

/// The cache: objects and bytes stored, quotas, announcements and purges.
async fn cache(State(state): State<Arc<AdminState>>) -> Json<CacheBody> {
    Json(CacheBody {
        stats: state.store.stats(),
        quotas: state.store.quotas(),
        announcements: state.announcer.stats(),
        peer_bodies_rejected: state.fetcher.verify_failures(),
        purges: state.purger.stats(),
    })
}

#[derive(Serialize)]
struct DashboardNode {
    peer_id: String,
    provider: ProviderStatus,
    region: String,
    http: SocketAddr,
    admin: SocketAddr,
    joined: bool,
    connected_peers: usize,
    cache: reef_cache::Stats,
    load: crate::load::OwnLoad,
    dns: Option<crate::dns::Status>,
}

/// Everything the dashboard draws, in one answer (it polls this once a second).
#[derive(Serialize)]
struct DashboardBody {
    node: DashboardNode,
    /// Every node in our load table, and the sums per provider.
    load: crate::load::LoadView,
    /// Provider id → name, for the providers named in arrangements.
    names: BTreeMap<String, String>,
    arrangements: Vec<crate::peering::View>,
    /// Requests per second by source, oldest first, the last five minutes at most.
    mix: Vec<crate::activity::Sample>,
    /// Newest first.
    events: Vec<crate::activity::Event>,
}

async fn dashboard(State(state): State<Arc<AdminState>>) -> Response {
    let overlay = match overlay_status(&state).await {
        Ok(s) => s,
        Err(unavailable) => return unavailable,
    };
    let load = state.load.view();
    let mut names: BTreeMap<String, String> = load
        .providers
        .iter()
        .filter_map(|p| Some((p.id.clone(), p.name.clone()?)))
        .collect();
    if let Some(name) = &state.provider.name {
        names.insert(state.provider.id.to_string(), name.clone());
    }
    let body = DashboardBody {
        node: DashboardNode {
            peer_id: overlay.peer_id,
            provider: state.provider.clone(),
            region: state.region.clone(),
            http: state.http,
            admin: state.admin,
            joined: overlay.joined,
            connected_peers: overlay.connected_peers.len(),
            cache: state.store.stats(),
            load: state.load.own(),
            dns: state.dns.as_ref().map(crate::dns::Handle::status),
        },
        load,
        names,
        arrangements: state.arrangements.views(&state.health),
        mix: state.activity.mix(),
        events: state.activity.events(),
    };
    let mut resp = Json(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[derive(Serialize)]
struct ArrangementsBody {
    arrangements: Vec<crate::peering::View>,
    /// How the providers we bought capacity from kept their SLAs (what ranking weighs).
    peer_records: Vec<PeerRecordView>,
}

#[derive(Serialize)]
struct PeerRecordView {
    provider: String,
    arrangements: u32,
    breaches: u32,
    /// Unix ms; 0 if none.
    last_breach_ms: u64,
}

async fn arrangements(State(state): State<Arc<AdminState>>) -> Json<ArrangementsBody> {
    Json(ArrangementsBody {
        arrangements: state.arrangements.views(&state.health),
        peer_records: state
            .arrangements
            .peer_records()
            .into_iter()
            .map(|(id, r)| PeerRecordView {
                provider: id.to_string(),
                arrangements: r.arrangements,
                breaches: r.breaches,
                last_breach_ms: r.last_breach_ms,
            })
            .collect(),
    })
}

#[derive(Deserialize)]
struct EndRequest {
    id: String,
}

/// An operator ends an arrangement: the agent tells the other party and both providers' nodes.
async fn end_arrangement(State(state): State<Arc<AdminState>>, body: Bytes) -> Response {
    const USAGE: &str = r#"send {"id": "<32 hex digits>"}"#;
    let id = match serde_json::from_slice::<EndRequest>(&body)
        .map_err(|e| format!("{USAGE}: {e}"))
        .and_then(|r| {
            r.id.parse::<reef_proto::records::ArrangementId>()
                .map_err(|e| format!("{:?}: {e}", r.id))
        }) {
        Ok(id) => id,
        Err(why) => return one_line(StatusCode::BAD_REQUEST, &why),
    };
    let Some(arrangement) = state.arrangements.get(&id) else {
        return one_line(StatusCode::NOT_FOUND, &format!("no arrangement {id} here"));
    };
    if arrangement.status == crate::peering::Status::Ended {
        return one_line(
            StatusCode::CONFLICT,
            &format!("arrangement {id} has already ended"),
        );
    }
    let Some(agent) = &state.agent else {
        return one_line(
            StatusCode::CONFLICT,
            "this node has no provider key; end it on one of the provider's agent nodes",
        );
    };
    agent
        .disband(id, reef_proto::peering::EndReason::Operator)
        .await;
    Json(serde_json::json!({ "ended": id.to_string() })).into_response()
}

/// The peering policies this node has run with, newest (in force) first.
async fn policy(State(state): State<Arc<AdminState>>) -> Response {
    let arrangements = state.arrangements.clone();
    match tokio::task::spawn_blocking(move || arrangements.policy_history()).await {
        Ok(Ok(history)) => {
            let history: Vec<_> = history
                .into_iter()
                .map(|(at, policy)| serde_json::json!({ "loaded_at": at, "policy": policy }))
                .collect();
            Json(serde_json::json!({ "history": history })).into_response()
        }
        Ok(Err(e)) => one_line(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => one_line(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn ledger(State(state): State<Arc<AdminState>>) -> Json<crate::peering::ledger::LedgerView> {
    Json(state.ledger.view())
}

/// Prometheus metrics in OpenMetrics text.
async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    match crate::metrics::encode(&state.registry) {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => one_line(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode metrics: {e}"),
        ),
    }
}

#[derive(Deserialize)]
struct NodeQuery {
    peer: String,
}

#[derive(Serialize)]
struct CapacityBody {
    req_per_s: u32,
    mbit_per_s: u32,
}

#[derive(Serialize)]
struct NodeBody {
    peer_id: String,
    http: String,
    region: String,
    /// Verified: `certified` only with a valid certificate from that provider's key.
    provider: ProviderStatus,
    capacity: CapacityBody,
    listen_addrs: Vec<String>,
    /// Unix milliseconds.
    issued_at_ms: u64,
    expires_at_ms: u64,
}

/// A node's verified NodeRecord, looked up by peer id: where its HTTP edge is, whom it
/// belongs to, its region and capacity. 404 when the DHT has no valid record of it.
async fn node(State(state): State<Arc<AdminState>>, Query(q): Query<NodeQuery>) -> Response {
    let peer: PeerId = match q.peer.parse() {
        Ok(peer) => peer,
        Err(e) => return one_line(StatusCode::BAD_REQUEST, &format!("peer: {e}")),
    };
    match state.overlay.node_record(peer).await {
        Ok(Some(info)) => Json(NodeBody {
            peer_id: info.peer.to_string(),
            http: info.record.http,
            region: info.record.region,
            provider: ProviderStatus::of(&info.membership),
            capacity: CapacityBody {
                req_per_s: info.record.capacity.req_per_s,
                mbit_per_s: info.record.capacity.mbit_per_s,
            },
            listen_addrs: info.record.listen_addrs,
            issued_at_ms: info.issued_at,
            expires_at_ms: info.expires_at,
        })
        .into_response(),
        Ok(None) => one_line(StatusCode::NOT_FOUND, "no valid record of this node"),
        Err(e) => one_line(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("lookup failed: {e}"),
        ),
    }
}

/// Every node's latest load report (ourselves included) and the sums per provider.
async fn load(State(state): State<Arc<AdminState>>) -> Json<crate::load::LoadView> {
    Json(state.load.view())
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
    provider: ProviderStatus,
    region: String,
    rtt_ms: Option<f64>,
}

#[derive(Serialize)]
struct HoldersBody {
    url: String,
    key: String,
    lookup_ms: f64,
    /// What the Kademlia provider lookup cost: peers asked, answered, failed.
    dht: reef_overlay::LookupStats,
    /// The key's home node among our provider's live nodes (ourselves included); null when
    /// home routing is off.
    home: Option<String>,
    holders: Vec<HolderBody>,
}

/// Which nodes the DHT says hold a URL, and how long the lookup took.
#[derive(Deserialize)]
struct OffersQuery {
    region: String,
}

#[derive(Serialize)]
struct OffersBody {
    region: String,
    lookup_ms: f64,
    offers: Vec<crate::offers::OfferView>,
}

/// Runs a discovery: the verified capacity offers of every provider serving `region`.
async fn offers(State(state): State<Arc<AdminState>>, Query(q): Query<OffersQuery>) -> Response {
    if q.region.is_empty() || q.region.len() > reef_proto::records::MAX_REGION_LEN {
        return (StatusCode::BAD_REQUEST, "region must be 1 to 32 bytes\n").into_response();
    }
    let started = std::time::Instant::now();
    match crate::offers::discover(&state.overlay, &q.region, state.provider.id).await {
        Ok(offers) => Json(OffersBody {
            region: q.region,
            lookup_ms: started.elapsed().as_secs_f64() * 1e3,
            offers,
        })
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("discovery failed: {e}\n"),
        )
            .into_response(),
    }
}

async fn holders(State(state): State<Arc<AdminState>>, Query(q): Query<HoldersQuery>) -> Response {
    let url = match CanonicalUrl::parse(&q.url) {
        Ok(url) => url,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let key = ContentKey::for_url(&url);
    let started = std::time::Instant::now();
    let (found, dht) = match state
        .overlay
        .find_holders_with_stats(key, HOLDERS_LIMIT)
        .await
    {
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
        dht,
        home: state.fetcher.home_of(&key).map(|p| p.to_string()),
        holders: found
            .into_iter()
            .map(|h| HolderBody {
                peer_id: h.peer.to_string(),
                http: h.record.http,
                provider: ProviderStatus::of(&h.membership),
                region: h.record.region,
                rtt_ms: h.rtt.map(|d| d.as_secs_f64() * 1e3),
            })
            .collect(),
    })
    .into_response()
}

/// A purge request is one URL of at most 8 KiB in a line of JSON.
const PURGE_BODY_LIMIT: usize = 16 * 1024;
/// Keys listed in a purge answer; `removed` still counts them all.
const PURGE_KEYS_SHOWN: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    url: Option<String>,
    prefix: Option<String>,
}

#[derive(Serialize)]
struct PurgeBody {
    /// Objects removed from this node.
    removed: usize,
    /// Their content keys (hex), the first 100.
    keys: Vec<String>,
    /// Whether other nodes were told (false: no peer listens on the purge topic).
    published: bool,
}

/// What `POST /api/purge` asks for: `{"url": URL}` or `{"prefix": URL}`, canonicalised.
fn purge_target(body: &[u8]) -> Result<PurgeTarget, String> {
    const USAGE: &str = r#"send {"url": "http://host/path"} or {"prefix": "http://host/dir/"}"#;
    let req: PurgeRequest = serde_json::from_slice(body).map_err(|e| format!("{USAGE}: {e}"))?;
    let canonical = |s: &str| CanonicalUrl::parse(s).map_err(|e| format!("{s:?}: {e}"));
    match (req.url, req.prefix) {
        (Some(url), None) => Ok(PurgeTarget::url(&canonical(&url)?)),
        (None, Some(prefix)) => Ok(PurgeTarget::prefix(&canonical(&prefix)?)),
        _ => Err(format!("exactly one of url and prefix: {USAGE}")),
    }
}

/// Purges a URL or a prefix here and on every node of our provider.
async fn purge(State(state): State<Arc<AdminState>>, body: Bytes) -> Response {
    let target = match purge_target(&body) {
        Ok(target) => target,
        Err(why) => return one_line(StatusCode::BAD_REQUEST, &why),
    };
    let outcome = match state.purger.request(target).await {
        Ok(outcome) => outcome,
        Err(e) => return one_line(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let published = match outcome.told {
        Ok(published) => published == Published::Sent,
        Err(e) => {
            let why = format!(
                "removed {} objects here but could not tell the other nodes: {e}",
                outcome.removed.len()
            );
            return one_line(StatusCode::SERVICE_UNAVAILABLE, &why);
        }
    };
    Json(PurgeBody {
        removed: outcome.removed.len(),
        keys: outcome
            .removed
            .iter()
            .take(PURGE_KEYS_SHOWN)
            .map(|k| k.to_string())
            .collect(),
        published,
    })
    .into_response()
}

/// A text answer on one line, whatever the message holds.
/// The overlay's status, or the 503 every endpoint that needs it answers without it.
async fn overlay_status(state: &AdminState) -> Result<reef_overlay::Status, Response> {
    state.overlay.status().await.map_err(|e| {
        one_line(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("overlay unavailable: {e}"),
        )
    })
}

fn one_line(status: StatusCode, why: &str) -> Response {
    let line: String = why
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    (status, format!("{line}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = authorization {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_guard_wants_the_token_or_a_loopback_listener() {
        let token = AdminToken::new("correct-horse-battery").unwrap();
        let public: SocketAddr = "0.0.0.0:9090".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.3:9090".parse().unwrap();
        let status = |g: &Guard, h: Option<&str>| match g.check(&headers(h)) {
            Ok(()) => StatusCode::OK,
            Err(refused) => refused.into_response().status(),
        };

        let with_token = Guard::new(Some(token.clone()), public);
        assert_eq!(
            status(&with_token, Some("Bearer correct-horse-battery")),
            StatusCode::OK
        );
        assert_eq!(
            status(&with_token, Some("bearer  correct-horse-battery ")),
            StatusCode::OK
        );
        for bad in [
            None,
            Some("Bearer wrong"),
            Some("Basic correct-horse-battery"),
            Some("Bearer"),
        ] {
            assert_eq!(
                status(&with_token, bad),
                StatusCode::UNAUTHORIZED,
                "{bad:?}"
            );
        }
        let resp = with_token
            .check(&headers(None))
            .unwrap_err()
            .into_response();
        assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Bearer");

        // A token is required on loopback too once it is set.
        let loopback_with_token = Guard::new(Some(token), loopback);
        assert_eq!(status(&loopback_with_token, None), StatusCode::UNAUTHORIZED);

        assert_eq!(status(&Guard::new(None, loopback), None), StatusCode::OK);
        let v6: SocketAddr = "[::1]:9090".parse().unwrap();
        assert_eq!(status(&Guard::new(None, v6), None), StatusCode::OK);
        assert_eq!(
            status(&Guard::new(None, public), None),
            StatusCode::FORBIDDEN
        );
        let private: SocketAddr = "10.1.2.3:9090".parse().unwrap();
        assert_eq!(
            status(&Guard::new(None, private), Some("Bearer anything")),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn purge_requests_name_exactly_one_canonical_url() {
        assert_eq!(
            purge_target(br#"{"url": "HTTP://Example.com:80/a/./b"}"#).unwrap(),
            PurgeTarget::Url("http://example.com/a/b".into())
        );
        assert_eq!(
            purge_target(br#"{"prefix": "http://example.com/dir/"}"#).unwrap(),
            PurgeTarget::Prefix("http://example.com/dir/".into())
        );
        for bad in [
            &br#"{}"#[..],
            br#"{"url": "http://a/x", "prefix": "http://a/"}"#,
            br#"{"url": "ftp://a/x"}"#,
            br#"{"prefix": "/relative"}"#,
            br#"{"urls": ["http://a/x"]}"#,
            br#"{"url": 5}"#,
            b"not json",
            b"",
        ] {
            let why = purge_target(bad).unwrap_err();
            assert!(!why.contains('\n'), "{why}");
        }
    }
}
