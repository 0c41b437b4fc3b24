//! The fetch pipeline, one function per phase: local cache → coalesced fill from the nearest
//! peer that holds the object → origin; the body is stored while it streams to the client,
//! and the node then announces itself as a holder.

mod announce;
mod error;
mod freshness;
mod headers;
mod holders;
pub mod home;
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
pub use upstream::{OBJECT_PATH, RECORD_PATH, Upstreams};

use crate::body::{self, Body};
use crate::private::object_auth::OBJECT_AUTH_HEADER;
use crate::private::{PRIVATE_HEADER, Private};

/// How many holders to ask the DHT for; more only adds lookup time.
const MAX_HOLDERS: usize = 8;
/// A DHT lookup slower than this costs more than fetching from the origin would.
const HOLDER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// An upstream body that stalls this long is abandoned (and never stored).
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Request headers a peer needs to judge whether its copy is fresh enough for us.
const FRESHNESS_REQUEST_HEADERS: [header::HeaderName; 2] = [header::CACHE_CONTROL, header::PRAGMA];
/// On a peer's answer from `/_reef/object/`: `complete` (a stored copy, which a ContentRecord
/// vouches for) or `in-progress` (a fill still arriving there; no record exists yet).
pub const FILL_HEADER: &str = "x-reef-fill";
/// On a request to `/_reef/object/`: we are sending our cold miss to the key's home node; the
/// value is the URL, which the home fetches if it holds nothing. A request carrying it is
/// never forwarded again, so a miss takes at most one hop.
pub const HOME_HEADER: &str = "x-reef-home";
/// On a peer's answer with a complete copy: the sealed ContentRecord it knows for the key (hex),
/// so the asker need not look it up in the DHT. Taken only if signed by a node of the
/// asker's own provider; otherwise the DHT's record decides.
pub const RECORD_HEADER: &str = "x-reef-record";
/// How long a home node may take to start its answer (it may be waiting on the origin). Past
/// it we fetch on our own: one extra origin request instead of a client stuck behind a frozen
/// node.
const HOME_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A body streamed from a peer that stalls this long is given up: peers sit near us, and the
/// client already waits on it.
const PEER_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a streamed body ended, how long we wait for the ContentRecord that vouches for it
/// (the holder publishes it as its fill commits, so it is normally there at once).
const RECORD_WAIT: Duration = Duration::from_secs(5);
/// First pause between looks for that record; doubled each time.
const RECORD_RETRY: Duration = Duration::from_millis(10);

/// Who we are, for ranking holders (same provider, then same region, first).
#[derive(Debug, Clone)]
pub struct LocalInfo {
    /// Our provider's id (our own key's when we are independent).
    pub provider: reef_proto::records::ProviderId,
    pub region: String,
    /// Proves our requests for private objects to our provider's other nodes; None when we
    /// are our own provider.
    pub object_auth: Option<crate::private::ObjectAuth>,
}

/// What the edge established about a `/_reef/object/` request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObjectAccess {
    /// The requester proved it is a node of our provider (`private::object_auth`).
    pub authenticated: bool,
    /// It is a home request for a token-protected service's URL.
    pub home_private: bool,
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
    /// Who fetches a cold miss for the whole provider.
    homes: home::Homes,
    /// Keys whose fill here waits on their home node: a home request for one of them is
    /// refused rather than followed, so two nodes whose tables disagree cannot wait on each
    /// other. Bounded by the fills in progress.
    forwarding: Mutex<std::collections::HashSet<ContentKey>>,
    home_counts: HomeCounts,
    /// Which holders are swamped (None: we know nothing of anyone's load).
    load: Option<crate::load::Load>,
}

/// How cold misses went through home nodes, for `/api/status`.
#[derive(Default)]
struct HomeCounts {
    /// Misses sent to their home node.
    forwarded: AtomicU64,
    /// Of those, answered by it (the body came from it).
    served: AtomicU64,
    /// Home requests that failed (refused, timed out, wrong answer): fetched on our own.
    failed: AtomicU64,
    /// Home requests from other nodes that we answered as the home.
    received: AtomicU64,
}

/// [`HomeCounts`] at one moment.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct HomeStats {
    pub enabled: bool,
    pub forwarded: u64,
    pub served: u64,
    pub failed: u64,
    pub received: u64,
}

impl Fetcher {
    pub fn new(
        store: Store,
        overlay: reef_overlay::Client,
        upstreams: Upstreams,
        local: LocalInfo,
        announcer: Announcer,
        homes: home::Homes,
        load: Option<crate::load::Load>,
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
                homes,
                forwarding: Mutex::new(std::collections::HashSet::new()),
                home_counts: HomeCounts::default(),
                load,
            }),
        }
    }

    /// The home node of `url`'s key (ourselves included); None when home routing is off.
    pub fn home_of(&self, key: &ContentKey) -> Option<reef_overlay::PeerId> {
        self.inner.homes.of(key)
    }

    pub fn home_stats(&self) -> HomeStats {
        let c = &self.inner.home_counts;
        HomeStats {
            enabled: self.inner.homes.enabled(),
            forwarded: c.forwarded.load(Ordering::Relaxed),
            served: c.served.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
        }
    }

    /// Serves a GET or HEAD for `url`; `req` carries the client's headers.
    pub async fn get(&self, url: CanonicalUrl, req: &request::Parts) -> Result<Served, FetchError> {
        self.get_routed(url, req, false).await
    }

    /// `get` for a peer that sent us its cold miss as the key's home: never forwarded again.
    async fn get_for_peer(
        &self,
        url: CanonicalUrl,
        req: &request::Parts,
    ) -> Result<Served, FetchError> {
        self.get_routed(url, req, true).await
    }

    async fn get_routed(
        &self,
        url: CanonicalUrl,
        req: &request::Parts,
        forwarded: bool,
    ) -> Result<Served, FetchError> {
        let primary = ContentKey::for_url(&url);
        let private = req.extensions.get::<Private>().is_some();
        // A follower comes back once when its leader stored nothing it can use: the URL turned
        // out to vary, or the copy the leader kept is too stale for this request. A second
        // surprise (the origin changing `Vary` under us) is not chased. Each pass starts from
        // a fresh copy of the request (a lookup normalises its selecting headers).
        for _ in 0..2 {
            let mut policy_req = policy_request(&url, req);
            match self
                .get_once(primary, &url, &mut policy_req, (forwarded, private))
                .await
            {
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
        (forwarded, private): (bool, bool),
    ) -> Step {
        let (mut target, local) = self.lookup(primary, policy_req).await;
        target.forwarded = forwarded;
        target.private = private;
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
            forwarded: false,
            private: false,
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
            self.store_index_from_peer(guard, &url, policy_req, &head, target.private)
                .await;
            return Step::LookAgain;
        }
        let received = Received {
            head,
            body: incoming,
            source: upstream.source,
            announce: upstream.announce,
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
        private: bool,
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
            Ok(()) if private => {}
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
            announce,
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
        let mut headers: Vec<_> = head
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect();
        // Stored with the object, so that whoever reads it later knows it is private
        // (`strip_hop_by_hop` took any upstream's own marker away).
        if target.private {
            headers.push((PRIVATE_HEADER.to_string(), b"token".to_vec()));
        }
        // The service (tenant) whose storage quota the body counts against is the URL's host.
        let mut meta = Meta::new(url.to_string(), policy, head.status.as_u16(), headers)
            .with_tenant(url.host());
        meta.variant_of = (store_key != target.primary).then_some(target.primary);
        let guard = if store_key == key {
            guard
        } else {
            match self.regroup(guard, target, store_key, vary, &meta).await {
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
        // A body from the origin is announced as it starts to arrive: peers may stream it from
        // us (their copy is checked against our ContentRecord once we have committed it). A
        // body from a peer is announced once it checked out and is stored. A private object
        // is never announced, and its record stays here with nothing but the body's hash and
        // length, for our provider's nodes that stream it from us.
        let private = target.private;
        let from_origin = source == Source::Origin;
        let early = from_origin && !private;
        if early {
            self.inner.announcer.announce_early(store_key);
        }
        let validators = if private {
            (None, None)
        } else {
            (
                meta_field(&head.headers, "etag"),
                meta_field(&head.headers, "last-modified"),
            )
        };
        let fetcher = self.clone();
        let span = info_span!("fill", key = %store_key.short(), source = %source);
        // The fill runs on its own so that a client hanging up does not abort it for the others.
        tokio::spawn(
            async move {
                let result = pump(incoming, &mut writer).await;
                fetcher.set_fill_source(store_key, None);
                let announcer = &fetcher.inner.announcer;
                // Only the node that fetched from the origin vouches for the bytes. Sealed
                // before the commit ends the body for its readers, so that peers streaming it
                // from us find the record the moment their stream ends.
                let sealed = match (&result, from_origin, writer.digest()) {
                    (Ok(()), true, Some((body_hash, body_len))) => {
                        let (etag, last_modified) = validators;
                        announcer.seal(&ContentRecord {
                            key: store_key,
                            body_hash,
                            body_len,
                            etag,
                            last_modified,
                        })
                    }
                    _ => None,
                };
                match result {
                    Ok(()) => match writer.commit().await {
                        Ok(meta) => {
                            debug!(bytes = meta.body_len, "stored");
                            if private {
                                // `seal` kept the record for our nodes; nothing goes out.
                            } else if let Some(sealed) = sealed {
                                announcer.vouch(store_key, sealed);
                            } else if early {
                                announcer.withdraw(store_key);
                            } else if announce {
                                announcer.announce(store_key, None);
                            }
                        }
                        // Served in full to everyone reading it; the cache logged why.
                        Err(reef_cache::Error::OverQuota { .. } | reef_cache::Error::Purged) => {
                            if early {
                                announcer.withdraw(store_key);
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "commit failed");
                            if early {
                                announcer.withdraw(store_key);
                            }
                        }
                    },
                    Err(reason) => {
                        warn!(%reason, "upstream body failed; nothing stored");
                        if early {
                            announcer.withdraw(store_key);
                        }
                    }
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
        target: &Target,
        store_key: ContentKey,
        vary: Option<Vec<String>>,
        meta: &Meta,
    ) -> Option<reef_cache::FillGuard> {
        let primary = target.primary;
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
                    Ok(()) if target.private => {}
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

    /// Phase: upstream. The key's home node (for a cold miss), else the nearest holder that
    /// has a fresh copy, else the origin.
    async fn fetch_upstream(
        &self,
        target: &Target,
        url: &CanonicalUrl,
        policy_req: &request::Parts,
    ) -> Result<Upstream, FetchError> {
        let key = target.key;
        let asks = peer_request_headers(target, &policy_req.headers);
        // Looked up only when there is a complete peer copy to check; None sends us to the
        // origin, as a copy nobody vouches for could be anything.
        let mut expected = None;
        // Variants are not routed: the home would have to know our selecting headers.
        if !target.forwarded
            && target.vary.is_none()
            && let Some(upstream) = self
                .via_home(target, url, &asks, policy_req, &mut expected)
                .await
        {
            return Ok(upstream);
        }
        // Private objects are never announced: anyone the DHT names as a holder is not one of
        // the nodes that may have it.
        if target.private {
            let response = self.origin_get(url, policy_req).await?;
            return Ok(self.upstream(response, Source::Origin));
        }
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
        let swamped = self.swamped();
        let holders: Vec<_> = holders::rank(holders, local.provider, &local.region, |peer| {
            swamped.contains(peer)
        })
        .into_iter()
        .filter(|h| !self.inner.bad_holders.is_bad(&key, &h.peer))
        .collect();
        for holder in holders {
            let peer = holder.peer;
            let ours = holder.membership.provider() == local.provider;
            let http = &holder.record.http;
            match self.inner.upstreams.peer(http, key, &asks).await {
                Ok(resp) => {
                    let copy = self
                        .take_copy(peer, http, ours, resp, target, policy_req, &mut expected)
                        .await;
                    match copy {
                        PeerCopy::Use(upstream) => return Ok(*upstream),
                        PeerCopy::Skip => {}
                        PeerCopy::Unvouched => break,
                    }
                }
                Err(reason) => debug!(%peer, %reason, "peer fetch failed; trying next"),
            }
        }
        let response = self.origin_get(url, policy_req).await?;
        Ok(self.upstream(response, Source::Origin))
    }

    /// The nodes whose load reports say more arrives than they can serve.
    fn swamped(&self) -> std::collections::HashSet<reef_overlay::PeerId> {
        let load = self.inner.load.as_ref();
        load.map(|load| load.swamped()).unwrap_or_default()
    }

    /// Sends our cold miss to the key's home node, which fetches it once for its whole
    /// provider and streams it to us while it arrives. None (and on our own) when we are the
    /// home, the home fails or answers something we cannot use.
    async fn via_home(
        &self,
        target: &Target,
        url: &CanonicalUrl,
        asks: &HeaderMap,
        policy_req: &request::Parts,
        expected: &mut Option<Option<verify::Vouched>>,
    ) -> Option<Upstream> {
        let key = target.key;
        let homes = &self.inner.homes;
        let home = homes.of(&key)?;
        if home == homes.me() {
            return None;
        }
        // Its links are saturated: our miss would wait behind its crowd (the holders we try
        // instead skip or demote it too).
        if self.swamped().contains(&home) {
            debug!(%home, key = %key.short(), "home node swamped; fetching on our own");
            return None;
        }
        let counts = &self.inner.home_counts;
        let failed = |why: &dyn std::fmt::Display| {
            debug!(%home, key = %key.short(), %why, "home node failed; fetching on our own");
            homes.failed(home);
            counts.failed.fetch_add(1, Ordering::Relaxed);
            None
        };
        if self.inner.overlay.connection_broken(&home) {
            return failed(&"its connection broke");
        }
        let info = match self.inner.overlay.node_record(home).await {
            Ok(Some(info)) => info,
            Ok(None) => return failed(&"no node record"),
            Err(e) => return failed(&e),
        };
        // The load table said so; the record's certificate must agree.
        if info.membership.provider() != self.inner.local.provider {
            return failed(&"not certified by our provider");
        }
        counts.forwarded.fetch_add(1, Ordering::Relaxed);
        let mut asks = asks.clone();
        let Ok(value) = HeaderValue::from_str(url.as_str()) else {
            return None;
        };
        asks.insert(HOME_HEADER, value);
        if target.private {
            // The home hands private objects only to nodes of its provider that prove it.
            let stamp = self.inner.local.object_auth.as_ref()?.stamp(&key)?;
            asks.insert(OBJECT_AUTH_HEADER, stamp);
        }
        self.set_forwarding(key, true);
        let answer = self
            .inner
            .upstreams
            .peer_within(&info.record.http, key, &asks, HOME_HEADER_TIMEOUT)
            .await;
        self.set_forwarding(key, false);
        let resp = match answer {
            Ok(resp) => resp,
            Err(reason) => return failed(&reason),
        };
        match resp.status() {
            StatusCode::OK | StatusCode::MULTIPLE_CHOICES => {}
            // It is itself waiting on another node for this key (tables disagree for a
            // moment): not a failure of the node.
            StatusCode::CONFLICT => {
                debug!(%home, key = %key.short(), "home is forwarding too; fetching on our own");
                return None;
            }
            status if status.is_server_error() => return failed(&format!("status {status}")),
            status => {
                debug!(%home, key = %key.short(), %status, "home cannot serve it; fetching on our own");
                return None;
            }
        }
        let http = info.record.http.clone();
        match self
            .take_copy(home, &http, true, resp, target, policy_req, expected)
            .await
        {
            PeerCopy::Use(mut upstream) => {
                counts.served.fetch_add(1, Ordering::Relaxed);
                upstream.announce = false;
                Some(*upstream)
            }
            PeerCopy::Skip | PeerCopy::Unvouched => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// What to make of a peer's answer to `/_reef/object/<key>`. `ours`: the peer is
    /// certified by our own provider, so a copy still arriving there may be streamed to us
    /// before it is checked (at its end; see `verify::streaming`). A complete copy, from
    /// anyone, is downloaded and checked before we use it.
    #[allow(clippy::too_many_arguments)]
    async fn take_copy(
        &self,
        peer: reef_overlay::PeerId,
        http: &str,
        ours: bool,
        resp: hyper::Response<Incoming>,
        target: &Target,
        policy_req: &request::Parts,
        expected: &mut Option<Option<verify::Vouched>>,
    ) -> PeerCopy {
        let key = target.key;
        // The URL varies; the peer tells us on what, so we can ask for our variant.
        if resp.status() == StatusCode::MULTIPLE_CHOICES && target.vary.is_none() {
            debug!(%peer, key = %key.short(), "the URL varies");
            return PeerCopy::Use(Box::new(self.upstream(resp, Source::Peer)));
        }
        if resp.status() != StatusCode::OK {
            debug!(%peer, status = %resp.status(), "peer does not have it");
            return PeerCopy::Skip;
        }
        let (mut head, body) = resp.into_parts();
        let in_progress = head
            .headers
            .remove(FILL_HEADER)
            .is_some_and(|v| v.as_bytes() == b"in-progress");
        if !self.fresh_for(policy_req, &head) {
            debug!(%peer, key = %key.short(), "peer copy not fresh enough; skipping");
            return PeerCopy::Skip;
        }
        if in_progress {
            if !ours {
                debug!(%peer, key = %key.short(), "another provider's fill in progress; not streaming unverified bytes from it");
                return PeerCopy::Skip;
            }
            let body = self.inner.upstreams.received(body, From::Peer);
            let (this, http) = (self.clone(), http.to_string());
            let check = move |got| async move { this.check_streamed(key, peer, &http, got).await };
            let max = self.inner.store.stats().max_bytes;
            let body = verify::streaming(body, max, PEER_BODY_IDLE_TIMEOUT, check);
            debug!(%peer, key = %key.short(), "streaming a fill in progress from a node of our provider");
            return PeerCopy::Use(Box::new(Upstream {
                head,
                body,
                source: Source::Peer,
                announce: true,
            }));
        }
        // The record the peer sends along, if a node of ours signed it; else the DHT's.
        let offered = head.headers.remove(RECORD_HEADER);
        let mut vouched = match offered.and_then(|v| crate::hex::decode(v.as_bytes())) {
            Some(sealed) => self.vouched_by_ours(key, sealed).await,
            None => None,
        };
        if vouched.is_none() {
            if expected.is_none() {
                *expected = Some(self.expected_body(key).await);
            }
            vouched = expected.clone().flatten();
        }
        let Some(vouched) = vouched else {
            debug!(key = %key.short(), "no content record; not trusting peer copies");
            return PeerCopy::Unvouched;
        };
        let want = vouched.expected;
        let scratch = self.inner.store.scratch_dir();
        let body = self.inner.upstreams.received(body, From::Peer);
        match verify::download(body, want, &scratch).await {
            Ok(file) => {
                debug!(%peer, key = %key.short(), "fetched and verified from peer");
                self.vouch_for_verified(key, vouched.sealed);
                PeerCopy::Use(Box::new(Upstream {
                    head,
                    body: body::from_file(file, want.len),
                    source: Source::Peer,
                    announce: true,
                }))
            }
            Err(e) if e.is_mismatch() => {
                warn!(%peer, key = %key.short(), error = %e, "peer served a wrong body; not asking it for this again");
                self.mark_bad(key, peer);
                PeerCopy::Skip
            }
            Err(e) => {
                debug!(%peer, error = %e, "peer body failed; trying next");
                PeerCopy::Skip
            }
        }
    }

    fn mark_bad(&self, key: ContentKey, peer: reef_overlay::PeerId) {
        self.inner.bad_holders.mark(key, peer);
        self.inner.verify_failures.fetch_add(1, Ordering::Relaxed);
        self.inner.homes.failed(peer);
    }

    /// The end of a body streamed from a node of our provider: it must match a ContentRecord
    /// signed by a node of our provider. The node we streamed from sealed it before our stream
    /// ended (if it fetched from the origin) and hands it out at `/_reef/record/`; we ask it,
    /// again after short pauses, and meanwhile the DHT, for up to [`RECORD_WAIT`].
    async fn check_streamed(
        &self,
        key: ContentKey,
        peer: reef_overlay::PeerId,
        http: &str,
        got: verify::Expected,
    ) -> Result<(), verify::VerifyError> {
        let deadline = tokio::time::Instant::now() + RECORD_WAIT;
        let from_peer = async {
            let mut pause = RECORD_RETRY;
            loop {
                if let Some(sealed) = self.inner.upstreams.peer_record(http, key).await
                    && let Some(vouched) = self.vouched_by_ours(key, sealed).await
                {
                    return vouched;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RECORD_WAIT / 4);
            }
        };
        let from_dht = async {
            // The holder's own answer is quicker when it has one; the DHT is the fallback.
            tokio::time::sleep(RECORD_RETRY * 5).await;
            match self.expected_body(key).await {
                Some(found) => match self.vouched_by_ours(key, found.sealed).await {
                    Some(vouched) => vouched,
                    None => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        let found = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                vouched = from_peer => vouched,
                vouched = from_dht => vouched,
            }
        })
        .await;
        let Ok(vouched) = found else {
            debug!(%peer, key = %key.short(), "no content record from our provider arrived in time");
            return Err(verify::VerifyError::NoRecord);
        };
        verify::matches(got, vouched.expected).inspect_err(|e| {
            warn!(%peer, key = %key.short(), error = %e, "a streamed body does not match its content record; nothing stored");
            self.mark_bad(key, peer);
        })?;
        self.inner.announcer.remember(key, vouched.sealed);
        Ok(())
    }

    /// What a sealed ContentRecord for `key` promises, if it opens and its signer is a node
    /// certified by our own provider.
    async fn vouched_by_ours(&self, key: ContentKey, sealed: Vec<u8>) -> Option<verify::Vouched> {
        let opened = open::<ContentRecord>(&sealed, crate::provider::unix_ms()).ok()?;
        let record = opened.record();
        if record.key != key {
            return None;
        }
        let signer =
            reef_overlay::PeerId::from_bytes(&reef_proto::records::peer_id_bytes(opened.signer()))
                .ok()?;
        let ours = if signer == self.inner.overlay.local_peer_id() {
            true
        } else {
            match self.inner.overlay.node_record(signer).await {
                Ok(Some(info)) => info.membership.provider() == self.inner.local.provider,
                _ => false,
            }
        };
        let expected = verify::Expected {
            hash: record.body_hash,
            len: record.body_len,
        };
        ours.then_some(verify::Vouched { expected, sealed })
    }

    /// The body length and hash the DHT's ContentRecord for `key` promises, if any.
    async fn expected_body(&self, key: ContentKey) -> Option<verify::Vouched> {
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
        let expected = verify::Expected {
            hash: record.body_hash,
            len: record.body_len,
        };
        (record.key == key).then_some(verify::Vouched {
            expected,
            sealed: value,
        })
    }

    /// A body we fetched whole from a peer checked out against `sealed`: we vouch for it
    /// ourselves. Nodes of our provider that stream it from our fill accept only a record a
    /// node of their own provider signed (`check_streamed`), and `sealed` may be another
    /// provider's (a home node fetching from another provider's holder). Kept for
    /// `/_reef/record/`, not published: the DHT already has a record of the same body.
    fn vouch_for_verified(&self, key: ContentKey, sealed: Vec<u8>) {
        let now = crate::provider::unix_ms();
        let ours = open::<ContentRecord>(&sealed, now)
            .ok()
            .and_then(|opened| self.inner.announcer.seal(opened.record()));
        if ours.is_none() {
            self.inner.announcer.remember(key, sealed);
        }
    }

    /// The sealed ContentRecord we made for `key` lately (`/_reef/record/<key>`), for peers
    /// that streamed the body from us while it arrived.
    pub fn sealed_record(&self, key: &ContentKey) -> Option<Vec<u8>> {
        self.inner.announcer.sealed(key)
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

    fn set_forwarding(&self, key: ContentKey, on: bool) {
        let mut forwarding = self
            .inner
            .forwarding
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if on {
            forwarding.insert(key);
        } else {
            forwarding.remove(&key);
        }
    }

    fn is_forwarding(&self, key: &ContentKey) -> bool {
        let forwarding = self
            .inner
            .forwarding
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        forwarding.contains(key)
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

    /// The peer endpoint: our stored (or still arriving) copy of `key`, and only if it is
    /// fresh enough for the asker's `request` headers (its freshness directives and, for a
    /// variant, the selecting headers). Marked with [`FILL_HEADER`]: `complete` or
    /// `in-progress`. We fetch nothing for the asker unless it names us as the key's home
    /// ([`HOME_HEADER`] with the URL): then we serve the key as we would a client, from a
    /// peer or the origin, once for everyone who asks.
    ///
    /// A private object (stored with [`PRIVATE_HEADER`], or a home request for a private
    /// service's URL) goes only to a requester `access` says is a node of our provider: 403
    /// for anyone else.
    pub async fn serve_object(
        &self,
        key: ContentKey,
        request: &HeaderMap,
        access: ObjectAccess,
    ) -> Result<(response::Parts, Body), (StatusCode, String)> {
        let now = SystemTime::now();
        let refused = || {
            (
                StatusCode::FORBIDDEN,
                "403 forbidden: a private object goes only to nodes of this node's provider"
                    .to_string(),
            )
        };
        let private = |meta: &Meta| {
            meta.headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case(PRIVATE_HEADER))
        };
        let stale = || {
            (
                StatusCode::NOT_FOUND,
                "the copy here is not fresh enough for this request".to_string(),
            )
        };
        match self.inner.store.get(&key).await {
            // Even a variant index: it would tell a stranger on what the object varies.
            Ok(Some(hit)) if private(&hit.meta) && !access.authenticated => return Err(refused()),
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
                    return Err(stale());
                }
                let mut head = stored_head(&hit.meta, now, Some(hit.meta.body_len));
                self.mark_complete(&key, &mut head.headers);
                return Ok((head, stored_body(hit.body, hit.meta.body_len)));
            }
            Ok(None) => {}
            Err(e) => warn!(key = %key.short(), error = %e, "cache read failed"),
        }
        if let Some(tail) = self.inner.store.tail(&key) {
            if private(tail.meta()) && !access.authenticated {
                return Err(refused());
            }
            if !fresh_enough(tail.meta(), &asked_request(tail.meta(), request), now) {
                return Err(stale());
            }
            let mut head = stored_head(tail.meta(), now, None);
            head.headers
                .insert(FILL_HEADER, HeaderValue::from_static("in-progress"));
            return Ok((head, body::from_tail(tail)));
        }
        match request.get(HOME_HEADER).map(|v| v.to_str()) {
            None => Err((StatusCode::NOT_FOUND, "not held by this node".into())),
            Some(Ok(_)) if access.home_private && !access.authenticated => Err(refused()),
            Some(Ok(url)) => {
                self.serve_as_home(key, url, request, access.home_private)
                    .await
            }
            Some(Err(_)) => Err((StatusCode::BAD_REQUEST, "the URL is not text".into())),
        }
    }

    /// A peer sent us its cold miss for `key` as the key's home: fetch it (coalesced with
    /// everyone else's) and stream it back while it arrives.
    async fn serve_as_home(
        &self,
        key: ContentKey,
        url: &str,
        request: &HeaderMap,
        private: bool,
    ) -> Result<(response::Parts, Body), (StatusCode, String)> {
        if !self.inner.homes.enabled() {
            return Err((StatusCode::NOT_FOUND, "not held by this node".into()));
        }
        let url = CanonicalUrl::parse(url).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        if ContentKey::for_url(&url) != key {
            return Err((
                StatusCode::BAD_REQUEST,
                "the URL does not have this content key".into(),
            ));
        }
        // Our own fill of it waits on another node, which may be waiting on us.
        if self.is_forwarding(&key) {
            return Err((
                StatusCode::CONFLICT,
                "this node is waiting on another node for it".into(),
            ));
        }
        self.inner
            .home_counts
            .received
            .fetch_add(1, Ordering::Relaxed);
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.uri = url.to_uri();
        parts.headers = request.clone();
        parts.headers.remove(HOME_HEADER);
        parts.headers.remove(OBJECT_AUTH_HEADER);
        if private {
            parts.extensions.insert(Private);
        }
        let served = self
            .get_for_peer(url, &parts)
            .await
            .map_err(|e| (e.status(), e.to_string()))?;
        let Served {
            mut head, payload, ..
        } = served;
        if head.status != StatusCode::OK {
            return Err((
                StatusCode::NOT_FOUND,
                format!("upstream answered {}", head.status),
            ));
        }
        // The response varies: which variant we hold depends on headers the asker did not
        // send. Tell it on what, as for a stored variant index; it asks for its own variant.
        if let vary::Vary::On(names) = vary::of(&head.headers) {
            head.status = StatusCode::MULTIPLE_CHOICES;
            head.headers.remove(header::CONTENT_LENGTH);
            if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
                head.headers.insert(header::VARY, v);
            }
            return Ok((head, body::empty()));
        }
        let stored = match payload {
            Payload::Memory(_) | Payload::File { .. } => true,
            Payload::Stream(_) => self.stored_or_filling(&key).await,
        };
        let complete = |head: &mut response::Parts, len: u64| {
            head.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            self.mark_complete(&key, &mut head.headers);
        };
        let body = match payload {
            Payload::Memory(bytes) => {
                complete(&mut head, bytes.len() as u64);
                body::full(bytes)
            }
            Payload::File { file, len } => {
                complete(&mut head, len);
                body::from_stored_file(file, 0, len)
            }
            // A fill of ours that the asker may stream (and check at its end); a response we
            // do not store would never be vouched for, so the asker fetches it on its own.
            Payload::Stream(stream) if stored => {
                head.headers
                    .insert(FILL_HEADER, HeaderValue::from_static("in-progress"));
                stream
            }
            Payload::Stream(_) => {
                return Err((StatusCode::NOT_FOUND, "not stored by this node".into()));
            }
        };
        Ok((head, body))
    }

    /// Labels an answer with a complete copy, with the record that vouches for it if we know
    /// one.
    fn mark_complete(&self, key: &ContentKey, headers: &mut HeaderMap) {
        headers.insert(FILL_HEADER, HeaderValue::from_static("complete"));
        if let Some(sealed) = self.inner.announcer.sealed(key)
            && let Ok(value) = HeaderValue::from_str(&crate::hex::encode(&sealed))
        {
            headers.insert(RECORD_HEADER, value);
        }
    }

    /// Of `keys` (what the store holds at start), those that may be announced again: all but
    /// private objects, which are never announced.
    pub async fn announceable(&self, keys: Vec<ContentKey>) -> Vec<ContentKey> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Ok(Some(meta)) = self.inner.store.peek(&key).await
                && meta
                    .headers
                    .iter()
                    .all(|(name, _)| !name.eq_ignore_ascii_case(PRIVATE_HEADER))
            {
                out.push(key);
            }
        }
        out
    }

    async fn stored_or_filling(&self, key: &ContentKey) -> bool {
        self.inner.store.tail(key).is_some()
            || matches!(self.inner.store.get(key).await, Ok(Some(_)))
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
    /// A peer sent us this miss as the key's home: we must not send it on.
    forwarded: bool,
    /// A token-protected service's object: stored marked, never announced.
    private: bool,
}

impl Target {
    fn plain(primary: ContentKey) -> Target {
        Target {
            primary,
            key: primary,
            vary: None,
            forwarded: false,
            private: false,
        }
    }
}

/// What a peer's answer gave us.
enum PeerCopy {
    Use(Box<Upstream>),
    /// Nothing usable from this peer; try the next.
    Skip,
    /// A complete copy, but no ContentRecord vouches for the key: no peer copy can be checked.
    Unvouched,
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
    /// Announce the copy once stored. Not for one from our home node: the home announced
    /// it, and every node of our provider asks the home anyway.
    announce: bool,
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
            announce: true,
        }
    }
}

/// An upstream response with its hop-by-hop fields removed.
struct Received {
    head: response::Parts,
    body: Body,
    source: Source,
    announce: bool,
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

/// A response header's value as text (for the validators a ContentRecord carries).
fn meta_field(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_owned)
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
