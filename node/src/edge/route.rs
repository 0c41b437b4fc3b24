use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use reef_proto::records::ProviderId;
use reef_proto::{CanonicalUrl, ContentKey, UrlError};
use tracing::{Instrument, debug, debug_span};

use super::respond::respond;
use crate::body::{self, Body};
use crate::fetch::upstream::From;
use crate::fetch::{
    CacheStatus, FetchError, Fetcher, HOME_HEADER, OBJECT_PATH, ObjectAccess, Payload, RECORD_PATH,
    Served, Source, Upstreams, content_length, strip_hop_by_hop,
};
use crate::limits::{Admission, Limits, Throttled, request_body};
use crate::load::Meter;
use crate::metrics::Requests;
use crate::peering::health::served_properly;
use crate::peering::redirect::{Mode, Offload, SERVICE_PATH, parse_service_path};
use crate::peering::{Arrangements, Redirector, Usage};
use crate::private::gate::{self, TokenCheck};
use crate::private::{ObjectAuth, PRIVATE_HEADER, Private, Rejections};
use crate::services::{Service, Services};

/// Request header budget (names, values and request target); beyond it → 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Names the arrangement under which a peer provider's node served a relayed answer.
pub const PEERING_HEADER: &str = "x-reef-peering";
/// Marks a primary node's health probe of a peer node (see `peering::health`).
pub const PROBE_HEADER: &str = "x-reef-probe";
/// Beyond the origin timeout, what a relayed request may take for the peer node's own hop.
const RELAY_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);
/// Relayed bodies up to this size are read whole before the client gets a byte: the memory
/// of a few hundred small objects in flight, for a fallback when the peer dies mid-body.
const RELAY_READ_WHOLE: u64 = 256 * 1024;

pub struct Edge {
    fetcher: Fetcher,
    upstreams: Upstreams,
    via: HeaderValue,
    next_request_id: AtomicU64,
    /// Load counters: requests, egress bytes, cache lookups (see `load::meter` for what counts).
    meter: Arc<Meter>,
    /// `reef_requests_total{source,status}`.
    requests: Arc<Requests>,
    gate: Gate,
    /// Quotas and abuse control (see `limits`).
    limits: Arc<Limits>,
}

/// What decides which services this node serves, for whom, and which it sends elsewhere.
pub struct Gate {
    pub services: Arc<Services>,
    /// This node's provider: whose services it serves without an arrangement.
    pub provider: ProviderId,
    pub arrangements: Arc<Arrangements>,
    pub redirector: Redirector,
    /// `reef_token_rejections_total{reason}`.
    pub rejections: Arc<Rejections>,
    /// Proves requests for private objects come from our provider's nodes; None for a node
    /// that is its own provider (it hands private objects to nobody).
    pub object_auth: Option<ObjectAuth>,
}

impl Edge {
    /// `node_name` goes into `Via` (e.g. the short peer id).
    pub fn new(
        fetcher: Fetcher,
        upstreams: Upstreams,
        node_name: &str,
        meter: Arc<Meter>,
        requests: Arc<Requests>,
        gate: Gate,
        limits: Arc<Limits>,
    ) -> Self {
        let via = HeaderValue::from_str(&format!("1.1 reef-{node_name}"))
            .unwrap_or(HeaderValue::from_static("1.1 reef"));
        Self {
            fetcher,
            upstreams,
            via,
            next_request_id: AtomicU64::new(1),
            meter,
            requests,
            gate,
            limits,
        }
    }

    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    pub async fn handle(&self, req: Request<Incoming>, client: SocketAddr) -> Response<Body> {
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        // At debug level: with the default filter (info) a disabled span is a no-op, while an
        // enabled one formats its fields and takes a slot in the subscriber on every request.
        let span = debug_span!("request", request_id = id, method = %req.method(), %client);
        async move {
            let started = Instant::now();
            self.meter.request();
            // A client's GET or HEAD, by proxy or service name, goes through the cache when it
            // is answered with an `X-Reef-Source` (peers' object requests never are).
            let lookup = req.method() == Method::GET || req.method() == Method::HEAD;
            // A clone shares the URI's bytes; it is only formatted if the access log is on.
            let target = req.uri().clone();
            let from_node = from_node(&req);
            let admission = match from_node {
                true => Admission::Serve,
                false => self.limits.admit(client.ip(), started),
            };
            let mut resp = match admission {
                Admission::Refused(throttled) => too_many(&throttled),
                Admission::CacheOnly(throttled) => {
                    self.route(req, client.ip(), Some(throttled)).await
                }
                Admission::Serve => self.route(req, client.ip(), None).await,
            };
            let headers = resp.headers_mut();
            headers.append(header::VIA, self.via.clone());
            headers
                .entry(header::AGE)
                .or_insert(HeaderValue::from_static("0"));
            headers.insert("x-request-id", HeaderValue::from(id));
            debug!(
                target: "reef::access",
                target = %gate::Redacted(&target),
                status = resp.status().as_u16(),
                source = ?resp.headers().get("x-reef-source"),
                ms = started.elapsed().as_secs_f64() * 1e3,
                "served"
            );
            let source = resp
                .headers()
                .get("x-reef-source")
                .map(HeaderValue::as_bytes);
            // A relayed answer is another provider's node's; its source is not our cache.
            let relayed = resp.headers().contains_key(PEERING_HEADER);
            let label = if relayed { Some(&b"relay"[..]) } else { source };
            self.requests.served(label, resp.status().as_u16());
            if lookup
                && !relayed
                && let Some(source) = source
            {
                self.meter
                    .lookup(source == Source::Local.as_str().as_bytes());
                if !from_node {
                    // Not from our disk: with home routing a miss that the key's home fetched
                    // from the origin arrives as `peer`, so that counts too.
                    let miss = source != Source::Local.as_str().as_bytes();
                    self.limits
                        .observe_lookup(client.ip(), miss, Instant::now());
                }
            }
            resp.map(|body| self.meter.count_egress(body))
        }
        .instrument(span)
        .await
    }

    /// Every request's answer; `cache_only` (a sweeping client) refuses what would go upstream.
    async fn route(
        &self,
        req: Request<Incoming>,
        client: std::net::IpAddr,
        cache_only: Option<Throttled>,
    ) -> Response<Body> {
        match self.resolve_and_serve(req, client, cache_only).await {
            Ok(resp) => resp,
            Err(e) => error_response(&e),
        }
    }

    /// Phase: resolve what is asked for, then hand it to the right path.
    async fn resolve_and_serve(
        &self,
        req: Request<Incoming>,
        client: std::net::IpAddr,
        cache_only: Option<Throttled>,
    ) -> Result<Response<Body>, FetchError> {
        let header_bytes: usize = uri_len(req.uri())
            + req
                .headers()
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if header_bytes > MAX_HEADER_BYTES {
            self.limits.rejected("headers_too_large");
            return Ok(text_response(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                &format!(
                    "request headers are {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}"
                ),
            ));
        }
        // Phase: framing. A GET or HEAD has no body to send on, and one that declares a body
        // is the shape of request smuggling (a front end and a back end that disagree on where
        // the next request starts): refused, before anything else reads it.
        if (req.method() == Method::GET || req.method() == Method::HEAD) && declares_body(&req) {
            self.limits.rejected("malformed");
            return Ok(text_response(
                StatusCode::BAD_REQUEST,
                "a GET or HEAD request must not carry a body (Content-Length or Transfer-Encoding)",
            ));
        }
        let mut usage = None;
        let checked = if req.uri().scheme().is_none() {
            if let Some(key) = req.uri().path().strip_prefix(OBJECT_PATH) {
                return Ok(self.serve_object(key, req.headers()).await);
            }
            if let Some(key) = req.uri().path().strip_prefix(RECORD_PATH) {
                return Ok(self.serve_record(key));
            }
            let asked = self.service_of(&req).await?;
            usage = self.authorise(&asked.service)?;
            // A primary's health probe is its own traffic, not its customers': served, not
            // billed (a HEAD carries no body to bill anyway).
            let probe = req.method() == Method::HEAD && req.headers().contains_key(PROBE_HEADER);
            if probe {
                usage = None;
                // The probe carries no token: that we would serve the service is the answer.
                if asked.service.access.is_private() {
                    return Ok(probe_answer());
                }
            }
            let url = match asked.service.url(&asked.target) {
                Ok(url) => url,
                Err(e) => return self.bad_url(e),
            };
            let checked = match self.check_token(&asked.service, url, &req, client) {
                Ok(checked) => checked,
                Err(refused) => return Ok(*refused),
            };
            // Phase: offload. Only our own services' reads; a request that reached us through
            // a redirect (the path form) stays here.
            let offloadable = usage.is_none()
                && !asked.redirected
                && (req.method() == Method::GET || req.method() == Method::HEAD)
                && self.may_offload(&checked);
            if offloadable && let Some(resp) = self.offload(&asked, &checked, &req, false).await {
                return Ok(resp);
            }
            // Phase: ceiling. Past what this node may serve, the request goes to a peer
            // provider whatever the part, or is refused: a queue beyond capacity would slow
            // every answer, not only the extra ones.
            if !probe && !self.limits.within_ceiling(Instant::now()) {
                if offloadable && let Some(resp) = self.offload(&asked, &checked, &req, true).await
                {
                    return Ok(resp);
                }
                return Ok(self.shed());
            }
            checked
        } else {
            let url = match CanonicalUrl::from_uri(req.uri()) {
                Ok(url) => url,
                Err(e) => return self.bad_url(e),
            };
            // A proxy request for a service's URL is that service's request. Only services
            // already known are checked: a DHT lookup for every host proxied would slow down
            // plain proxying. (A stored private object says so itself; see below.)
            if !self.limits.within_ceiling(Instant::now()) {
                return Ok(self.shed());
            }
            match self.gate.services.cached(url.host()) {
                Some(service) => {
                    usage = self.authorise(&service)?;
                    match self.check_token(&service, url, &req, client) {
                        Ok(checked) => checked,
                        Err(refused) => return Ok(*refused),
                    }
                }
                None => TokenCheck::public(url),
            }
        };
        let TokenCheck { url, private, .. } = checked;
        // Phase: quota. Our own provider's services (and proxied hosts) with a bandwidth quota.
        let charge = match usage {
            Some(_) => None,
            None => match self.limits.admit_service(url.host(), Instant::now()) {
                Ok(charge) => charge,
                Err(throttled) => return Ok(too_many(&throttled)),
            },
        };
        let (mut parts, body) = req.into_parts();
        if private {
            // The origin did not issue the token; and with `Authorization` the response
            // could not be stored for everyone (RFC 9111 §3.5).
            parts.headers.remove(header::AUTHORIZATION);
            parts.extensions.insert(Private);
        }
        let resp = match parts.method {
            Method::GET | Method::HEAD => {
                if cache_only.is_some() {
                    parts.headers.append(
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("only-if-cached"),
                    );
                }
                let served = match (self.fetcher.get(url, &parts).await, cache_only) {
                    (Err(FetchError::NotCached), Some(throttled)) => {
                        return Ok(too_many(&self.limits.refuse_miss(throttled)));
                    }
                    (served, _) => served?,
                };
                // A stored copy marked private, asked for without a token: the service was
                // not known to be private here just now (e.g. a forward-proxy request after a
                // restart). The body is dropped unread.
                if !private && served.head.headers.contains_key(PRIVATE_HEADER) {
                    return Ok(self.refuse(
                        "missing",
                        "403 forbidden: this object is token-protected; send a token",
                    ));
                }
                let mut resp = respond(served, &parts).await;
                if private {
                    gate::keep_private(resp.headers_mut());
                }
                resp
            }
            Method::CONNECT => return Err(FetchError::Method("CONNECT".into())),
            ref method => {
                if let Some(throttled) = cache_only {
                    return Ok(too_many(&self.limits.refuse_miss(throttled)));
                }
                // Unsafe and other methods go to the origin untouched and are never cached.
                let (body, watch) = self.limits.guard_body(body);
                let body = body.boxed_unsync();
                let sent = self
                    .upstreams
                    .origin(method.clone(), &url, &parts.headers, body)
                    .await;
                let resp = match (sent, watch.failure()) {
                    (Ok(resp), _) => resp,
                    (Err(_), Some(failure)) => return Ok(Self::body_failed(failure)),
                    (Err(e), None) => return Err(e),
                };
                let (mut head, incoming) = resp.into_parts();
                strip_hop_by_hop(&mut head.headers);
                let succeeded = head.status.is_success() || head.status.is_redirection();
                if succeeded && !method.is_safe() {
                    self.fetcher.invalidate(&url).await;
                }
                let body = self.upstreams.received(incoming, From::Origin);
                let served = Served {
                    head,
                    payload: Payload::Stream(body),
                    source: Source::Origin,
                    cache: CacheStatus::Miss,
                };
                respond(served, &parts).await
            }
        };
        // Phase: account what is served for another provider, and what a service's bandwidth
        // quota pays for, byte by byte as it goes out.
        Ok(match (usage, charge) {
            (Some(usage), _) => resp.map(|body| usage.count(body)),
            (None, Some(charge)) => resp.map(|body| charge.body(body)),
            (None, None) => resp,
        })
    }

    /// A URL we cannot take: too long is 414, anything else 400.
    fn bad_url(&self, e: UrlError) -> Result<Response<Body>, FetchError> {
        match e {
            UrlError::TooLong => {
                self.limits.rejected("uri_too_long");
                Ok(text_response(StatusCode::URI_TOO_LONG, &e.to_string()))
            }
            e => Err(FetchError::BadRequest(e.to_string())),
        }
    }

    /// The client's request body failed before the origin answered: its fault, not the
    /// origin's. The connection is closed after the answer (the body was not read whole).
    fn body_failed(failure: request_body::Failure) -> Response<Body> {
        let (status, why) = match failure {
            request_body::Failure::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            ),
            request_body::Failure::Malformed => (
                StatusCode::BAD_REQUEST,
                "the request body is malformed (a bad chunk or a short body)",
            ),
        };
        let mut resp = text_response(status, why);
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }

    /// Phase: the service an origin-form request names: in its `Host`, or in the path when a
    /// redirect addressed it to this node (`/_reef/s/HOST/PATH`).
    async fn service_of(&self, req: &Request<Incoming>) -> Result<ServiceRequest, FetchError> {
        let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let (host, target, redirected) = match parse_service_path(path_and_query) {
            Some((host, target)) => (Some(host), target, true),
            None => {
                let host = req
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok());
                (host, path_and_query.to_string(), false)
            }
        };
        let host = host
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .map(|a| a.host().to_ascii_lowercase())
            .filter(|h| h.parse::<std::net::IpAddr>().is_err() && h != "localhost");
        let Some(host) = host else {
            return Err(FetchError::BadRequest(
                "send a service hostname in Host, or an absolute http:// URL (forward-proxy form), e.g. curl -x http://NODE http://origin/path"
                    .into(),
            ));
        };
        let service = self
            .gate
            .services
            .resolve(&host)
            .await
            .ok_or(FetchError::UnknownService(host))?;
        Ok(ServiceRequest {
            service,
            target,
            redirected,
        })
    }

    /// The answer from a peer provider's node, when the redirector sends `req` there (see
    /// `Redirector::offload` for `over_ceiling`).
    async fn offload(
        &self,
        asked: &ServiceRequest,
        checked: &TokenCheck,
        req: &Request<Incoming>,
        over_ceiling: bool,
    ) -> Option<Response<Body>> {
        let mut offload = self
            .gate
            .redirector
            .offload(&asked.service.hostname, &asked.target, over_ceiling)
            .await?;
        // Clients drop `Authorization` on a redirect to another host: the token goes along in
        // the URL instead.
        if let Some(token) = &checked.bearer {
            offload.target = gate::with_token_param(&offload.target, token);
        }
        let resp = self.send_to_peer(&offload, req).await?;
        offload.arrangement.usage.redirected();
        Some(resp)
    }

    /// A client's request refused for want of capacity: 503, to retry shortly.
    fn shed(&self) -> Response<Body> {
        self.limits.shed();
        self.meter.shed();
        retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node is serving all it can and no peer can take more; retry in a moment",
            1,
        )
    }

    /// Hands `req` to the peer node `offload` names, by the policy's mode: a redirect, or the
    /// peer node's answer relayed. `None` when relaying failed (the node is marked unhealthy)
    /// and the request is to be served here after all.
    async fn send_to_peer(
        &self,
        offload: &Offload,
        req: &Request<Incoming>,
    ) -> Option<Response<Body>> {
        match self.gate.redirector.mode {
            Mode::Redirect => {
                self.meter.redirected();
                Some(redirect(&offload.location()))
            }
            Mode::Proxy => self.relay(offload, req).await,
        }
    }

    /// `req` fetched from the peer node `offload` names and its answer passed on, marked with
    /// the arrangement. `None` (and the node marked unhealthy) when the node fails or refuses:
    /// the request is then served here. Small bodies are read whole first, so a node that
    /// dies mid-body is a fallback too, not a broken response; larger ones stream through.
    async fn relay(&self, offload: &Offload, req: &Request<Incoming>) -> Option<Response<Body>> {
        let mut headers = req.headers().clone();
        strip_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        let health = self.gate.redirector.health();
        let failed = |why: &dyn std::fmt::Display| {
            debug!(node = %offload.node, %why, "relaying from the peer node failed; serving here");
            health.observed(offload.node, false);
            None
        };
        // A peer node serving a miss fetches from the origin first: give it as long.
        let wait = self.upstreams.origin_timeout() + RELAY_MARGIN;
        let answer = self
            .upstreams
            .node(
                req.method().clone(),
                &offload.http,
                &offload.target,
                headers,
                wait,
            )
            .await;
        let resp = match answer {
            Ok(resp) if served_properly(resp.status()) => resp,
            Ok(resp) => return failed(&format!("status {}", resp.status())),
            Err(why) => return failed(&why),
        };
        let (mut head, incoming) = resp.into_parts();
        let small = content_length(&head.headers).is_some_and(|len| len <= RELAY_READ_WHOLE);
        let incoming = self.upstreams.received(incoming, From::Node);
        let body = if small {
            match tokio::time::timeout(wait, incoming.collect()).await {
                Ok(Ok(whole)) => body::full(whole.to_bytes()),
                Ok(Err(e)) => return failed(&e),
                Err(_) => return failed(&"the body did not arrive in time"),
            }
        } else {
            incoming
        };
        health.observed(offload.node, true);
        self.meter.proxied();
        strip_hop_by_hop(&mut head.headers);
        if let Ok(id) = HeaderValue::from_str(&offload.arrangement.id.to_string()) {
            head.headers.insert(PEERING_HEADER, id);
        }
        Some(Response::from_parts(head, body))
    }

    /// Phase: token. A token-protected service's request must carry a token that grants its
    /// canonical path; the token leaves the URL either way. A refusal is the 403 to send.
    fn check_token(
        &self,
        service: &Service,
        url: CanonicalUrl,
        req: &Request<Incoming>,
        client: std::net::IpAddr,
    ) -> Result<TokenCheck, Box<Response<Body>>> {
        gate::admit(&service.access, url, req.headers(), client).map_err(|refusal| {
            debug!(host = %service.hostname, reason = refusal.reason, "token refused");
            Box::new(self.refuse(refusal.reason, &refusal.message))
        })
    }

    /// A 403 for private content, counted by `reason`; never stored anywhere.
    fn refuse(&self, reason: &'static str, message: &str) -> Response<Body> {
        self.gate.rejections.count(reason);
        let mut resp = text_response(StatusCode::FORBIDDEN, message);
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    /// A request may go to a peer provider's node unless its token is bound to the client's
    /// address and the peer would see ours instead (relaying).
    fn may_offload(&self, checked: &TokenCheck) -> bool {
        let bound = checked.claims.as_ref().is_some_and(|c| c.client.is_some());
        !(bound && self.gate.redirector.mode == Mode::Proxy)
    }

    /// Phase: whether this node may serve `service`: always its own provider's; another
    /// provider's only under an active peering arrangement between the two, whose usage the
    /// response then counts.
    fn authorise(&self, service: &Service) -> Result<Option<Arc<Usage>>, FetchError> {
        if service.owner == self.gate.provider {
            return Ok(None);
        }
        if let Some(arrangement) = self
            .gate
            .arrangements
            .serving(&service.owner, &service.hostname)
        {
            debug!(arrangement = %arrangement.id, host = %service.hostname, "served for a peer");
            return Ok(Some(arrangement.usage.clone()));
        }
        Err(FetchError::Forbidden(format!(
            "{} belongs to provider {}, and this node's provider has no active peering arrangement to serve it",
            service.hostname,
            service.owner.short()
        )))
    }

    /// What a peer asks of us: our copy of a content key, or 404. Never fetched on its behalf.
    async fn serve_object(&self, key_hex: &str, asked: &http::HeaderMap) -> Response<Body> {
        let Ok(key) = key_hex.parse::<ContentKey>() else {
            return text_response(StatusCode::BAD_REQUEST, "a content key is 64 hex digits");
        };
        let access = ObjectAccess {
            authenticated: self
                .gate
                .object_auth
                .as_ref()
                .is_some_and(|auth| auth.admits(&key, asked)),
            home_private: self.home_is_private(asked).await,
        };
        match self.fetcher.serve_object(key, asked, access).await {
            Ok((head, body)) => Response::from_parts(head, body),
            Err((StatusCode::FORBIDDEN, why)) => self.refuse("unauthorised_node", &why),
            Err((status, why)) => text_response(status, &why),
        }
    }

    /// Whether a home request (a cold miss sent to us with its URL) is for a token-protected
    /// service's URL.
    async fn home_is_private(&self, asked: &http::HeaderMap) -> bool {
        let Some(url) = asked
            .get(HOME_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|u| CanonicalUrl::parse(u).ok())
        else {
            return false;
        };
        // An address is never a service (see `service_of`): no lookup for plain proxying.
        let host = url.host();
        if host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok()
        {
            return false;
        }
        let service = self.gate.services.resolve(host).await;
        service.is_some_and(|s| s.access.is_private())
    }

    /// The ContentRecord we sealed lately for a key, for a peer that streamed its body from
    /// us before we had one; 404 otherwise (the DHT has older ones).
    fn serve_record(&self, key_hex: &str) -> Response<Body> {
        let Ok(key) = key_hex.parse::<ContentKey>() else {
            return text_response(StatusCode::BAD_REQUEST, "a content key is 64 hex digits");
        };
        match self.fetcher.sealed_record(&key) {
            Some(sealed) => {
                let mut resp = Response::new(body::full(sealed));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                resp
            }
            None => text_response(StatusCode::NOT_FOUND, "no recent record for this key"),
        }
    }
}

/// Requests from other nodes rather than clients, which the client limits leave alone:
/// peers' object and record fetches (from the store, or a cold miss sent to us as the key's
/// home, which is all misses by design), a primary's health probe, and a client's request
/// relayed under an arrangement (the path form, sent by a node). The markers can be spoofed; what a spoofer gains is told in
/// docs/architecture.md (*Quotas and abuse control*).
fn from_node<B>(req: &Request<B>) -> bool {
    if req.uri().scheme().is_some() {
        return false;
    }
    let path = req.uri().path();
    let reef_agent = || {
        req.headers()
            .get(header::USER_AGENT)
            .is_some_and(|ua| ua.as_bytes().starts_with(b"reef/"))
    };
    path.starts_with(OBJECT_PATH)
        || path.starts_with(RECORD_PATH)
        || (req.method() == Method::HEAD && req.headers().contains_key(PROBE_HEADER))
        || (path.starts_with(SERVICE_PATH) && reef_agent())
}

/// Whether the request says a body follows. hyper has already refused conflicting and
/// malformed framing; with both headers it keeps only `Transfer-Encoding`.
fn declares_body<B>(req: &Request<B>) -> bool {
    let headers = req.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0")
}

/// 429 with `Retry-After` and a line saying why.
fn too_many(throttled: &Throttled) -> Response<Body> {
    retry_later(
        StatusCode::TOO_MANY_REQUESTS,
        &throttled.why,
        throttled.retry_after_secs(),
    )
}

/// A refusal for now: `status` with `why`, `Retry-After` in seconds, never stored.
fn retry_later(status: StatusCode, why: &str, retry_after_secs: u64) -> Response<Body> {
    let mut resp = text_response(status, why);
    let headers = resp.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// An origin-form request for a service.
struct ServiceRequest {
    service: Arc<Service>,
    /// Path and query on the service.
    target: String,
    /// Addressed to this node by a redirect rather than by the service's name.
    redirected: bool,
}

/// What a token-protected service's health probe gets: the node would serve the service, and
/// nothing of its content is looked at.
fn probe_answer() -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

/// `302` to `location`; never cached, since the next request may well be served here.
fn redirect(location: &str) -> Response<Body> {
    let mut resp = text_response(StatusCode::FOUND, "served by a peer provider's node");
    if let Ok(value) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, value);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Length of the request target as sent, without formatting it.
fn uri_len(uri: &http::Uri) -> usize {
    uri.scheme_str().map_or(0, |s| s.len() + "://".len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len())
}

fn error_response(err: &FetchError) -> Response<Body> {
    let mut resp = text_response(err.status(), &err.to_string());
    resp.headers_mut()
        .insert("x-cache", HeaderValue::from_static("MISS"));
    resp
}

/// A short plain-text answer: one line saying why.
pub fn text_response(status: StatusCode, reason: &str) -> Response<Body> {
    let line: String = reason.lines().collect::<Vec<_>>().join(" ");
    let mut resp = Response::new(body::full(format!("{line}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_requests_are_told_from_client_requests() {
        let req = |method: Method, target: &str, headers: &[(&str, &str)]| {
            let mut b = Request::builder().method(method).uri(target);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap()
        };
        let key = "ab".repeat(32);
        assert!(from_node(&req(
            Method::GET,
            &format!("/_reef/object/{key}"),
            &[]
        )));
        assert!(from_node(&req(
            Method::GET,
            &format!("/_reef/record/{key}"),
            &[]
        )));
        assert!(from_node(&req(Method::HEAD, "/p", &[(PROBE_HEADER, "1")])));
        assert!(from_node(&req(
            Method::GET,
            "/_reef/s/a.example/p",
            &[("user-agent", "reef/0.1.0")]
        )));
        // A probe is a HEAD; a redirected browser is a client; so is any proxy request.
        assert!(!from_node(&req(Method::GET, "/p", &[(PROBE_HEADER, "1")])));
        assert!(!from_node(&req(
            Method::GET,
            "/_reef/s/a.example/p",
            &[("user-agent", "curl/8")]
        )));
        assert!(!from_node(&req(
            Method::GET,
            &format!("http://a.example/_reef/object/{key}"),
            &[]
        )));
        assert!(!from_node(&req(Method::GET, "/p", &[])));
    }

    #[test]
    fn a_body_is_declared_by_transfer_encoding_or_a_nonzero_length() {
        let with = |headers: &[(&str, &str)]| {
            let mut b = Request::builder().uri("/");
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            declares_body(&b.body(()).unwrap())
        };
        assert!(!with(&[]));
        assert!(!with(&[("content-length", "0")]));
        assert!(with(&[("content-length", "5")]));
        assert!(with(&[("transfer-encoding", "chunked")]));
    }

    #[test]
    fn uri_len_matches_the_formatted_target() {
        for t in [
            "http://a.example:8080/p/q?x=1",
            "/just/a/path?q",
            "http://a.example/",
            "/",
        ] {
            let uri: http::Uri = t.parse().unwrap();
            assert_eq!(uri_len(&uri), uri.to_string().len(), "{t}");
        }
    }
}
