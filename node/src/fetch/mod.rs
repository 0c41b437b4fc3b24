//! The fetch pipeline, one function per phase: local cache → coalesced fill from the nearest
//! peer that holds the object → origin; the body is stored while it streams to the client,
//! and the node then announces itself as a holder.

mod announce;
mod error;
mod headers;
mod holders;
mod source;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header, request, response};
use http_body_util::BodyExt;
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};
use hyper::body::Incoming;
use reef_cache::{Fill, Meta, Outcome, Store};
use reef_proto::{CanonicalUrl, ContentKey};
use tracing::{Instrument, debug, info_span, warn};

pub use announce::{AnnounceStats, Announcer};
pub use error::FetchError;
pub use headers::strip_hop_by_hop;
pub use source::Source;
pub use upstream::{OBJECT_PATH, Upstreams};

use crate::body::{self, Body};

/// How many holders to ask the DHT for; more only adds lookup time.
const MAX_HOLDERS: usize = 8;
/// A DHT lookup slower than this costs more than fetching from the origin would.
const HOLDER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// An upstream body that stalls this long is abandoned (and never stored).
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Who we are, for ranking holders (same provider, then same region, first).
#[derive(Debug, Clone)]
pub struct LocalInfo {
    pub provider: String,
    pub region: String,
}

/// A response ready for the respond phase (conditionals, ranges, HEAD, labels).
pub struct Served {
    pub head: response::Parts,
    pub payload: Payload,
    pub source: Source,
    pub cache: CacheStatus,
}

/// The body of a served response: a stored file can be sliced for ranges, a stream cannot.
pub enum Payload {
    File { file: tokio::fs::File, len: u64 },
    Stream(Body),
}

/// What `X-Cache` says about how the stored copy was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Stale,
    /// A stale stored copy the origin confirmed with 304; its headers were refreshed.
    Revalidated,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Stale => "STALE",
            Self::Revalidated => "REVALIDATED",
        }
    }
}

/// What the local cache has for a request.
enum Local {
    Fresh(Box<Served>),
    /// A stored copy that may not be served as it is, kept for `stale-if-error`.
    Stale(Box<reef_cache::Hit>),
    Miss,
}

#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    overlay: reef_overlay::Client,
    upstreams: Upstreams,
    local: LocalInfo,
    announcer: Announcer,
    /// Where each in-progress fill gets its bytes, so coalesced followers can say so too.
    /// Bounded by the number of fills in progress: entries leave when the fill ends.
    fill_sources: Mutex<HashMap<ContentKey, Source>>,
}

impl Fetcher {
    pub fn new(
        store: Store,
        overlay: reef_overlay::Client,
        upstreams: Upstreams,
        local: LocalInfo,
        announcer: Announcer,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                overlay,
                upstreams,
                local,
                announcer,
                fill_sources: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Serves a GET or HEAD for `url`; `req` carries the client's headers.
    pub async fn get(&self, url: CanonicalUrl, req: &request::Parts) -> Result<Served, FetchError> {
        let key = ContentKey::for_url(&url);
        let policy_req = policy_request(&url, req);
        let stale = match self.lookup_local(key, &policy_req).await {
            Local::Fresh(served) => return Ok(*served),
            Local::Stale(hit) => Some(*hit),
            Local::Miss => None,
        };
        if has_directive(&policy_req.headers, "only-if-cached") {
            return Err(FetchError::NotCached);
        }
        let fetched = self.fetch(key, url, &policy_req, stale.as_ref()).await;
        match stale {
            Some(hit)
                if upstream_failed(&fetched) && stale_if_error_allows(&hit.meta, &policy_req) =>
            {
                debug!(key = %key.short(), "origin failed; serving the stale copy (stale-if-error)");
                Ok(serve_hit(hit, SystemTime::now(), CacheStatus::Stale))
            }
            _ => fetched,
        }
    }

    /// Phase: fetch, coalesced with any fetch of the same key already under way here.
    async fn fetch(
        &self,
        key: ContentKey,
        url: CanonicalUrl,
        policy_req: &request::Parts,
        stale: Option<&reef_cache::Hit>,
    ) -> Result<Served, FetchError> {
        match self.inner.store.fill(key) {
            Fill::Leader(guard) => {
                // Another fill may have committed between our lookup and taking the lead.
                if let Local::Fresh(served) = self.lookup_local(key, policy_req).await {
                    guard.skip();
                    return Ok(*served);
                }
                self.lead_fill(guard, url, policy_req, stale).await
            }
            Fill::Follower(wait) => match wait.wait().await {
                Outcome::Streaming(tail) => Ok(serve_tail(tail, self.fill_source(&key))),
                // The leader stored nothing new: it revalidated our copy, or the response must
                // not be stored. Look again before going upstream ourselves.
                Outcome::Uncached => match self.lookup_local(key, policy_req).await {
                    Local::Fresh(served) => Ok(*served),
                    _ => self.fetch_uncached(&url, policy_req).await,
                },
                Outcome::Failed => Err(FetchError::Coalesced),
            },
        }
    }

    /// Phase: local cache. Only a copy fresh enough for this request is served.
    async fn lookup_local(&self, key: ContentKey, policy_req: &request::Parts) -> Local {
        let hit = match self.inner.store.get(&key).await {
            Ok(Some(hit)) => hit,
            Ok(None) => return Local::Miss,
            Err(e) => {
                warn!(key = %key.short(), error = %e, "cache read failed; treating as a miss");
                return Local::Miss;
            }
        };
        let now = SystemTime::now();
        if !matches!(
            hit.meta.policy.before_request(policy_req, now),
            BeforeRequest::Fresh(_)
        ) {
            debug!(key = %key.short(), "stored copy is stale");
            return Local::Stale(Box::new(hit));
        }
        Local::Fresh(Box::new(serve_hit(hit, now, CacheStatus::Hit)))
    }

    /// Phase: fill. We are the one fetch for this key; followers read what we store.
    async fn lead_fill(
        &self,
        guard: reef_cache::FillGuard,
        url: CanonicalUrl,
        policy_req: &request::Parts,
        stale: Option<&reef_cache::Hit>,
    ) -> Result<Served, FetchError> {
        let key = guard.key();
        let upstream = match stale.filter(|hit| has_validators(&hit.meta)) {
            Some(hit) => match self.revalidate(key, &url, policy_req, hit).await? {
                Revalidation::Confirmed(served) => {
                    guard.skip();
                    return Ok(*served);
                }
                Revalidation::Replaced(response) => Upstream {
                    response,
                    source: Source::Origin,
                },
            },
            None => self.fetch_upstream(key, &url, policy_req).await?,
        };
        let (mut head, incoming) = upstream.response.into_parts();
        strip_hop_by_hop(&mut head.headers);
        let Some(policy) = self.storable_policy(policy_req, &head) else {
            guard.skip();
            return Ok(pass_through(head, incoming, upstream.source));
        };
        let headers = head
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect();
        // The service (tenant) whose storage quota the body counts against is the URL's host.
        let meta = Meta::new(url.to_string(), policy, head.status.as_u16(), headers)
            .with_tenant(url.host());
        // Set before start(): start() wakes the followers, who read it.
        self.set_fill_source(key, Some(upstream.source));
        let mut writer = match guard.start(meta, content_length(&head.headers)).await {
            Ok(w) => w,
            Err(e) => {
                self.set_fill_source(key, None);
                if !matches!(e, reef_cache::Error::OverQuota { .. }) {
                    warn!(key = %key.short(), error = %e, "cannot store; serving without caching");
                }
                return Ok(pass_through(head, incoming, upstream.source));
            }
        };
        let Some(tail) = self.inner.store.tail(&key) else {
            self.set_fill_source(key, None);
            return Err(FetchError::Internal(
                "fill vanished before it could be read".into(),
            ));
        };
        let fetcher = self.clone();
        let span = info_span!("fill", key = %key.short(), source = %upstream.source);
        // The fill runs on its own so that a client hanging up does not abort it for the others.
        tokio::spawn(
            async move {
                let result = pump(incoming, &mut writer).await;
                fetcher.set_fill_source(key, None);
                match result {
                    Ok(()) => match writer.commit().await {
                        Ok(meta) => {
                            debug!(bytes = meta.body_len, "stored");
                            fetcher.inner.announcer.announce(key);
                        }
                        // Served in full to everyone reading it; the cache logged why.
                        Err(reef_cache::Error::OverQuota { .. }) => {}
                        Err(e) => warn!(error = %e, "commit failed"),
                    },
                    Err(reason) => warn!(%reason, "upstream body failed; nothing stored"),
                }
            }
            .instrument(span),
        );
        Ok(serve_tail(tail, upstream.source))
    }

    /// Phase: revalidate. Asks the origin whether our stale copy is still current; a 304
    /// refreshes its stored headers (RFC 9111 §4.3.4) and it is served without refetching.
    async fn revalidate(
        &self,
        key: ContentKey,
        url: &CanonicalUrl,
        policy_req: &request::Parts,
        hit: &reef_cache::Hit,
    ) -> Result<Revalidation, FetchError> {
        let conditional = match hit
            .meta
            .policy
            .before_request(policy_req, SystemTime::now())
        {
            BeforeRequest::Stale { request, .. } => request.headers,
            // Fresh by now (a clock step); a plain conditional on our validators still works.
            BeforeRequest::Fresh(_) => policy_req.headers.clone(),
        };
        let response = self.inner.upstreams.revalidate(url, &conditional).await?;
        if response.status() != StatusCode::NOT_MODIFIED {
            return Ok(Revalidation::Replaced(response));
        }
        let (mut head, _) = response.into_parts();
        strip_hop_by_hop(&mut head.headers);
        let now = SystemTime::now();
        let AfterResponse::NotModified(policy, _) =
            hit.meta.policy.after_response(policy_req, &head, now)
        else {
            // A 304 for validators we do not hold: we may not use it; fetch the object.
            let response = self.origin_get(url, policy_req).await?;
            return Ok(Revalidation::Replaced(response));
        };
        let mut meta = hit.meta.clone();
        meta.policy = policy;
        meta.stored_at = now;
        refresh_headers(&mut meta.headers, &head.headers);
        match self.inner.store.refresh(&key, meta).await {
            Ok(true) => {}
            Ok(false) => debug!(key = %key.short(), "copy changed while revalidating"),
            Err(e) => warn!(key = %key.short(), error = %e, "storing refreshed headers failed"),
        }
        match self.inner.store.get(&key).await {
            Ok(Some(fresh)) => Ok(Revalidation::Confirmed(Box::new(serve_hit(
                fresh,
                now,
                CacheStatus::Revalidated,
            )))),
            _ => {
                let response = self.origin_get(url, policy_req).await?;
                Ok(Revalidation::Replaced(response))
            }
        }
    }

    /// The whole object from the origin, with the client's end-to-end headers.
    async fn origin_get(
        &self,
        url: &CanonicalUrl,
        policy_req: &request::Parts,
    ) -> Result<hyper::Response<Incoming>, FetchError> {
        let headers = &policy_req.headers;
        self.inner
            .upstreams
            .origin(Method::GET, url, headers, body::empty())
            .await
    }

    /// A response that must not be stored: fetched and streamed through without caching.
    async fn fetch_uncached(
        &self,
        url: &CanonicalUrl,
        policy_req: &request::Parts,
    ) -> Result<Served, FetchError> {
        let resp = self.origin_get(url, policy_req).await?;
        let (mut head, incoming) = resp.into_parts();
        strip_hop_by_hop(&mut head.headers);
        Ok(pass_through(head, incoming, Source::Origin))
    }

    /// Phase: upstream. The nearest holder that has a fresh copy, else the origin.
    async fn fetch_upstream(
        &self,
        key: ContentKey,
        url: &CanonicalUrl,
        policy_req: &request::Parts,
    ) -> Result<Upstream, FetchError> {
        let lookup = self.inner.overlay.find_holders(key, MAX_HOLDERS);
        let holders = match tokio::time::timeout(HOLDER_LOOKUP_TIMEOUT, lookup).await {
            Ok(Ok(holders)) => holders,
            Ok(Err(e)) => {
                debug!(key = %key.short(), error = %e, "holder lookup failed");
                Vec::new()
            }
            Err(_) => {
                debug!(key = %key.short(), "holder lookup timed out");
                Vec::new()
            }
        };
        let local = &self.inner.local;
        for holder in holders::rank(holders, &local.provider, &local.region) {
            let peer = holder.peer;
            match self.inner.upstreams.peer(&holder.record.http, key).await {
                Ok(resp) if resp.status() == StatusCode::OK => {
                    let (head, body) = resp.into_parts();
                    if self.fresh_for(policy_req, &head) {
                        debug!(%peer, key = %key.short(), "fetching from peer");
                        return Ok(Upstream {
                            response: hyper::Response::from_parts(head, body),
                            source: Source::Peer,
                        });
                    }
                    debug!(%peer, key = %key.short(), "peer copy not fresh enough; skipping");
                }
                Ok(resp) => debug!(%peer, status = %resp.status(), "peer does not have it"),
                Err(reason) => debug!(%peer, %reason, "peer fetch failed; trying next"),
            }
        }
        let response = self.origin_get(url, policy_req).await?;
        Ok(Upstream {
            response,
            source: Source::Origin,
        })
    }

    fn fresh_for(&self, policy_req: &request::Parts, head: &response::Parts) -> bool {
        let now = SystemTime::now();
        let policy = CachePolicy::new_options(policy_req, head, now, cache_options());
        matches!(
            policy.before_request(policy_req, now),
            BeforeRequest::Fresh(_)
        )
    }

    /// The policy to store the response under, or None when it must not be stored.
    fn storable_policy(
        &self,
        policy_req: &request::Parts,
        head: &response::Parts,
    ) -> Option<CachePolicy> {
        if head.status != StatusCode::OK {
            return None;
        }
        // Variants are keyed by their selecting headers in a later version; until then a
        // response that varies is not stored rather than served to the wrong client.
        if head.headers.contains_key(header::VARY) {
            return None;
        }
        let max = self.inner.store.stats().max_bytes;
        if content_length(&head.headers).is_some_and(|len| len > max) {
            return None;
        }
        let policy = CachePolicy::new_options(policy_req, head, SystemTime::now(), cache_options());
        policy.is_storable().then_some(policy)
    }

    fn fill_source(&self, key: &ContentKey) -> Source {
        let sources = self
            .inner
            .fill_sources
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        sources.get(key).copied().unwrap_or(Source::Origin)
    }

    fn set_fill_source(&self, key: ContentKey, source: Option<Source>) {
        let mut sources = self
            .inner
            .fill_sources
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match source {
            Some(s) => sources.insert(key, s),
            None => sources.remove(&key),
        };
    }

    /// RFC 9111 §4.4: after an unsafe method succeeds, the stored copy of its target is out of
    /// date. Drop it and stop telling the overlay we hold it.
    pub async fn invalidate(&self, url: &CanonicalUrl) {
        let key = ContentKey::for_url(url);
        match self.inner.store.remove(&key).await {
            Ok(true) => {
                debug!(key = %key.short(), "invalidated after an unsafe method");
                let overlay = self.inner.overlay.clone();
                tokio::spawn(async move {
                    if let Err(e) = overlay.unprovide(key).await {
                        debug!(key = %key.short(), error = %e, "withdrawing the announcement failed");
                    }
                });
            }
            Ok(false) => {}
            Err(e) => warn!(key = %key.short(), error = %e, "invalidation failed"),
        }
    }

    /// The peer endpoint: our stored (or still arriving) copy of `key`, never fetched for the asker.
    pub async fn serve_object(&self, key: ContentKey) -> Option<(response::Parts, Body)> {
        match self.inner.store.get(&key).await {
            Ok(Some(hit)) => {
                let head = stored_head(&hit.meta, SystemTime::now(), Some(hit.meta.body_len));
                return Some((head, body::from_file(hit.file, hit.meta.body_len)));
            }
            Ok(None) => {}
            Err(e) => warn!(key = %key.short(), error = %e, "cache read failed"),
        }
        let tail = self.inner.store.tail(&key)?;
        let head = stored_head(tail.meta(), SystemTime::now(), None);
        Some((head, body::from_tail(tail)))
    }
}

enum Revalidation {
    /// The stored copy is current (304); served with refreshed headers.
    Confirmed(Box<Served>),
    /// The origin sent something else: store and serve that instead.
    Replaced(hyper::Response<Incoming>),
}

fn has_validators(meta: &Meta) -> bool {
    meta.headers
        .iter()
        .any(|(name, _)| name == "etag" || name == "last-modified")
}

/// RFC 9111 §3.2: fields of a 304 replace the stored ones of the same name, except those
/// that describe the body's framing.
fn refresh_headers(stored: &mut Vec<(String, Vec<u8>)>, fresh: &HeaderMap) {
    const KEEP: [header::HeaderName; 4] = [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::TRANSFER_ENCODING,
        header::CONTENT_RANGE,
    ];
    for name in fresh.keys() {
        if KEEP.contains(name) {
            continue;
        }
        stored.retain(|(n, _)| n != name.as_str());
        for value in fresh.get_all(name) {
            stored.push((name.as_str().to_string(), value.as_bytes().to_vec()));
        }
    }
}

struct Upstream {
    response: hyper::Response<Incoming>,
    source: Source,
}

/// Shared-cache rules: `private` responses are not stored, `s-maxage` counts.
fn cache_options() -> CacheOptions {
    CacheOptions {
        shared: true,
        ..CacheOptions::default()
    }
}

/// The request as the freshness rules see it: the canonical URL with the client's headers.
fn policy_request(url: &CanonicalUrl, req: &request::Parts) -> request::Parts {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = Method::GET;
    parts.uri = url.to_uri();
    parts.headers = req.headers.clone();
    // What we store answers the full, unconditional request we send upstream; ranges and
    // conditionals are answered from it in the respond phase.
    headers::strip_for_full_fetch(&mut parts.headers);
    // Stored responses are matched on Host too; clients spell it variously, the URL does not.
    if let Ok(host) = HeaderValue::from_str(url.authority()) {
        parts.headers.insert(header::HOST, host);
    }
    parts
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Status and headers of a stored response, with `Age` brought up to `now`.
/// `Date` stays the origin's, so hopping between nodes never makes a copy look younger.
/// `committed_len` is the stored body's length; None while it is still arriving, when the
/// origin's own `Content-Length` (if any) stands.
fn stored_head(meta: &Meta, now: SystemTime, committed_len: Option<u64>) -> response::Parts {
    let (mut head, ()) = http::Response::new(()).into_parts();
    head.status = StatusCode::from_u16(meta.status).unwrap_or(StatusCode::OK);
    for (name, value) in &meta.headers {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            head.headers.append(n, v);
        }
    }
    head.headers.insert(
        header::AGE,
        HeaderValue::from(meta.policy.age(now).as_secs()),
    );
    if let Some(len) = committed_len {
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    head
}

/// A committed local copy, served from its file (so the respond phase can slice ranges).
fn serve_hit(hit: reef_cache::Hit, now: SystemTime, cache: CacheStatus) -> Served {
    let len = hit.meta.body_len;
    Served {
        head: stored_head(&hit.meta, now, Some(len)),
        payload: Payload::File {
            file: hit.file,
            len,
        },
        source: Source::Local,
        cache,
    }
}

fn serve_tail(tail: reef_cache::Tail, source: Source) -> Served {
    let head = stored_head(tail.meta(), SystemTime::now(), None);
    Served {
        head,
        payload: Payload::Stream(body::from_tail(tail)),
        source,
        cache: CacheStatus::Miss,
    }
}

fn pass_through(head: response::Parts, incoming: Incoming, source: Source) -> Served {
    let body = incoming
        .map_err(|e| -> body::BoxError { Box::new(e) })
        .boxed_unsync();
    Served {
        head,
        payload: Payload::Stream(body),
        source,
        cache: CacheStatus::Miss,
    }
}

/// An origin failure that `stale-if-error` may cover: no answer, or a 5xx answer.
fn upstream_failed(fetched: &Result<Served, FetchError>) -> bool {
    match fetched {
        Ok(served) => served.head.status.is_server_error(),
        Err(e) => e.status().is_server_error(),
    }
}

/// RFC 5861 §4: a stale copy may stand in for an error for `stale-if-error` seconds past its
/// freshness, unless the response forbids serving it stale (RFC 9111 §4.2.4).
fn stale_if_error_allows(meta: &Meta, policy_req: &request::Parts) -> bool {
    let stored = stored_head(meta, SystemTime::now(), None);
    if ["must-revalidate", "proxy-revalidate", "no-cache"]
        .iter()
        .any(|d| has_directive(&stored.headers, d))
    {
        return false;
    }
    let window = [&stored.headers, &policy_req.headers]
        .iter()
        .filter_map(|h| directive_secs(h, "stale-if-error"))
        .max();
    let Some(window) = window else { return false };
    // Freshness runs out linearly, so the TTL it had when stored says when it went stale.
    let stale_since = meta.stored_at + meta.policy.time_to_live(meta.stored_at);
    let staleness = SystemTime::now()
        .duration_since(stale_since)
        .unwrap_or_default();
    staleness <= Duration::from_secs(window)
}

/// Cache-Control directives of `headers`, lower-cased, with their values.
fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| match d.split_once('=') {
            Some((k, v)) => (
                k.trim().to_ascii_lowercase(),
                Some(v.trim().trim_matches('"').to_string()),
            ),
            None => (d.trim().to_ascii_lowercase(), None),
        })
}

fn has_directive(headers: &HeaderMap, name: &str) -> bool {
    directives(headers).any(|(k, _)| k == name)
}

fn directive_secs(headers: &HeaderMap, name: &str) -> Option<u64> {
    directives(headers)
        .find(|(k, _)| k == name)?
        .1?
        .parse()
        .ok()
}

/// Copies the upstream body into the store; any error or stall aborts the fill.
async fn pump(mut incoming: Incoming, writer: &mut reef_cache::Writer) -> Result<(), String> {
    loop {
        let frame = match tokio::time::timeout(BODY_IDLE_TIMEOUT, incoming.frame()).await {
            Err(_) => return Err(format!("body stalled for {BODY_IDLE_TIMEOUT:?}")),
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(upstream::error_chain(&e)),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            let data: Bytes = data;
            writer.write(&data).await.map_err(|e| e.to_string())?;
        }
    }
}
