//! The edge's token phase: for a token-protected service, the request's token must grant the
//! canonical path, before the cache is looked at or anything is fetched.
//!
//! The token comes in the `reef_token` query parameter or as `Authorization: Bearer`. It is
//! taken out of the URL before the URL becomes a cache key (all token holders share one cached
//! object) and is not sent to the origin: a Bearer header that carried it is dropped, as the
//! origin did not issue it (and a shared cache may not store answers to requests with
//! `Authorization`, RFC 9111 §3.5). What the node sends of a private object is marked
//! `Cache-Control: private`, so no shared cache downstream keeps a copy for clients without a
//! token.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, header};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use reef_proto::CanonicalUrl;
use reef_proto::records::Access;
use reef_proto::token::{self, Claims};

use crate::metrics::Reason;
use crate::provider::unix_secs;

/// The query parameter a token may come in; prefixed so it cannot clash with the origin's own.
pub const TOKEN_PARAM: &str = "reef_token";

/// A request the token phase let through.
#[derive(Debug)]
pub struct TokenCheck {
    /// The URL to cache and fetch: the request's, without the token parameter.
    pub url: CanonicalUrl,
    /// The service is token-protected (and the token granted this URL).
    pub private: bool,
    /// What the token grants; None for a public service.
    pub claims: Option<Claims>,
    /// The token came as `Authorization: Bearer` (the header is then not forwarded); a
    /// redirect carries it on as the query parameter instead.
    pub bearer: Option<String>,
}

impl TokenCheck {
    /// A request of a public service (or of no known service): nothing to check.
    pub fn public(url: CanonicalUrl) -> Self {
        Self {
            url,
            private: false,
            claims: None,
            bearer: None,
        }
    }
}

/// Why a request was refused: a one-line reason, and its metrics label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// The token phase for a request of `url` (canonical, as the client sent it) from `client`.
pub fn admit(
    access: &Access,
    url: CanonicalUrl,
    headers: &HeaderMap,
    client: IpAddr,
) -> Result<TokenCheck, Refusal> {
    let Access::Token { keys } = access else {
        return Ok(TokenCheck::public(url));
    };
    let (param, url) = take_param(url).map_err(|e| Refusal {
        reason: "malformed",
        message: format!("403 forbidden: {e}"),
    })?;
    let bearer = bearer_of(headers);
    let Some(text) = param.as_deref().or(bearer.as_deref()) else {
        return Err(Refusal {
            reason: "missing",
            message: format!(
                "403 forbidden: {} is token-protected; send a token as ?{TOKEN_PARAM}= or Authorization: Bearer",
                url.host()
            ),
        });
    };
    let path = url.path_and_query().split('?').next().unwrap_or("/");
    match token::verify(text, keys, path, client, unix_secs()) {
        Ok(claims) => Ok(TokenCheck {
            url,
            private: true,
            claims: Some(claims),
            bearer: if param.is_none() { bearer } else { None },
        }),
        Err(e) => Err(Refusal {
            reason: e.reason(),
            message: format!("403 forbidden: {e}"),
        }),
    }
}

/// `url` without the token parameter, and the token it carried (the first, if several).
fn take_param(url: CanonicalUrl) -> Result<(Option<String>, CanonicalUrl), reef_proto::UrlError> {
    let text = url.as_str();
    let Some((base, query)) = text.split_once('?') else {
        return Ok((None, url));
    };
    let mut token = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == TOKEN_PARAM {
            token.get_or_insert_with(|| value.to_string());
        } else {
            kept.push(pair);
        }
    }
    if token.is_none() {
        return Ok((None, url));
    }
    let stripped = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((token, CanonicalUrl::parse(&stripped)?))
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer_of(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// Makes what a node sends of a private object unfit for shared caches downstream: the
/// origin's directives stay (a browser may still cache), `public` and `s-maxage` go, and
/// `private` is added.
pub fn keep_private(headers: &mut HeaderMap) {
    let kept: Vec<String> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|d| {
            let name = d
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            !d.is_empty() && !matches!(name.as_str(), "public" | "s-maxage" | "private")
        })
        .map(str::to_string)
        .collect();
    let value = std::iter::once("private".to_string())
        .chain(kept)
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(header::CACHE_CONTROL, value);
    }
}

/// `path_and_query` with the token added as the query parameter, for a redirect of a
/// request whose token came as a Bearer header (clients drop `Authorization` when redirected
/// to another host).
pub fn with_token_param(path_and_query: &str, token: &str) -> String {
    let sep = if path_and_query.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{path_and_query}{sep}{TOKEN_PARAM}={token}")
}

/// A request target for the access log, with any token's value left out: a token is a
/// credential, and logs travel further than credentials should.
pub struct Redacted<'a>(pub &'a http::Uri);

impl std::fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0.to_string();
        let Some((base, query)) = text.split_once('?') else {
            return f.write_str(&text);
        };
        f.write_str(base)?;
        for (i, pair) in query.split('&').enumerate() {
            f.write_str(if i == 0 { "?" } else { "&" })?;
            match pair.split_once('=') {
                Some((TOKEN_PARAM, _)) => write!(f, "{TOKEN_PARAM}=…")?,
                _ => f.write_str(pair)?,
            }
        }
        Ok(())
    }
}

/// `reef_token_rejections_total{reason}`: requests for private content refused by the token
/// phase, by why (missing, malformed, unknown_key, bad_signature, expired, wrong_prefix,
/// wrong_client), and private objects refused to a requester that was not authorised
/// (unauthorised_node, private_object).
#[derive(Debug, Default)]
pub struct Rejections {
    family: Family<Reason, Counter>,
}

impl Rejections {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let rejections = Arc::new(Self::default());
        registry.register(
            "reef_token_rejections",
            "Requests for private (token-protected) content refused with 403, by reason",
            rejections.family.clone(),
        );
        rejections
    }

    pub fn count(&self, reason: &'static str) {
        self.family.get_or_create(&Reason { reason }).inc();
    }
}

#[cfg(test)]
mod tests {
    use reef_proto::token::{TokenKey, TokenSigner};

    use super::*;

    fn access() -> Access {
        Access::Token {
            keys: vec![TokenKey {
                id: "k1".into(),
                public: TokenSigner::from_bytes(&[1; 32]).public(),
            }],
        }
    }

    fn token(prefix: &str) -> String {
        TokenSigner::from_bytes(&[1; 32])
            .issue(&Claims {
                key_id: "k1".into(),
                prefix: prefix.into(),
                expires: unix_secs() + 3600,
                client: None,
            })
            .unwrap()
    }

    fn url(text: &str) -> CanonicalUrl {
        CanonicalUrl::parse(text).unwrap()
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn the_token_parameter_leaves_the_url() {
        let t = token("/p");
        let asked = url(&format!("http://h.example/p/a?x=1&{TOKEN_PARAM}={t}&y=2"));
        let ok = admit(&access(), asked, &HeaderMap::new(), LOCAL).unwrap();
        assert_eq!(ok.url.as_str(), "http://h.example/p/a?x=1&y=2");
        assert!(ok.private && ok.bearer.is_none());
        let only = url(&format!("http://h.example/p/a?{TOKEN_PARAM}={t}"));
        let ok = admit(&access(), only, &HeaderMap::new(), LOCAL).unwrap();
        assert_eq!(ok.url.as_str(), "http://h.example/p/a");
        // A public service's URL is left alone.
        let public = url(&format!("http://h.example/p?{TOKEN_PARAM}=x"));
        let ok = admit(&Access::Public, public.clone(), &HeaderMap::new(), LOCAL).unwrap();
        assert_eq!(ok.url, public);
        assert!(!ok.private);
    }

    #[test]
    fn bearer_tokens_work_and_refusals_say_why() {
        let mut headers = HeaderMap::new();
        let bearer = HeaderValue::from_str(&format!("Bearer {}", token("/p"))).unwrap();
        headers.insert(header::AUTHORIZATION, bearer);
        let ok = admit(&access(), url("http://h.example/p/a"), &headers, LOCAL).unwrap();
        assert!(ok.bearer.is_some() && ok.private);
        let refused = |u: &str, h: &HeaderMap| admit(&access(), url(u), h, LOCAL).unwrap_err();
        assert_eq!(
            refused("http://h.example/q", &headers).reason,
            "wrong_prefix"
        );
        assert_eq!(
            refused("http://h.example/p/../q", &headers).reason,
            "wrong_prefix"
        );
        let none = HeaderMap::new();
        let missing = refused("http://h.example/p/a", &none);
        assert_eq!(missing.reason, "missing");
        assert!(
            missing.message.contains("token-protected"),
            "{}",
            missing.message
        );
        assert_eq!(
            refused(&format!("http://h.example/p?{TOKEN_PARAM}=junk"), &none).reason,
            "malformed"
        );
    }

    #[test]
    fn private_answers_are_not_for_shared_caches() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60, s-maxage=600"),
        );
        keep_private(&mut h);
        assert_eq!(h[header::CACHE_CONTROL], "private, max-age=60");
        let mut h = HeaderMap::new();
        keep_private(&mut h);
        assert_eq!(h[header::CACHE_CONTROL], "private");
        assert_eq!(with_token_param("/a?x=1", "T"), "/a?x=1&reef_token=T");
        assert_eq!(with_token_param("/a", "T"), "/a?reef_token=T");
    }

    #[test]
    fn logs_never_see_a_token() {
        let uri: http::Uri = "/p?a=1&reef_token=SECRET&b".parse().unwrap();
        assert_eq!(Redacted(&uri).to_string(), "/p?a=1&reef_token=…&b");
        let plain: http::Uri = "http://h.example/p".parse().unwrap();
        assert_eq!(Redacted(&plain).to_string(), "http://h.example/p");
    }
}
