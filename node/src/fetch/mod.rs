//! The fetch pipeline, one function per phase: local cache → coalesced fill from the nearest
//! peer that holds the object → origin; the body is stored while it streams to the client,
//! and the node then announces itself as a holder.

mod announce;
mod error;
mod freshness;
mod headers;
mod holders;
mod serve;
mod source;
pub mod upstream;
mod vary;
mod verify;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header, request, response};
use http_body_util::BodyExt;
use http_cache_semantics::{AfterResponse, BeforeRequest, CachePolicy};
use hyper::body::Incoming;
use reef_cache::{Fill, Meta, Outcome, Store};
use reef_proto::records::{ContentRecord, content_record_key, open};
use reef_proto::{CanonicalUrl, ContentKey};
use tracing::{Instrument, debug, info_span, warn};

use freshness::{
    asked_request, fresh_enough, has_directive, has_validators, new_policy, policy_request,
    policy_view, refresh_headers, stale_if_error_allows, stale_while_revalidate_allows,
    with_validators, without_directive,
};
use serve::{pass_through, serve_hit, serve_tail, stored_body, stored_head};

pub use announce::{AnnounceStats, Announcer};
pub use error::FetchError;
pub use headers::strip_hop_by_hop;
pub use serve::{CacheStatus, Payload, Served};
pub use source::Source;
use upstream::From;
pub use upstream::{OBJECT_PATH, Upstreams};

use crate::body::{self, Body};

/// How many holders to ask the DHT for; more only adds lookup time.
const MAX_HOLDERS: usize = 8;
/// A DHT lookup slower than this costs more than fetching from the origin would.
const HOLDER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// An upstream body that stalls this long is abandoned (and never stored).
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Request headers a peer needs to judge whether its copy is fresh enough for us.
const FRESHNESS_REQUEST_HEADERS: [header::HeaderName; 2] = [header::CACHE_CONTROL, header::PRAGMA];

/// Who we are, for ranking holders (same provider, then same region, first).
#[derive(Debug, Clone)]
pub struct LocalInfo {
    /// Our provider's id (our own key's when we are independent).
    pub provider: reef_proto::records::ProviderId,
    pub region: String,
}

/// What the local cache has for a request.
enum Local {
    Fresh(Box<Served>),
    /// A stored copy that may not be served as it is, kept for `stale-if-error`.
    Stale(Box<reef_cache::Hit>),
    /// The URL's responses vary on these request headers; the variants have keys of their own.
    Index(Vec<String>),
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
    /// Peers that served a body not matching its ContentRecord, per key.
    bad_holders: verify::BadHolders,
    verify_failures: AtomicU64,
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
                bad_holders: verify::BadHolders::default(),
                verify_failures: AtomicU64::new(0),
            }),
        }
    }

    /// Serves a GET or HEAD for `url`; `req` carries the client's headers.
    pub async fn get(&self, url: CanonicalUrl, req: &request::Parts) -> Result<Served, FetchError> {
        let primary = ContentKey::for_url(&url);
        // A follower comes back once when its leader stored nothing it can use: the URL turned
        // out to vary, or the copy the leader kept is too stale for this request. A second
        // surprise (the origin changing `Vary` under us) is not chased. Each pass starts from
        // a fresh copy of the request (a lookup normalises its selecting headers).
        for _ in 0..2 {
            let mut policy_req = policy_request(&url, req);
            match self.get_once(primary, &url, &mut policy_req).await {
                Step::Done(result) => return result,
                Step::LookAgain => continue,
            }
        }
        self.fetch_uncached(&url, &policy_request(&url, req)).await
    }

    async fn get_once(
        &self,
        primary: ContentKey,
        url: &CanonicalUrl,
        policy_req: &mut request::Parts,
    ) -> Step {
        let (target, local) = self.lookup(primary, policy_req).await;
        let stale = match local {
            Local::Fresh(served) => return Step::Done(Ok(*served)),
            Local::Stale(hit) => Some(*hit),
            // `lookup` resolves indexes; one here means the index changed under us.
            Local::Index(_) | Local::Miss => None,
        };
        let stale = match stale {
            Some(hit) if stale_while_revalidate_allows(&hit.meta, policy_req) => {
                debug!(key = %target.key.short(), "serving stale while revalidating in the background");
                self.refresh_in_background(target, url.clone(), policy_req.clone());
                return Step::Done(Ok(serve_hit(hit, SystemTime::now(), CacheStatus::Stale)));
            }
            other => other,
        };
        if has_directive(&policy_req.headers, "only-if-cached") {
            return Step::Done(Err(FetchError::NotCached));
        }
        let fetched = match self.fetch(&target, url, policy_req, stale.as_ref()).await {
            Step::Done(fetched) => fetched,
            Step::LookAgain => return Step::LookAgain,
        };
        Step::Done(match stale {
            Some(hit)
                if upstream_failed(&fetched) && stale_if_error_allows(&hit.meta, policy_req) =>
            {
                debug!(key = %target.key.short(), "origin failed; serving the stale copy (stale-if-error)");
                Ok(serve_hit(hit, SystemTime::now(), CacheStatus::Stale))
            }
            _ => fetched,
        })
    }

    /// RFC 5861 §3: the stale copy has been served; bring the stored one up to date without
    /// anyone waiting. Coalesced with any fill of the key already running.
    fn refresh_in_background(&self, target: Target, url: CanonicalUrl, policy_req: request::Parts) {
        let fetcher = self.clone();
        let span = info_span!("refresh", key = %target.key.short());
        tokio::spawn(
            async move {
                let Fill::Leader(guard) = fetcher.inner.store.fill(target.key) else {
                    return;
                };
                let Ok(Some(stale)) = fetcher.inner.store.get(&target.key).await else {
                    guard.skip();
                    return;
                };
                match fetcher
                    .lead_fill(guard, &target, url, &policy_req, Some(&*stale.meta))
                    .await
                {
                    // The fill streams into the store on its own; nobody reads this copy.
                    Step::Done(Ok(_served)) => debug!("refreshed"),
                    Step::Done(Err(e)) => debug!(error = %e, "background refresh failed"),
                    Step::LookAgain => debug!("the URL now varies; its variants refresh on use"),
                }
            }
            .instrument(span),
        );
    }

    /// Phase: fetch, coalesced with any fetch of the same key already under way here.
    async fn fetch(
        &self,
        target: &Target,
        url: &CanonicalUrl,
        policy_req: &request::Parts,
        stale: Option<&reef_cache::Hit>,
    ) -> Step {
        let key = target.key;
        Step::Done(match self.inner.store.fill(key) {
            Fill::Leader(guard) => {
                // Another fill may have committed between our lookup and taking the lead.
                if let Local::Fresh(served) = self.lookup_local(key, policy_req).await {
                    guard.skip();
                    return Step::Done(Ok(*served));
                }
                // The lead runs as a task of its own: a client that hangs up while we fetch
                // must not fail the followers waiting on the same fill.
                let lead = {
                    let (this, target, url) = (self.clone(), target.clone(), url.clone());
                    let (policy_req, stale) = (policy_req.clone(), stale.map(|h| h.meta.clone()));
                    async move {
                        this.lead_fill(guard, &target, url, &policy_req, stale.as_deref())
                            .await
                    }
                    .in_current_span()
                };
                return match tokio::spawn(lead).await {
                    Ok(step) => step,
                    Err(e) => Step::Done(Err(FetchError::Internal(format!(
                        "the fill's task failed: {e}"
                    )))),
                };
            }
            Fill::Follower(wait) => match wait.wait().await {
                Outcome::Streaming(tail) => Ok(serve_tail(tail, self.fill_source(&key))),
                // The leader stored nothing new: it revalidated our copy, found that the URL
                // varies, or the response must not be stored. Look again before going upstream.
                Outcome::Uncached => {
                    let mut again = policy_req.clone();
                    match self.lookup(target.primary, &mut again).await {
                        (_, Local::Fresh(served)) => Ok(*served),
                        (found, _) if found.key != key => return Step::LookAgain,
                        // The leader kept a copy that is still too stale for this request:
                        // revalidate it ourselves, coalesced with anyone else who must.
                        (_, Local::Stale(_)) => return Step::LookAgain,
                        _ => self.fetch_uncached(url, policy_req).await,
                    }
                }
                Outcome::Failed => Err(FetchError::Coalesced),
            },
        })
    }

    /// Phase: local cache, through the URL's variant index when its responses vary. Selecting
    /// headers of `policy_req` are normalised on the way, as the variant's key is made of them.
    async fn lookup(
        &self,
        primary: ContentKey,
        policy_req: &mut request::Parts,
    ) -> (Target, Local) {
        let names = match self.lookup_local(primary, policy_req).await {
            Local::Index(names) => names,
            local => return (Target::plain(primary), local),
        };
        vary::normalise(&mut policy_req.headers, &names);
        let key = vary::variant_key(&primary, &names, &policy_req.headers);
        let local = match self.lookup_local(key, policy_req).await {
            // Variants are never indexes; one here is damage, so fetch the variant anew.
            Local::Index(_) => Local::Miss,
            local => local,
        };
        let target = Target {
            primary,
            key,
            vary: Some(names),
        };
        (target, local)
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
        if let Some(names) = &hit.meta.vary {
            return Local::Index(names.clone());
        }
        let now = SystemTime::now();
        if !fresh_enough(&hit.meta, policy_req, now) {
            debug!(key = %key.short(), "stored copy is stale");
            return Local::Stale(Box::new(hit));
        }
        Local::Fresh(Box::new(serve_hit(hit, now, CacheStatus::Hit)))
    }

    /// Phase: fill. We are the one fetch for this key; followers read what we store.
    async fn lead_fill(
        &self,
        guard: reef_cache::FillGuard,
        target: &Target,
        url: CanonicalUrl,
        policy_req: &request::Parts,
        stale: Option<&Meta>,
    ) -> Step {
        let key = guard.key();
        let upstream = match stale.filter(|meta| has_validators(meta)) {
            Some(hit) => match self.revalidate(key, &url, policy_req, hit).await {
                Ok(Revalidation::Confirmed(served)) => {
                    guard.skip();
                    return Step::Done(Ok(*served));
                }
                Ok(Revalidation::Replaced(response)) => self.upstream(response, Source::Origin),
                Err(e) => return Step::Done(Err(e)),
            },
            None => match self.fetch_upstream(target, &url, policy_req).await {
                Ok(upstream) => upstream,
                Err(e) => return Step::Done(Err(e)),
            },
        };
        let Upstream {
            mut head,
            body: incoming,
            ..
        } = upstream;
        strip_hop_by_hop(&mut head.headers);
        if upstream.source == Source::Peer && head.status == StatusCode::MULTIPLE_CHOICES {
            self.store_index_from_peer(guard, &url, policy_req, &head)
                .await;
            return Step::LookAgain;
        }
        let received = Received {
            head,
            body: incoming,
            source: upstream.source,
        };
        Step::Done(
            self.store_and_serve(guard, target, url, policy_req, received)
                .await,
        )
    }

    /// A peer told us the URL's responses vary: keep its variant index so that we (and our
    /// followers, who look again) can ask for the variant our request selects.
    async fn store_index_from_peer(
        &self,
        guard: reef_cache::FillGuard,
        url: &CanonicalUrl,
        policy_req: &request::Parts,
        head: &response::Parts,
    ) {
        let vary::Vary::On(names) = vary::of(&head.headers) else {
            guard.skip();
            return;
        };
        let policy = new_policy(policy_req, head, SystemTime::now());
        let mut index = Meta::new(url.to_string(), policy, StatusCode::OK.as_u16(), Vec::new());
        index.vary = Some(names);
        let key = guard.key();
        match guard.put_bodiless(index).await {
            Ok(()) => self.inner.announcer.announce(key, None),
            Err(e) => warn!(key = %key.short(), error = %e, "cannot store the variant index"),
        }
    }

    /// Stores the upstream response under the key it belongs to while it streams to the client.
    async fn store_and_serve(
        &self,
        guard: reef_cache::FillGuard,
        target: &Target,
        url: CanonicalUrl,
        policy_req: &request::Parts,
        received: Received,
    ) -> Result<Served, FetchError> {
        let key = guard.key();
        let Received {
            head,
            body: incoming,
            source,
        } = received;
        let mut policy_req = policy_req.clone();
        let (store_key, vary) = match vary::of(&head.headers) {
            vary::Vary::None => (Some(target.primary), None),
            vary::Vary::On(names) => {
                vary::normalise(&mut policy_req.headers, &names);
                let key = vary::variant_key(&target.primary, &names, &policy_req.headers);
                (Some(key), Some(names))
            }
            vary::Vary::Unstorable => (None, None),
        };
        let stored = store_key.zip(self.storable_policy(&policy_req, &head));
        let Some((store_key, policy)) = stored else {
            guard.skip();
            return Ok(pass_through(head, incoming, source));
        };
        let headers = head
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect();
        // The service (tenant) whose storage quota the body counts against is the URL's host.
        let mut meta = Meta::new(url.to_string(), policy, head.status.as_u16(), headers)
            .with_tenant(url.host());
        meta.variant_of = (store_key != target.primary).then_some(target.primary);
        let guard = if store_key == key {
            guard
        } else {
            match self
                .regroup(guard, target.primary, store_key, vary, &meta)
                .await
            {
                Some(guard) => guard,
                None => return Ok(pass_through(head, incoming, source)),
            }
        };
        // Set before start(): start() wakes the followers, who read it.
        self.set_fill_source(store_key, Some(source));
        let mut writer = match guard.start(meta, content_length(&head.headers)).await {
            Ok(w) => w,
            Err(e) => {
                self.set_fill_source(store_key, None);
                if !matches!(e, reef_cache::Error::OverQuota { .. }) {
                    warn!(key = %store_key.short(), error = %e, "cannot store; serving without caching");
                }
                return Ok(pass_through(head, incoming, source));
            }
        };
        let Some(tail) = self.inner.store.tail(&store_key) else {
            self.set_fill_source(store_key, None);
            return Err(FetchError::Internal(
                "fill vanished before it could be read".into(),
            ));
        };
        let fetcher = self.clone();
        let span = info_span!("fill", key = %store_key.short(), source = %source);
        // The fill runs on its own so that a client hanging up does not abort it for the others.
        tokio::spawn(
            async move {
                let result = pump(incoming, &mut writer).await;
                fetcher.set_fill_source(store_key, None);
                match result {
                    Ok(()) => match writer.commit().await {
                        Ok(meta) => {
                            debug!(bytes = meta.body_len, "stored");
                            // Only the node that fetched from the origin vouches for the bytes.
                            let record = (source == Source::Origin)
                                .then(|| content_record(store_key, &meta));
                            fetcher.inner.announcer.announce(store_key, record);
                        }
                        // Served in full to everyone reading it; the cache logged why.
                        Err(reef_cache::Error::OverQuota { .. } | reef_cache::Error::Purged) => {}
                        Err(e) => warn!(error = %e, "commit failed"),
                    },
                    Err(reason) => warn!(%reason, "upstream body failed; nothing stored"),
                }
            }
            .instrument(span),
        );
        Ok(serve_tail(tail, source))
    }

    /// The response belongs under another key than the one we lead the fill of: the URL turned
    /// out to vary (or to vary differently, or no longer). Takes the fill of `store_key`, then
    /// stores the URL's variant index if it varies, and releases `guard`: its followers look
    /// again and find the index (and follow our fill) or the object. None if someone else is
    /// already filling `store_key`.
    async fn regroup(
        &self,
        guard: reef_cache::FillGuard,
        primary: ContentKey,
        store_key: ContentKey,
        vary: Option<Vec<String>>,
        meta: &Meta,
    ) -> Option<reef_cache::FillGuard> {
        let next = self.inner.store.fill(store_key);
        if let Some(names) = vary {
            let mut index = meta.clone();
            index.vary = Some(names);
            index.variant_of = None;
            // Bodiless, so it takes nothing from the service's quota.
            index.tenant = None;
            let index_guard = if guard.key() == primary {
                Some(guard)
            } else {
                guard.skip();
                match self.inner.store.fill(primary) {
                    Fill::Leader(g) => Some(g),
                    Fill::Follower(_) => None,
                }
            };
            if let Some(g) = index_guard {
                match g.put_bodiless(index).await {
                    // Announced so that other nodes learn from us that the URL varies.
                    Ok(()) => self.inner.announcer.announce(primary, None),
                    Err(e) => {
                        warn!(key = %primary.short(), error = %e, "cannot store the variant index");
                    }
                }
            }
        } else {
            guard.skip();
        }
        match next {
            Fill::Leader(g) => Some(g),
            Fill::Follower(_) => None,
        }
    }

    /// Phase: revalidate. Asks the origin whether our stale copy is still current; a 304
    /// refreshes its stored headers (RFC 9111 §4.3.4) and it is served without refetching.
    async fn revalidate(
        &self,
        key: ContentKey,
        url: &CanonicalUrl,
        policy_req: &request::Parts,
        stale: &Meta,
    ) -> Result<Revalidation, FetchError> {
        let conditional = match stale.policy.before_request(policy_req, SystemTime::now()) {
            BeforeRequest::Stale { request, .. } => request.headers,
            // The crate would reuse the copy (a client's `max-stale`, a clock step) where we
            // must not: ask with our validators ourselves.
            BeforeRequest::Fresh(_) => with_validators(&policy_req.headers, stale),
        };
        let response = self.inner.upstreams.revalidate(url, &conditional).await?;
        if response.status() != StatusCode::NOT_MODIFIED {
            return Ok(Revalidation::Replaced(response));
        }
        let (mut head, _) = response.into_parts();
        strip_hop_by_hop(&mut head.headers);
        let now = SystemTime::now();
        let AfterResponse::NotModified(policy, _) =
            stale
                .policy
                .after_response(policy_req, &policy_view(&head, now), now)
        else {
            // A 304 for validators we do not hold: we may not use it; fetch the object.
            let response = self.origin_get(url, policy_req).await?;
            return Ok(Revalidation::Replaced(response));
        };
        let mut meta = stale.clone();
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
        let body = self.inner.upstreams.received(incoming, From::Origin);
        Ok(pass_through(head, body, Source::Origin))
    }

    /// Phase: upstream. The nearest holder that has a fresh copy, else the origin.
    async fn fetch_upstream(
        &self,
        target: &Target,
        url: &CanonicalUrl,
        policy_req: &request::Parts,
    ) -> Result<Upstream, FetchError> {
        let key = target.key;
        let asks = peer_request_headers(target, &policy_req.headers);
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
        let holders: Vec<_> = holders::rank(holders, local.provider, &local.region)
            .into_iter()
            .filter(|h| !self.inner.bad_holders.is_bad(&key, &h.peer))
            .collect();
        // Looked up only when there is a peer copy to check; None sends us to the origin, as a
        // copy nobody vouches for could be anything.
        let mut expected = None;
        for holder in holders {
            let peer = holder.peer;
            match self
                .inner
                .upstreams
                .peer(&holder.record.http, key, &asks)
                .await
            {
                // The URL varies; the peer tells us on what, so we can ask for our variant.
                Ok(resp)
                    if resp.status() == StatusCode::MULTIPLE_CHOICES && target.vary.is_none() =>
                {
                    debug!(%peer, key = %key.short(), "the URL varies");
                    return Ok(self.upstream(resp, Source::Peer));
                }
                Ok(resp) if resp.status() == StatusCode::OK => {
                    let (head, body) = resp.into_parts();
                    if !self.fresh_for(policy_req, &head) {
                        debug!(%peer, key = %key.short(), "peer copy not fresh enough; skipping");
                        continue;
                    }
                    if expected.is_none() {
                        expected = Some(self.expected_body(key).await);
                    }
                    let Some(Some(want)) = expected else {
                        debug!(key = %key.short(), "no content record; not trusting peer copies");
                        break;
                    };
                    let scratch = self.inner.store.scratch_dir();
                    let body = self.inner.upstreams.received(body, From::Peer);
                    match verify::download(body, want, &scratch).await {
                        Ok(file) => {
                            debug!(%peer, key = %key.short(), "fetched and verified from peer");
                            return Ok(Upstream {
                                head,
                                body: body::from_file(file, want.len),
                                source: Source::Peer,
                            });
                        }
                        Err(e) if e.is_mismatch() => {
                            warn!(%peer, key = %key.short(), error = %e, "peer served a wrong body; not asking it for this again");
                            self.inner.bad_holders.mark(key, peer);
                            self.inner.verify_failures.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => debug!(%peer, error = %e, "peer body failed; trying next"),
                    }
                }
                Ok(resp) => debug!(%peer, status = %resp.status(), "peer does not have it"),
                Err(reason) => debug!(%peer, %reason, "peer fetch failed; trying next"),
            }
        }
        let response = self.origin_get(url, policy_req).await?;
        Ok(self.upstream(response, Source::Origin))
    }

    /// The body length and hash the DHT's ContentRecord for `key` promises, if any.
    async fn expected_body(&self, key: ContentKey) -> Option<verify::Expected> {
        let value = match self
            .inner
            .overlay
            .get_record(content_record_key(&key))
            .await
        {
            Ok(Some(value)) => value,
            Ok(None) => return None,
            Err(e) => {
                debug!(key = %key.short(), error = %e, "content record lookup failed");
                return None;
            }
        };
        // The overlay validated it already; opening it again gives us its fields.
        let record = open::<ContentRecord>(&value, crate::provider::unix_ms()).ok()?;
        let record = record.record();
        (record.key == key).then_some(verify::Expected {
            hash: record.body_hash,
            len: record.body_len,
        })
    }

    /// Peer bodies that did not match their ContentRecord, since start.
    pub fn verify_failures(&self) -> u64 {
        self.inner.verify_failures.load(Ordering::Relaxed)
    }

    fn fresh_for(&self, policy_req: &request::Parts, head: &response::Parts) -> bool {
        let now = SystemTime::now();
        // A client's `no-store` forbids keeping the response, not using a fresh one; the crate
        // would call a response to such a request unstorable and so never fresh.
        let policy_req = &without_directive(policy_req, "no-store");
        let policy = new_policy(policy_req, head, now);
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
        let max = self.inner.store.stats().max_bytes;
        if content_length(&head.headers).is_some_and(|len| len > max) {
            return None;
        }
        let policy = new_policy(policy_req, head, SystemTime::now());
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

    /// RFC 9111 §4.4: after an unsafe method succeeds, the stored copies of its target (every
    /// variant) are out of date. Drop them and stop telling the overlay we hold them.
    pub async fn invalidate(&self, url: &CanonicalUrl) {
        let key = ContentKey::for_url(url);
        match self.inner.store.purge_url(&key, url.as_str()).await {
            Ok(removed) if removed.is_empty() => {}
            Ok(removed) => {
                debug!(key = %key.short(), objects = removed.len(), "invalidated after an unsafe method");
                let overlay = self.inner.overlay.clone();
                tokio::spawn(async move {
                    for key in removed {
                        if let Err(e) = overlay.unprovide(key).await {
                            debug!(key = %key.short(), error = %e, "withdrawing the announcement failed");
                        }
                    }
                });
            }
            Err(e) => warn!(key = %key.short(), error = %e, "invalidation failed"),
        }
    }

    /// The peer endpoint: our stored (or still arriving) copy of `key`, never fetched for the
    /// asker, and only if it is fresh enough for the asker's `request` headers (its freshness
    /// directives and, for a variant, the selecting headers).
    pub async fn serve_object(
        &self,
        key: ContentKey,
        request: &HeaderMap,
    ) -> Result<(response::Parts, Body), &'static str> {
        let now = SystemTime::now();
        match self.inner.store.get(&key).await {
            Ok(Some(hit)) if hit.meta.is_vary_index() => {
                // 300: the URL has several representations; `Vary` names what selects one.
                let mut head = stored_head(&hit.meta, now, Some(0));
                head.status = StatusCode::MULTIPLE_CHOICES;
                let names = hit.meta.vary.as_deref().unwrap_or_default().join(", ");
                head.headers.remove(header::VARY);
                if let Ok(v) = HeaderValue::from_str(&names) {
                    head.headers.insert(header::VARY, v);
                }
                return Ok((head, body::empty()));
            }
            Ok(Some(hit)) => {
                if !fresh_enough(&hit.meta, &asked_request(&hit.meta, request), now) {
                    return Err("the copy here is not fresh enough for this request");
                }
                let head = stored_head(&hit.meta, now, Some(hit.meta.body_len));
                return Ok((head, stored_body(hit.body, hit.meta.body_len)));
            }
            Ok(None) => {}
            Err(e) => warn!(key = %key.short(), error = %e, "cache read failed"),
        }
        let tail = self.inner.store.tail(&key).ok_or("not held by this node")?;
        if !fresh_enough(tail.meta(), &asked_request(tail.meta(), request), now) {
            return Err("the copy here is not fresh enough for this request");
        }
        let head = stored_head(tail.meta(), now, None);
        Ok((head, body::from_tail(tail)))
    }
}

/// Where a request's object is stored: under the URL's key, or for a URL whose responses vary,
/// under the key of the variant the request selects.
#[derive(Debug, Clone)]
struct Target {
    primary: ContentKey,
    key: ContentKey,
    /// The selecting headers, when `key` is a variant's.
    vary: Option<Vec<String>>,
}

impl Target {
    fn plain(primary: ContentKey) -> Target {
        Target {
            primary,
            key: primary,
            vary: None,
        }
    }
}

/// How one pass through the fetch path ended.
// Lives for one return per pass; boxing the common case to shrink the rare one gains nothing.
#[allow(clippy::large_enum_variant)]
enum Step {
    Done(Result<Served, FetchError>),
    /// The URL turned out to vary while we waited on a fill; start over to find our variant.
    LookAgain,
}

/// What we tell a peer about our request: the freshness directives, and the headers that
/// select the variant we want. Nothing else of the client's (cookies, credentials) leaves us.
fn peer_request_headers(target: &Target, request: &HeaderMap) -> HeaderMap {
    let mut asks = HeaderMap::new();
    let selecting = target
        .vary
        .iter()
        .flatten()
        .filter_map(|n| header::HeaderName::from_bytes(n.as_bytes()).ok());
    for name in FRESHNESS_REQUEST_HEADERS.into_iter().chain(selecting) {
        for value in request.get_all(&name) {
            asks.append(name.clone(), value.clone());
        }
    }
    asks
}

enum Revalidation {
    /// The stored copy is current (304); served with refreshed headers.
    Confirmed(Box<Served>),
    /// The origin sent something else: store and serve that instead.
    Replaced(hyper::Response<Incoming>),
}

struct Upstream {
    head: response::Parts,
    body: Body,
    source: Source,
}

impl Fetcher {
    /// An upstream response, its body counted as received from where it came.
    fn upstream(&self, response: hyper::Response<Incoming>, source: Source) -> Upstream {
        let (head, body) = response.into_parts();
        let from = match source {
            Source::Peer => From::Peer,
            Source::Local | Source::Origin => From::Origin,
        };
        Upstream {
            head,
            body: self.inner.upstreams.received(body, from),
            source,
        }
    }
}

/// An upstream response with its hop-by-hop fields removed.
struct Received {
    head: response::Parts,
    body: Body,
    source: Source,
}

/// `Content-Length`, if present and a number.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// An origin failure that `stale-if-error` may cover: no answer, or a 5xx answer.
fn upstream_failed(fetched: &Result<Served, FetchError>) -> bool {
    match fetched {
        Ok(served) => served.head.status.is_server_error(),
        Err(e) => e.status().is_server_error(),
    }
}

/// What a node that fetched `meta`'s body from the origin signs, so peers can verify copies.
fn content_record(key: ContentKey, meta: &Meta) -> ContentRecord {
    let field = |name: &str| {
        meta.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
    };
    ContentRecord {
        key,
        body_hash: meta.body_hash,
        body_len: meta.body_len,
        etag: field("etag"),
        last_modified: field("last-modified"),
    }
}

/// Copies the upstream body into the store; any error or stall aborts the fill.
async fn pump(mut incoming: Body, writer: &mut reef_cache::Writer) -> Result<(), String> {
    loop {
        let frame = match tokio::time::timeout(BODY_IDLE_TIMEOUT, incoming.frame()).await {
            Err(_) => return Err(format!("body stalled for {BODY_IDLE_TIMEOUT:?}")),
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(upstream::error_chain(e.as_ref())),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            let data: Bytes = data;
            writer.write(&data).await.map_err(|e| e.to_string())?;
        }
    }
}
