//! The demo / test origin: an in-process hyper 1 HTTP/1.1 server (optionally over TLS).
//!
//! Every body is deterministic so a test can check what a node served without asking the
//! origin again: the bytes of `/bytes/<n>` are the first `n` bytes of the blake3 XOF of the
//! request path (query stripped), see [`Pattern`] and [`expected_body`]. Bodies are
//! generated while they are sent, in [`PATTERN_CHUNK`] pieces, so even a 1 TiB body never
//! sits in memory.
//!
//! Routes (GET and HEAD; anything else is 405):
//!
//! | path | response |
//! |---|---|
//! | `/bytes/<n>` | `n` pattern bytes, `Cache-Control: public, max-age=3600` |
//! | `/nostore/<n>` | same kind of body, `Cache-Control: no-store` |
//! | `/private/<n>` | same kind of body, `Cache-Control: private` |
//! | `/maxage/<secs>/<n>` | same kind of body, `Cache-Control: public, max-age=<secs>` |
//! | `/slow/<ms>/<n>` | waits `ms` before the headers, then like `/bytes/<n>` |
//! | `/vary/<header>/<n>` | `Vary: <header>`; the body (see [`variant_seed`]) and `ETag` depend on the request's value of `<header>`; writes accepted as on `/writable` |
//! | `/headers/<n>[/<tag>]?<Name>=<value>&…` | like `/bytes/<n>`, with the header fields the query asks for (below) |
//! | `/hang` | accepts the request and never answers |
//! | `/status/<code>` | that status with a short text body |
//! | anything else | 404 |
//!
//! Body routes carry `ETag`, `Last-Modified`, `Content-Length` and
//! `Content-Type: application/octet-stream`, and answer `If-None-Match` /
//! `If-Modified-Since` with 304 (counted per path, see [`Origin::not_modified`]). The query
//! string never changes the content, and hits are counted per path without the query.
//!
//! `/headers/` lets a test state the response header fields under test in the URL. Each
//! query parameter `Name=value` (both percent-decoded; `+` is a plus, not a space) becomes a
//! header field of the 200 and of the 304. A name given once replaces the route's default of
//! that name (`Cache-Control: public, max-age=3600`, `ETag`, `Last-Modified`,
//! `Content-Type`); a repeated name appends. The value `none` omits the field, so
//! `Cache-Control=none&Last-Modified=none` leaves a response with no freshness information at
//! all (`Date` cannot be omitted: the server always sends one). `Date`, `Expires` and
//! `Last-Modified` also take `now`, `now-<secs>` or `now+<secs>`, turned into an HTTP date when
//! the request arrives, e.g. `/headers/100/t?Cache-Control=none&Last-Modified=now-864000`.
//! Any other value is sent as it is (`Expires=0`, `Age=100`). The 304 decision uses the
//! `ETag` and `Last-Modified` actually sent. `Content-Length` and hop-by-hop fields cannot
//! be set; a malformed query gets 400 with the reason. The optional `<tag>` segment only
//! makes the path (hence the hit counter, body and `ETag`) distinct per test.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

use crate::Error;

/// Size of one generated body frame: large enough that per-frame overhead is negligible,
/// small enough that generating it (tens of µs) never stalls the runtime.
pub const PATTERN_CHUNK: usize = 64 * 1024;

/// Most connections the origin serves at once; beyond that, accepting waits. A test origin
/// only needs to outlast the largest testnet's concurrent fetches.
const MAX_CONNECTIONS: usize = 4096;

/// Pause after a failed `accept` (e.g. EMFILE) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// A TLS client that does not finish its handshake in this time is dropped; loopback
/// handshakes take milliseconds.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `max-age` of the cacheable routes: long enough that nothing expires during a test.
const DEFAULT_MAX_AGE: u64 = 3600;

/// The `Last-Modified` of every body (2023-11-14T22:13:20Z): fixed, so validators are
/// deterministic across origin restarts.
const LAST_MODIFIED_UNIX: u64 = 1_700_000_000;

/// Domain separation for the body pattern; bump the version if the pattern ever changes.
const PATTERN_CONTEXT: &str = "reef-testnet origin body pattern v1";

/// The deterministic byte stream behind every body of the origin.
///
/// `Pattern::new("/bytes/10")` yields the bytes of `GET /bytes/10` (a URL or a query is
/// accepted and reduced to the path).
#[derive(Clone)]
pub struct Pattern {
    reader: blake3::OutputReader,
}

impl Pattern {
    /// The pattern of `path` (a path, or an absolute URL; the query is ignored).
    pub fn new(path: &str) -> Pattern {
        let path = normalize_path(path);
        let mut hasher = blake3::Hasher::new_derive_key(PATTERN_CONTEXT);
        hasher.update(path.as_bytes());
        Pattern {
            reader: hasher.finalize_xof(),
        }
    }

    /// Fills `buf` with the next bytes of the pattern.
    pub fn fill(&mut self, buf: &mut [u8]) {
        self.reader.fill(buf);
    }

    /// Offset of the next byte.
    pub fn position(&self) -> u64 {
        self.reader.position()
    }

    /// Moves to byte `offset`.
    pub fn seek(&mut self, offset: u64) {
        self.reader.set_position(offset);
    }

    /// Whether `chunk` equals the next `chunk.len()` bytes of the pattern; advances either
    /// way. Lets a test verify a huge download piece by piece.
    pub fn matches(&mut self, chunk: &[u8]) -> bool {
        let mut expected = [0u8; 4096];
        let mut equal = true;
        for piece in chunk.chunks(expected.len()) {
            let want = &mut expected[..piece.len()];
            self.reader.fill(want);
            equal &= want == piece;
        }
        equal
    }
}

/// The first `n` bytes the origin sends for `path` (a path or URL; query ignored).
/// Holds the whole body: for big bodies use [`Pattern`] or [`expected_digest`].
pub fn expected_body(path: &str, n: u64) -> Vec<u8> {
    let len = usize::try_from(n).unwrap_or(usize::MAX);
    let mut body = vec![0u8; len];
    Pattern::new(path).fill(&mut body);
    body
}

/// blake3 of [`expected_body`]`(path, n)`, computed in chunks without holding the body.
pub fn expected_digest(path: &str, n: u64) -> blake3::Hash {
    let mut pattern = Pattern::new(path);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; PATTERN_CHUNK];
    let mut left = n;
    while left > 0 {
        let take = usize::try_from(left.min(PATTERN_CHUNK as u64)).unwrap_or(PATTERN_CHUNK);
        pattern.fill(&mut buf[..take]);
        hasher.update(&buf[..take]);
        left -= take as u64;
    }
    hasher.finalize()
}

/// The `ETag` the origin sends for `path` (query ignored).
pub fn expected_etag(path: &str) -> String {
    let hash = blake3::hash(normalize_path(path).as_bytes());
    format!("\"{}\"", &hash.to_hex()[..16])
}

/// What the body and `ETag` of `/vary/<header>/<n>` are generated from, for a request whose
/// `<header>` is `value` (None: absent): pass it to [`expected_body`] or [`expected_etag`].
pub fn variant_seed(path: &str, value: Option<&str>) -> String {
    let path = normalize_path(path);
    match value {
        Some(v) => format!("{path}/{}", &blake3::hash(v.as_bytes()).to_hex()[..16]),
        None => format!("{path}/absent"),
    }
}

/// Reduces a URL or request target to its path: drops scheme, authority, query, fragment.
fn normalize_path(target: &str) -> &str {
    let mut rest = target;
    for scheme in ["http://", "https://"] {
        if let Some(after) = rest.strip_prefix(scheme) {
            rest = after.find('/').map_or("/", |i| &after[i..]);
        }
    }
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

/// Per-path request counters.
#[derive(Default)]
struct Stats {
    total: AtomicU64,
    per_path: Mutex<HashMap<String, u64>>,
    not_modified: Mutex<HashMap<String, u64>>,
}

impl Stats {
    fn record(&self, path: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        Self::bump(&self.per_path, path);
    }

    fn record_not_modified(&self, path: &str) {
        Self::bump(&self.not_modified, path);
    }

    fn hits(&self, path: &str) -> u64 {
        Self::count(&self.per_path, path)
    }

    fn not_modified(&self, path: &str) -> u64 {
        Self::count(&self.not_modified, path)
    }

    fn bump(counts: &Mutex<HashMap<String, u64>>, path: &str) {
        let mut map = counts.lock().unwrap_or_else(PoisonError::into_inner);
        *map.entry(path.to_owned()).or_default() += 1;
    }

    fn count(counts: &Mutex<HashMap<String, u64>>, path: &str) -> u64 {
        let map = counts.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(normalize_path(path)).copied().unwrap_or(0)
    }
}

/// A running origin. Dropping it stops it (abruptly); [`Origin::shutdown`] waits for that.
pub struct Origin {
    addr: SocketAddr,
    tls: bool,
    stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .field("total_hits", &self.total_hits())
            .finish()
    }
}

impl Origin {
    /// Starts a plain-HTTP origin on `addr` (port 0 picks a free port).
    pub async fn start(addr: SocketAddr) -> Result<Origin, Error> {
        Self::start_inner(addr, None).await
    }

    /// Starts an HTTPS origin on `addr` with the given PEM certificate chain and key.
    pub async fn start_tls(
        addr: SocketAddr,
        cert_chain_pem: &str,
        key_pem: &str,
    ) -> Result<Origin, Error> {
        let acceptor = tls_acceptor(cert_chain_pem, key_pem)?;
        Self::start_inner(addr, Some(acceptor)).await
    }

    async fn start_inner(
        addr: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<Origin, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("binding the origin to {addr}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the origin's address", e))?;
        let stats = Arc::new(Stats::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let is_tls = tls.is_some();
        let task = tokio::spawn(serve(listener, tls, Arc::clone(&stats), stop_rx));
        debug!(%addr, tls = is_tls, "origin started");
        Ok(Origin {
            addr,
            tls: is_tls,
            stats,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/path` (`https` for a TLS origin); a missing leading `/` is added.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("{scheme}://{}{slash}{path}", self.addr)
    }

    /// GET/HEAD requests received so far for `path` (query ignored; a URL is accepted).
    pub fn hits(&self, path: &str) -> u64 {
        self.stats.hits(path)
    }

    /// How many of the requests for `path` were answered 304 (a conditional request whose
    /// validator matched), as [`Origin::hits`] counts them.
    pub fn not_modified(&self, path: &str) -> u64 {
        self.stats.not_modified(path)
    }

    /// GET/HEAD requests received so far, all paths.
    pub fn total_hits(&self) -> u64 {
        self.stats.total.load(Ordering::Relaxed)
    }

    /// Stops accepting, drops every open connection (including `/hang` ones), and waits
    /// until the server task is gone.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
            && e.is_panic()
        {
            warn!(error = %e, "origin task panicked");
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn tls_acceptor(cert_chain_pem: &str, key_pem: &str) -> Result<tokio_rustls::TlsAcceptor, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls("no certificate in the PEM chain".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| Error::Tls(format!("bad private key PEM: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The accept loop. Owns every connection task; when it returns, they are all aborted.
async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stats: Arc<Stats>,
    mut stop: oneshot::Receiver<()>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        // Forget finished connections so the set only holds live ones.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = &mut stop => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "origin accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let stats = Arc::clone(&stats);
        let tls = tls.clone();
        connections.spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            match tls {
                None => serve_connection(stream, stats).await,
                Some(acceptor) => serve_tls(acceptor, stream, stats, peer).await,
            }
        });
    }
    connections.shutdown().await;
}

async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    stats: Arc<Stats>,
    peer: SocketAddr,
) {
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => serve_connection(tls, stats).await,
        Ok(Err(e)) => debug!(%peer, error = %e, "origin TLS handshake failed"),
        Err(_) => debug!(%peer, "origin TLS handshake timed out"),
    }
}

async fn serve_connection<S>(stream: S, stats: Arc<Stats>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let stats = Arc::clone(&stats);
        async move { Ok::<_, Infallible>(handle(req, &stats).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        debug!(error = %e, "origin connection ended with an error");
    }
}

/// What a path asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Body {
        len: u64,
        cache_control: String,
        delay: Option<Duration>,
    },
    /// A body whose header fields come from the query (see the module docs).
    Headers {
        len: u64,
    },
    Hang,
    Status(StatusCode),
    NotFound,
}

fn route(path: &str) -> Route {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let num = |s: &str| s.parse::<u64>().ok();
    let public = default_cache_control;
    let body = |len: Option<u64>, cache_control: String, delay: Option<Duration>| match len {
        Some(len) => Route::Body {
            len,
            cache_control,
            delay,
        },
        None => Route::NotFound,
    };
    match segments.as_slice() {
        // Like /bytes, but also accepts writes (see `handle`), to exercise invalidation.
        ["bytes", n] | ["writable", n] => body(num(n), public(), None),
        ["nostore", n] => body(num(n), "no-store".into(), None),
        ["private", n] => body(num(n), "private".into(), None),
        ["maxage", secs, n] => match num(secs) {
            Some(secs) => body(num(n), format!("public, max-age={secs}"), None),
            None => Route::NotFound,
        },
        ["slow", ms, n] => match num(ms) {
            Some(ms) => body(num(n), public(), Some(Duration::from_millis(ms))),
            None => Route::NotFound,
        },
        // The optional last segment is a tag that only keeps tests' paths apart.
        ["headers", n] | ["headers", n, _] if !path.ends_with('/') => {
            num(n).map_or(Route::NotFound, |len| Route::Headers { len })
        }
        ["hang"] => Route::Hang,
        ["status", code] => match code.parse::<u16>().ok().map(StatusCode::from_u16) {
            Some(Ok(status)) if status.as_u16() >= 200 => Route::Status(status),
            _ => Route::NotFound,
        },
        _ => Route::NotFound,
    }
}

async fn handle(req: Request<Incoming>, stats: &Stats) -> Response<OriginBody> {
    let path = req.uri().path().to_owned();
    let head = req.method() == Method::HEAD;
    let write = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if write && (path.starts_with("/writable/") || path.starts_with("/vary/")) {
        return text(StatusCode::NO_CONTENT, "", false);
    }
    if req.method() != Method::GET && !head {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n", false);
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    stats.record(&path);
    if let ["vary", name, n] = path.trim_start_matches('/').split('/').collect::<Vec<_>>()[..]
        && let Ok(len) = n.parse::<u64>()
    {
        let value = req.headers().get(name).and_then(|v| v.to_str().ok());
        let seed = variant_seed(&path, value);
        let mut fields = default_fields(&seed, &default_cache_control());
        if let Ok(name) = HeaderValue::from_str(name) {
            fields.insert(header::VARY, name);
        }
        return body_response(&req, stats, &seed, len, fields, head);
    }
    match route(&path) {
        Route::Body {
            len,
            cache_control,
            delay,
        } => {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let fields = default_fields(&path, &cache_control);
            body_response(&req, stats, &path, len, fields, head)
        }
        Route::Headers { len } => {
            let mut fields = default_fields(&path, &default_cache_control());
            match query_fields(req.uri().query().unwrap_or(""), SystemTime::now()) {
                Ok(asked) => {
                    apply_fields(&mut fields, asked);
                    body_response(&req, stats, &path, len, fields, head)
                }
                Err(reason) => text(
                    StatusCode::BAD_REQUEST,
                    &format!("bad /headers query: {reason}\n"),
                    head,
                ),
            }
        }
        Route::Hang => std::future::pending().await,
        Route::Status(status) => {
            let msg = format!(
                "status {} {}\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
            let empty = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
            text(status, if empty { "" } else { &msg }, head)
        }
        Route::NotFound => text(StatusCode::NOT_FOUND, "not found\n", head),
    }
}

fn last_modified() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(LAST_MODIFIED_UNIX)
}

fn default_cache_control() -> String {
    format!("public, max-age={DEFAULT_MAX_AGE}")
}

/// The representation's header fields every body route sends, on the 200 and on the 304.
fn default_fields(path: &str, cache_control: &str) -> HeaderMap {
    let mut fields = HeaderMap::new();
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            fields.insert(name, value);
        }
    };
    set(header::CACHE_CONTROL, cache_control);
    set(header::ETAG, &expected_etag(path));
    set(
        header::LAST_MODIFIED,
        &httpdate::fmt_http_date(last_modified()),
    );
    set(header::CONTENT_TYPE, "application/octet-stream");
    fields
}

/// One header field a `/headers/` query asks for; `None` omits the field.
type AskedField = (HeaderName, Option<HeaderValue>);

/// Fields the origin controls itself: the body's framing and per-connection fields.
const UNSETTABLE: [HeaderName; 5] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::TRAILER,
    header::UPGRADE,
];

/// Parses a `/headers/` query into the header fields it asks for, in order.
fn query_fields(query: &str, now: SystemTime) -> Result<Vec<AskedField>, String> {
    let mut asked = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        let name = percent_decode(name)?;
        let value = percent_decode(value)?;
        let name = HeaderName::from_bytes(&name)
            .map_err(|_| format!("{:?} is not a header name", String::from_utf8_lossy(&name)))?;
        if UNSETTABLE.contains(&name) || name == "keep-alive" {
            return Err(format!("{name} cannot be set"));
        }
        let value = if value == b"none" {
            if name == header::DATE {
                return Err("Date cannot be omitted".into());
            }
            None
        } else {
            let value = match relative_date(&name, &value, now)? {
                Some(date) => date.into_bytes(),
                None => value,
            };
            let value = HeaderValue::from_bytes(&value)
                .map_err(|_| format!("the value of {name} is not a header value"))?;
            Some(value)
        };
        asked.push((name, value));
    }
    Ok(asked)
}

/// `now`, `now-<secs>` or `now+<secs>` as an HTTP date, for the date-valued fields;
/// `None` for any other value, which is sent as it is.
fn relative_date(
    name: &HeaderName,
    value: &[u8],
    now: SystemTime,
) -> Result<Option<String>, String> {
    let dated = [header::DATE, header::EXPIRES, header::LAST_MODIFIED];
    let Some(offset) = value.strip_prefix(b"now").filter(|_| dated.contains(name)) else {
        return Ok(None);
    };
    let secs = |digits: &[u8]| {
        std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{name}: expected now, now-<secs> or now+<secs>"))
    };
    let when = match offset {
        [] => Some(now),
        [b'-', digits @ ..] => now.checked_sub(secs(digits)?),
        [b'+', digits @ ..] => now.checked_add(secs(digits)?),
        _ => return Err(format!("{name}: expected now, now-<secs> or now+<secs>")),
    };
    let when = when.ok_or_else(|| format!("{name}: date out of range"))?;
    Ok(Some(httpdate::fmt_http_date(when)))
}

/// Decodes `%XX` escapes; anything else is taken literally (including `+`).
fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Applies what a query asks for: a name's first mention replaces the default of that name,
/// later mentions append, `None` leaves it out.
fn apply_fields(fields: &mut HeaderMap, asked: Vec<AskedField>) {
    let mut seen: Vec<HeaderName> = Vec::new();
    for (name, value) in asked {
        if !seen.contains(&name) {
            fields.remove(&name);
            seen.push(name.clone());
        }
        if let Some(value) = value {
            fields.append(name, value);
        }
    }
}

/// Whether a conditional request matches the validators in `fields` (RFC 9110 §13.1.2:
/// `If-None-Match` wins over `If-Modified-Since`).
fn is_not_modified<B>(req: &Request<B>, fields: &HeaderMap) -> bool {
    let etag = fields.get(header::ETAG).and_then(|v| v.to_str().ok());
    if let Some(inm) = req.headers().get(header::IF_NONE_MATCH) {
        return inm.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || Some(t.trim()) == etag)
        });
    }
    let http_date = |v: &HeaderValue| {
        v.to_str()
            .ok()
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    let modified = fields.get(header::LAST_MODIFIED).and_then(http_date);
    let since = req
        .headers()
        .get(header::IF_MODIFIED_SINCE)
        .and_then(http_date);
    matches!((since, modified), (Some(since), Some(modified)) if since >= modified)
}

fn body_response<B>(
    req: &Request<B>,
    stats: &Stats,
    path: &str,
    len: u64,
    mut fields: HeaderMap,
    head: bool,
) -> Response<OriginBody> {
    let not_modified = is_not_modified(req, &fields);
    if not_modified {
        // A 304 describes the stored representation; its type is not news (RFC 9110 §15.4.5).
        fields.remove(header::CONTENT_TYPE);
    }
    let mut builder = Response::builder();
    if let Some(headers) = builder.headers_mut() {
        headers.extend(fields);
    }
    let built = if not_modified {
        stats.record_not_modified(path);
        builder
            .status(StatusCode::NOT_MODIFIED)
            .body(OriginBody::empty())
    } else {
        builder
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, len)
            .body(if head {
                OriginBody::empty()
            } else {
                OriginBody::pattern(path, len)
            })
    };
    built.unwrap_or_else(|e| internal_error(&e))
}

fn text(status: StatusCode, msg: &str, head: bool) -> Response<OriginBody> {
    let body = if head {
        OriginBody::empty()
    } else {
        OriginBody::full(Bytes::copy_from_slice(msg.as_bytes()))
    };
    let mut builder = Response::builder().status(status);
    if !msg.is_empty() {
        builder = builder
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(header::CONTENT_LENGTH, msg.len());
    }
    builder.body(body).unwrap_or_else(|e| internal_error(&e))
}

fn internal_error(e: &http::Error) -> Response<OriginBody> {
    warn!(error = %e, "origin could not build a response");
    let mut resp = Response::new(OriginBody::empty());
    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    resp
}

/// A response body: nothing, one buffer, or a generated pattern stream.
struct OriginBody {
    kind: BodyKind,
}

enum BodyKind {
    Full(Option<Bytes>),
    Pattern { pattern: Pattern, remaining: u64 },
}

impl OriginBody {
    fn empty() -> Self {
        OriginBody {
            kind: BodyKind::Full(None),
        }
    }

    fn full(bytes: Bytes) -> Self {
        OriginBody {
            kind: BodyKind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    fn pattern(path: &str, len: u64) -> Self {
        OriginBody {
            kind: BodyKind::Pattern {
                pattern: Pattern::new(path),
                remaining: len,
            },
        }
    }
}

impl http_body::Body for OriginBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        match &mut this.kind {
            BodyKind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            BodyKind::Pattern { pattern, remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let take = usize::try_from((*remaining).min(PATTERN_CHUNK as u64))
                    .unwrap_or(PATTERN_CHUNK);
                let mut buf = BytesMut::zeroed(take);
                pattern.fill(&mut buf);
                *remaining -= take as u64;
                Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full(bytes) => bytes.is_none(),
            BodyKind::Pattern { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            BodyKind::Pattern { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn normalize_path_strips_url_parts() {
        assert_eq!(normalize_path("/bytes/10"), "/bytes/10");
        assert_eq!(normalize_path("/bytes/10?x=1"), "/bytes/10");
        assert_eq!(
            normalize_path("http://127.0.0.1:80/bytes/10?x#y"),
            "/bytes/10"
        );
        assert_eq!(normalize_path("https://h"), "/");
    }

    #[test]
    fn routes_parse() {
        assert!(matches!(
            route("/bytes/10"),
            Route::Body {
                len: 10,
                delay: None,
                ..
            }
        ));
        assert!(matches!(
            route("/maxage/5/10"),
            Route::Body { len: 10, ref cache_control, .. } if cache_control == "public, max-age=5"
        ));
        assert!(matches!(
            route("/slow/20/1"),
            Route::Body { delay: Some(d), .. } if d == Duration::from_millis(20)
        ));
        assert_eq!(route("/hang"), Route::Hang);
        assert_eq!(
            route("/status/503"),
            Route::Status(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(route("/status/100"), Route::NotFound);
        assert_eq!(route("/status/abc"), Route::NotFound);
        assert_eq!(route("/bytes/x"), Route::NotFound);
        assert_eq!(route("/bytes/1/2"), Route::NotFound);
        assert_eq!(route("/"), Route::NotFound);
        assert_eq!(route("/headers/10"), Route::Headers { len: 10 });
        assert_eq!(route("/headers/10/max-age"), Route::Headers { len: 10 });
        assert_eq!(route("/headers/10/"), Route::NotFound);
        assert_eq!(route("/headers/10/a/b"), Route::NotFound);
        assert_eq!(route("/headers/x/a"), Route::NotFound);
        assert_eq!(route("/headers"), Route::NotFound);
    }

    fn asked(query: &str, now: SystemTime) -> HeaderMap {
        let mut fields = default_fields("/headers/1", &default_cache_control());
        apply_fields(&mut fields, query_fields(query, now).unwrap());
        fields
    }

    fn all<'a>(fields: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        fields
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn header_queries_replace_append_and_omit_fields() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(LAST_MODIFIED_UNIX);
        // No query: the defaults of every body route.
        let fields = asked("", now);
        assert_eq!(all(&fields, "cache-control"), ["public, max-age=3600"]);
        assert_eq!(all(&fields, "etag"), [expected_etag("/headers/1")]);
        assert_eq!(
            all(&fields, "last-modified"),
            ["Tue, 14 Nov 2023 22:13:20 GMT"]
        );

        // Percent-decoded; the first mention replaces the default, the next ones append;
        // `+` stays a plus; names are case-insensitive.
        let fields = asked(
            "Cache-Control=max-age%3D60&cache-control=must-revalidate&Age=100&X-Note=a+b%20c",
            now,
        );
        assert_eq!(
            all(&fields, "cache-control"),
            ["max-age=60", "must-revalidate"]
        );
        assert_eq!(all(&fields, "age"), ["100"]);
        assert_eq!(all(&fields, "x-note"), ["a+b c"]);
        assert_eq!(all(&fields, "etag").len(), 1, "untouched defaults stay");

        // `none` omits a field.
        let fields = asked("Cache-Control=none&Last-Modified=none&ETag=none", now);
        for name in ["cache-control", "last-modified", "etag"] {
            assert!(!fields.contains_key(name), "{name}");
        }
        assert!(fields.contains_key("content-type"));

        // Relative dates on the date-valued fields only; other values pass as they are.
        let fields = asked(
            "Expires=now+10&Last-Modified=now-864000&Date=now&Age=now-1&X-When=now",
            now,
        );
        assert_eq!(all(&fields, "expires"), ["Tue, 14 Nov 2023 22:13:30 GMT"]);
        assert_eq!(
            all(&fields, "last-modified"),
            ["Sat, 04 Nov 2023 22:13:20 GMT"]
        );
        assert_eq!(all(&fields, "date"), ["Tue, 14 Nov 2023 22:13:20 GMT"]);
        assert_eq!(all(&fields, "age"), ["now-1"]);
        assert_eq!(all(&fields, "x-when"), ["now"]);
        assert_eq!(all(&asked("Expires=0", now), "expires"), ["0"]);
        assert_eq!(all(&asked("X-Empty", now), "x-empty"), [""]);

        for bad in [
            "Expires=now-x",
            "Expires=now*2",
            "Last-Modified=now-",
            "Date=none",
            "Content-Length=5",
            "Transfer-Encoding=chunked",
            "Connection=close",
            "Bad%20Name=1",
            "X-A=%zz",
            "X-A=%4",
            "X-A=%+f",
            "X-A=line%0Abreak",
        ] {
            assert!(query_fields(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn not_modified_follows_the_validators_sent() {
        let now = SystemTime::now();
        let conditional = |name: &str, value: &str| {
            Request::get("/headers/1")
                .header(name, value)
                .body(())
                .unwrap()
        };
        let etag = expected_etag("/headers/1");
        let defaults = asked("", now);
        assert!(is_not_modified(
            &conditional("if-none-match", &etag),
            &defaults
        ));
        assert!(is_not_modified(
            &conditional("if-none-match", "*"),
            &defaults
        ));
        assert!(!is_not_modified(
            &conditional("if-none-match", "\"x\""),
            &defaults
        ));
        let lm = httpdate::fmt_http_date(last_modified());
        assert!(is_not_modified(
            &conditional("if-modified-since", &lm),
            &defaults
        ));

        // The validators actually sent count: a replaced ETag, a relative Last-Modified,
        // or none at all.
        let replaced = asked("ETag=%22v2%22&Last-Modified=now-100", now);
        assert!(!is_not_modified(
            &conditional("if-none-match", &etag),
            &replaced
        ));
        assert!(is_not_modified(
            &conditional("if-none-match", "\"v2\""),
            &replaced
        ));
        let since = httpdate::fmt_http_date(now - Duration::from_secs(50));
        assert!(is_not_modified(
            &conditional("if-modified-since", &since),
            &replaced
        ));
        let before = httpdate::fmt_http_date(now - Duration::from_secs(200));
        assert!(!is_not_modified(
            &conditional("if-modified-since", &before),
            &replaced
        ));
        let bare = asked("ETag=none&Last-Modified=none", now);
        assert!(!is_not_modified(
            &conditional("if-none-match", &etag),
            &bare
        ));
        assert!(!is_not_modified(
            &conditional("if-modified-since", &lm),
            &bare
        ));
    }

    #[test]
    fn pattern_is_deterministic_and_seekable() {
        let a = expected_body("/bytes/100", 100);
        assert_eq!(a, expected_body("/bytes/100?q=1", 100));
        assert_ne!(a, expected_body("/nostore/100", 100));
        let mut p = Pattern::new("/bytes/100");
        p.seek(40);
        let mut tail = [0u8; 60];
        p.fill(&mut tail);
        assert_eq!(&a[40..], &tail[..]);
        let mut p = Pattern::new("/bytes/100");
        assert!(p.matches(&a[..50]));
        assert!(!p.matches(&[0u8; 50]));
        assert_eq!(expected_digest("/bytes/100", 100), blake3::hash(&a));
        let big = expected_body("/bytes/300000", 300_000);
        assert_eq!(
            expected_digest("/bytes/300000", 300_000),
            blake3::hash(&big)
        );
    }
}
