//! HTTP clients towards origins (http and https) and towards peer nodes' object endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reef_proto::{CanonicalUrl, ContentKey};

use super::FetchError;
use super::headers::{strip_for_full_fetch, strip_hop_by_hop};
use crate::body::{self, Body};
use crate::services::Services;

/// A TCP handshake to an origin on a healthy network takes well under this.
const ORIGIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Peers are other Reef nodes: if one is slow to connect, another holder or the origin is faster.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A peer answers from its disk; waiting longer than this is slower than going to the origin.
const PEER_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle keep-alive connections are cheap to keep for a while and costly to re-handshake (TLS).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Per upstream host; enough for a busy origin without hoarding sockets.
const POOL_MAX_IDLE_PER_HOST: usize = 32;
/// Path prefix of the endpoint on which nodes hand cached objects to each other.
pub const OBJECT_PATH: &str = "/_reef/object/";
/// Path prefix of the endpoint on which a node hands out the ContentRecord it sealed lately.
pub const RECORD_PATH: &str = "/_reef/record/";
/// A peer's sealed ContentRecord comes from its memory: at once, or not at all.
const RECORD_TIMEOUT: Duration = Duration::from_secs(1);
/// A sealed ContentRecord is a few hundred bytes; the envelope's own limit is far below this.
const MAX_RECORD_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientInitError {
    #[error("cannot load the system's TLS root certificates: {0}")]
    Roots(std::io::Error),
}

#[derive(Clone)]
pub struct Upstreams {
    origin: Client<HttpsConnector<HttpConnector>, Body>,
    peer: Client<HttpConnector, Body>,
    origin_timeout: Duration,
    /// URLs of a known service go to that service's origin instead of their own host.
    services: Option<Arc<Services>>,
    ingress: Arc<Ingress>,
}

/// What came in from upstream since start: requests sent to origins, and response body bytes
/// received, by where from. Relaxed atomics, bumped as bodies are pulled; read by `/metrics`.
#[derive(Debug, Default)]
pub struct Ingress {
    origin_requests: AtomicU64,
    origin_bytes: AtomicU64,
    peer_bytes: AtomicU64,
    node_bytes: AtomicU64,
}

/// Where a received body came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// A customer's origin (fills, revalidations, uncached and unsafe requests).
    Origin,
    /// A node's stored copy (`/_reef/object/…`).
    Peer,
    /// Another provider's node, relaying a request under an arrangement.
    Node,
}

/// [`Ingress`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngressCounts {
    pub origin_requests: u64,
    pub origin_bytes: u64,
    pub peer_bytes: u64,
    pub node_bytes: u64,
}

impl Ingress {
    pub fn counts(&self) -> IngressCounts {
        IngressCounts {
            origin_requests: self.origin_requests.load(Ordering::Relaxed),
            origin_bytes: self.origin_bytes.load(Ordering::Relaxed),
            peer_bytes: self.peer_bytes.load(Ordering::Relaxed),
            node_bytes: self.node_bytes.load(Ordering::Relaxed),
        }
    }

    fn counter(&self, from: From) -> &AtomicU64 {
        match from {
            From::Origin => &self.origin_bytes,
            From::Peer => &self.peer_bytes,
            From::Node => &self.node_bytes,
        }
    }
}

impl Upstreams {
    /// `origin_timeout` bounds the wait for an origin's response headers.
    pub fn new(origin_timeout: Duration) -> Result<Self, ClientInitError> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(ORIGIN_CONNECT_TIMEOUT));
        http.set_nodelay(true);
        // Honours SSL_CERT_FILE / SSL_CERT_DIR, which is how tests point at a test CA.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(ClientInitError::Roots)?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let origin = pooled(https);

        let mut peer_conn = HttpConnector::new();
        peer_conn.set_connect_timeout(Some(PEER_CONNECT_TIMEOUT));
        peer_conn.set_nodelay(true);
        let peer = pooled(peer_conn);
        Ok(Self {
            origin,
            peer,
            origin_timeout,
            services: None,
            ingress: Arc::default(),
        })
    }

    /// The counters of what came in through these clients.
    pub fn ingress(&self) -> Arc<Ingress> {
        self.ingress.clone()
    }

    /// A received body, boxed, its data bytes counted as they are pulled.
    pub fn received(&self, body: Incoming, from: From) -> Body {
        let ingress = self.ingress.clone();
        let body = body
            .map_err(|e| -> body::BoxError { Box::new(e) })
            .boxed_unsync();
        body::count_data(body, move |len| {
            ingress.counter(from).fetch_add(len, Ordering::Relaxed);
        })
    }

    /// Sends the URLs of `services`' hostnames to their origins.
    pub fn with_services(mut self, services: Arc<Services>) -> Self {
        self.services = Some(services);
        self
    }

    /// A full (unconditional, whole-object) request to the origin, with the client's end-to-end headers.
    pub async fn origin(
        &self,
        method: Method,
        url: &CanonicalUrl,
        client_headers: &HeaderMap,
        body: Body,
    ) -> Result<Response<Incoming>, FetchError> {
        let mut headers = client_headers.clone();
        strip_hop_by_hop(&mut headers);
        strip_for_full_fetch(&mut headers);
        self.send(method, url, headers, body).await
    }

    /// A conditional GET for a stored copy: `headers` carry its validators
    /// (`If-None-Match` / `If-Modified-Since`), which are kept; ranges are not.
    pub async fn revalidate(
        &self,
        url: &CanonicalUrl,
        headers: &HeaderMap,
    ) -> Result<Response<Incoming>, FetchError> {
        let mut headers = headers.clone();
        strip_hop_by_hop(&mut headers);
        for name in [header::RANGE, header::IF_RANGE, header::HOST] {
            headers.remove(name);
        }
        self.send(Method::GET, url, headers, body::empty()).await
    }

    async fn send(
        &self,
        method: Method,
        url: &CanonicalUrl,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Response<Incoming>, FetchError> {
        // Every caller has dropped the client's `Host`: hyper names the host we connect to.
        let target = self.services.as_ref().and_then(|s| s.origin_for(url));
        let url = target.as_ref().unwrap_or(url);
        let mut req = Request::builder()
            .method(method)
            .uri(url.to_uri())
            .body(body)
            .map_err(|e| FetchError::Internal(e.to_string()))?;
        *req.headers_mut() = headers;
        let authority = url.authority().to_string();
        self.ingress.origin_requests.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.origin_timeout, self.origin.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(authority, self.origin_timeout, &e)),
            Err(_) => Err(FetchError::OriginTimeout {
                authority,
                after: self.origin_timeout,
            }),
        }
    }

    /// Asks the node at `http_addr` for its stored copy of `key`.
    /// `headers` say what the asker needs of the copy (its freshness directives and the
    /// headers that select a variant); the peer answers 404 if its copy does not qualify.
    pub async fn peer(
        &self,
        http_addr: &str,
        key: ContentKey,
        headers: &HeaderMap,
    ) -> Result<Response<Incoming>, String> {
        self.peer_within(http_addr, key, headers, PEER_HEADER_TIMEOUT)
            .await
    }

    /// [`Upstreams::peer`], waiting up to `wait` for the response headers.
    pub async fn peer_within(
        &self,
        http_addr: &str,
        key: ContentKey,
        headers: &HeaderMap,
        wait: Duration,
    ) -> Result<Response<Incoming>, String> {
        let uri = format!("http://{http_addr}{OBJECT_PATH}{key}");
        let mut req = Request::get(uri)
            .header(
                header::USER_AGENT,
                concat!("reef/", env!("CARGO_PKG_VERSION")),
            )
            .body(body::empty())
            .map_err(|e| e.to_string())?;
        req.headers_mut().extend(headers.clone());
        match tokio::time::timeout(wait, self.peer.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(error_chain(&e)),
            Err(_) => Err(format!("no answer within {wait:?}")),
        }
    }

    /// The sealed ContentRecord for `key` that the node at `http_addr` made lately, as it
    /// sent it (the caller opens and checks it); None if it has none or does not answer.
    pub async fn peer_record(&self, http_addr: &str, key: ContentKey) -> Option<Vec<u8>> {
        let uri = format!("http://{http_addr}{RECORD_PATH}{key}");
        let req = Request::get(uri).body(body::empty()).ok()?;
        let fetch = async {
            let resp = self.peer.request(req).await.ok()?;
            if resp.status() != http::StatusCode::OK {
                return None;
            }
            let limited = http_body_util::Limited::new(resp.into_body(), MAX_RECORD_BYTES);
            limited.collect().await.ok().map(|b| b.to_bytes().to_vec())
        };
        tokio::time::timeout(RECORD_TIMEOUT, fetch).await.ok()?
    }
}

impl Upstreams {
    /// `method` `path_and_query` at another provider's node (`http_addr`), for relaying a
    /// client's request under an arrangement and for probing the node; `wait` bounds the wait
    /// for its response headers. `headers` are sent as they are: the caller strips what must
    /// not travel.
    pub async fn node(
        &self,
        method: Method,
        http_addr: &str,
        path_and_query: &str,
        headers: HeaderMap,
        wait: Duration,
    ) -> Result<Response<Incoming>, String> {
        let uri = format!("http://{http_addr}{path_and_query}");
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .body(body::empty())
            .map_err(|e| e.to_string())?;
        *req.headers_mut() = headers;
        req.headers_mut().insert(
            header::USER_AGENT,
            http::HeaderValue::from_static(concat!("reef/", env!("CARGO_PKG_VERSION"))),
        );
        match tokio::time::timeout(wait, self.peer.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(error_chain(&e)),
            Err(_) => Err(format!("no answer within {wait:?}")),
        }
    }

    pub fn origin_timeout(&self) -> Duration {
        self.origin_timeout
    }
}

fn pooled<C>(connector: C) -> Client<C, Body>
where
    C: hyper_util::client::legacy::connect::Connect + Clone,
{
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

fn classify(
    authority: String,
    timeout: Duration,
    err: &hyper_util::client::legacy::Error,
) -> FetchError {
    let reason = error_chain(err);
    if reason.contains("timed out") || reason.contains("deadline") {
        FetchError::OriginTimeout {
            authority,
            after: timeout,
        }
    } else if err.is_connect() {
        FetchError::OriginUnreachable { authority, reason }
    } else {
        FetchError::Origin { authority, reason }
    }
}

/// The innermost causes say what really happened ("connection refused"), the outer ones where.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.dedup();
    parts.join(": ")
}
