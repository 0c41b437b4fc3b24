//! RFC 9111 freshness, one test per rule, through a real node against an origin whose
//! `/headers/` route sends the header fields under test (see `reef_testnet::origin`).
//!
//! Nothing here sleeps: a copy is made fresh or already stale by the headers it arrives with
//! (`Age`, `Expires` in the past or future, `Last-Modified` long ago). Each test checks what
//! the node answered (`X-Cache`, `X-Reef-Source`, the bytes) and how often the origin was
//! asked, and how often it confirmed a copy with 304.

use http::Request;
use reef_testnet::Origin;
use reef_testnet::origin::expected_body;

use crate::support::{Fetched, Net, launch, request_via, wait_announced, wait_stored};

/// Body length of every object here; the tag in the path keeps tests apart.
const LEN: u64 = 1000;

/// An object of the origin's `/headers/` route: its own path (so the origin counts its
/// requests apart) and the URL whose query sets the response header fields under test.
struct Object {
    path: String,
    url: String,
}

impl Object {
    fn new(origin: &Origin, tag: &str, query: &str) -> Self {
        let path = format!("/headers/{LEN}/{tag}");
        let url = origin.url(&format!("{path}?{query}"));
        Self { path, url }
    }
}

/// GET `obj` through `node`, with the given request header fields.
async fn get(net: &Net, node: usize, obj: &Object, headers: &[(&str, &str)]) -> Fetched {
    let mut req = Request::get(&obj.url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    request_via(net.http(node), req).await
}

/// The answer was a 200 with the object's bytes, labelled `cache` / `source`.
#[track_caller]
fn assert_served(got: &Fetched, obj: &Object, cache: &str, source: &str) {
    assert_eq!(got.status, 200, "{}: {}", obj.path, got.text());
    assert_eq!(
        (got.header("x-cache"), got.source()),
        (cache, source),
        "{}: {:?}",
        obj.path,
        got.headers
    );
    assert!(
        got.body == expected_body(&obj.path, LEN),
        "{}: wrong body",
        obj.path
    );
}

fn age(got: &Fetched) -> u64 {
    got.header("age")
        .parse()
        .unwrap_or_else(|_| panic!("Age {:?}", got.header("age")))
}

/// (requests the origin received, of which answered 304)
fn origin_counts(origin: &Origin, obj: &Object) -> (u64, u64) {
    (origin.hits(&obj.path), origin.not_modified(&obj.path))
}

async fn cached_objects(net: &Net, node: usize) -> u64 {
    let status = net.testnet.nodes[node].status().await.expect("status");
    status["cache"]["objects"].as_u64().expect("cache.objects")
}

/// RFC 9111 §5.2.2.1, §4.2.3: a copy is fresh while its age is below `max-age`; the origin's
/// `Age` counts, so `max-age=60` arriving with `Age: 100` is stale at once and revalidated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_keeps_a_copy_fresh_until_its_age_reaches_it() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let fresh = Object::new(origin, "max-age-fresh", "Cache-Control=max-age%3D3600");
    let stale = Object::new(
        origin,
        "max-age-stale",
        "Cache-Control=max-age%3D60&Age=100",
    );

    assert_served(&get(&net, 0, &fresh, &[]).await, &fresh, "MISS", "origin");
    wait_stored(&net, 0, 1).await;
    assert_served(&get(&net, 0, &fresh, &[]).await, &fresh, "HIT", "local");
    assert_eq!(origin_counts(origin, &fresh), (1, 0));

    assert_served(&get(&net, 0, &stale, &[]).await, &stale, "MISS", "origin");
    wait_stored(&net, 0, 2).await;
    let again = get(&net, 0, &stale, &[]).await;
    assert_served(&again, &stale, "REVALIDATED", "local");
    assert!(age(&again) >= 100, "Age {}", age(&again));
    assert_eq!(origin_counts(origin, &stale), (2, 1));
}

/// RFC 9111 §5.2.2.10: a shared cache uses `s-maxage` instead of `max-age`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s_maxage_overrides_max_age_in_a_shared_cache() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let shorter = Object::new(
        origin,
        "s-maxage-0",
        "Cache-Control=max-age%3D3600,%20s-maxage%3D0",
    );
    let longer = Object::new(
        origin,
        "s-maxage-3600",
        "Cache-Control=max-age%3D0,%20s-maxage%3D3600",
    );

    assert_served(
        &get(&net, 0, &shorter, &[]).await,
        &shorter,
        "MISS",
        "origin",
    );
    wait_stored(&net, 0, 1).await;
    for _ in 0..2 {
        let got = get(&net, 0, &shorter, &[]).await;
        assert_served(&got, &shorter, "REVALIDATED", "local");
    }
    assert_eq!(origin_counts(origin, &shorter), (3, 2));

    assert_served(&get(&net, 0, &longer, &[]).await, &longer, "MISS", "origin");
    wait_stored(&net, 0, 2).await;
    assert_served(&get(&net, 0, &longer, &[]).await, &longer, "HIT", "local");
    assert_eq!(origin_counts(origin, &longer), (1, 0));
}

/// RFC 9111 §5.3, §4.2.1: without `max-age`, `Expires` (counted from `Date`) sets the
/// freshness lifetime; one in the past, or an invalid one such as `0`, means already
/// expired. No `Last-Modified`, so heuristic freshness cannot stand in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_in_the_future_is_fresh_in_the_past_or_invalid_is_stale() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let bare = "Cache-Control=none&Last-Modified=none";
    let future = Object::new(
        origin,
        "expires-future",
        &format!("{bare}&Expires=now+3600"),
    );
    let past = Object::new(origin, "expires-past", &format!("{bare}&Expires=now-3600"));
    let invalid = Object::new(origin, "expires-invalid", &format!("{bare}&Expires=0"));

    for (i, obj) in [&future, &past, &invalid].into_iter().enumerate() {
        assert_served(&get(&net, 0, obj, &[]).await, obj, "MISS", "origin");
        wait_stored(&net, 0, i as u64 + 1).await;
    }
    assert_served(&get(&net, 0, &future, &[]).await, &future, "HIT", "local");
    assert_eq!(origin_counts(origin, &future), (1, 0));
    for obj in [&past, &invalid] {
        assert_served(&get(&net, 0, obj, &[]).await, obj, "REVALIDATED", "local");
        assert_eq!(origin_counts(origin, obj), (2, 1), "{}", obj.path);
    }
}

/// RFC 9111 §5.3: with `max-age` present, `Expires` is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_wins_over_an_expires_in_the_past() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let obj = Object::new(
        origin,
        "max-age-and-expires",
        "Cache-Control=max-age%3D3600&Expires=now-3600",
    );
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "MISS", "origin");
    wait_stored(&net, 0, 1).await;
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "HIT", "local");
    assert_eq!(origin_counts(origin, &obj), (1, 0));
}

/// RFC 9111 §4.2.2: with no explicit freshness, a cache may assume a lifetime of 10% of the
/// time since `Last-Modified`: 10 days ago gives a day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heuristic_freshness_comes_from_last_modified() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let obj = Object::new(
        origin,
        "heuristic",
        "Cache-Control=none&Last-Modified=now-864000",
    );
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "MISS", "origin");
    wait_stored(&net, 0, 1).await;
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "HIT", "local");
    assert_eq!(origin_counts(origin, &obj), (1, 0));
}

/// RFC 9111 §4.2: with neither explicit freshness nor a `Last-Modified` to guess from, a
/// stored copy is never fresh: each request revalidates it (with its `ETag`) or, with no
/// validator at all, fetches it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_any_freshness_information_every_request_goes_to_the_origin() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let tagged = Object::new(
        origin,
        "no-freshness",
        "Cache-Control=none&Last-Modified=none",
    );
    let bare = Object::new(
        origin,
        "no-freshness-no-validator",
        "Cache-Control=none&Last-Modified=none&ETag=none",
    );

    assert_served(&get(&net, 0, &tagged, &[]).await, &tagged, "MISS", "origin");
    wait_stored(&net, 0, 1).await;
    for _ in 0..2 {
        let got = get(&net, 0, &tagged, &[]).await;
        assert_served(&got, &tagged, "REVALIDATED", "local");
    }
    assert_eq!(origin_counts(origin, &tagged), (3, 2));

    assert_served(&get(&net, 0, &bare, &[]).await, &bare, "MISS", "origin");
    wait_stored(&net, 0, 2).await;
    assert_served(&get(&net, 0, &bare, &[]).await, &bare, "MISS", "origin");
    assert_eq!(origin_counts(origin, &bare), (2, 0));
}

/// RFC 9111 §5.2.2.5: a `no-store` response is never stored, even with `max-age`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_responses_are_never_stored() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let obj = Object::new(
        origin,
        "no-store",
        "Cache-Control=no-store,%20max-age%3D3600",
    );
    for _ in 0..2 {
        assert_served(&get(&net, 0, &obj, &[]).await, &obj, "MISS", "origin");
    }
    assert_eq!(origin_counts(origin, &obj), (2, 0));
    assert_eq!(cached_objects(&net, 0).await, 0);
}

/// RFC 9111 §5.2.2.7: a shared cache does not store a `private` response, even with `max-age`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_responses_are_not_stored_by_a_shared_cache() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let obj = Object::new(origin, "private", "Cache-Control=private,%20max-age%3D3600");
    for _ in 0..2 {
        assert_served(&get(&net, 0, &obj, &[]).await, &obj, "MISS", "origin");
    }
    assert_eq!(origin_counts(origin, &obj), (2, 0));
    assert_eq!(cached_objects(&net, 0).await, 0);
}

/// RFC 9111 §5.2.2.4: a `no-cache` response is stored, but every reuse is validated with the
/// origin first, even while `max-age` says fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_responses_are_stored_but_revalidated_every_time() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let obj = Object::new(
        origin,
        "no-cache",
        "Cache-Control=no-cache,%20max-age%3D3600",
    );
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "MISS", "origin");
    wait_stored(&net, 0, 1).await;
    for _ in 0..2 {
        assert_served(&get(&net, 0, &obj, &[]).await, &obj, "REVALIDATED", "local");
    }
    assert_eq!(
        origin_counts(origin, &obj),
        (3, 2),
        "two conditional requests"
    );
}

/// RFC 9111 §5.2.2.2, §5.2.2.8: once stale, a `must-revalidate` (or, in a shared cache,
/// `proxy-revalidate`) copy is not served without the origin's say-so — not even when the
/// origin is down and the client allows `stale-if-error` (RFC 5861 §4). Without either
/// directive the same request gets the stale copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_and_proxy_revalidate_forbid_serving_stale_when_the_origin_is_down() {
    let net = launch(1, &[]).await;
    // Our own origin, so that it can be stopped.
    let origin = Origin::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("origin");
    let plain = Object::new(&origin, "stale-allowed", "Cache-Control=max-age%3D0");
    let must = Object::new(
        &origin,
        "must-revalidate",
        "Cache-Control=max-age%3D0,%20must-revalidate",
    );
    let proxy = Object::new(
        &origin,
        "proxy-revalidate",
        "Cache-Control=max-age%3D0,%20proxy-revalidate",
    );
    for (i, obj) in [&plain, &must, &proxy].into_iter().enumerate() {
        assert_served(&get(&net, 0, obj, &[]).await, obj, "MISS", "origin");
        wait_stored(&net, 0, i as u64 + 1).await;
        // While the origin is up, the stale copy is revalidated.
        assert_served(&get(&net, 0, obj, &[]).await, obj, "REVALIDATED", "local");
        assert_eq!(origin_counts(&origin, obj), (2, 1), "{}", obj.path);
    }
    origin.shutdown().await;

    let allow = [("cache-control", "stale-if-error=60")];
    assert_served(
        &get(&net, 0, &plain, &allow).await,
        &plain,
        "STALE",
        "local",
    );
    for obj in [&must, &proxy] {
        let got = get(&net, 0, obj, &allow).await;
        assert_eq!(
            got.status,
            502,
            "{}: {:?} {}",
            obj.path,
            got.headers,
            got.text()
        );
    }
}

/// RFC 9111 §5.2.1.5: `no-store` in the request keeps its response out of the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_store_request_is_not_stored() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let obj = Object::new(origin, "request-no-store", "Cache-Control=max-age%3D3600");
    let no_store = [("cache-control", "no-store")];
    assert_served(&get(&net, 0, &obj, &no_store).await, &obj, "MISS", "origin");
    assert_eq!(cached_objects(&net, 0).await, 0);
    // The next, ordinary request goes to the origin again, and its response is stored.
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "MISS", "origin");
    wait_stored(&net, 0, 1).await;
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "HIT", "local");
    assert_eq!(origin_counts(origin, &obj), (2, 0));
}

/// RFC 9111 §5.2.1.4, §5.4: `Cache-Control: no-cache` or `Pragma: no-cache` in the request
/// makes the node validate even a fresh copy with the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_no_cache_and_pragma_revalidate_a_fresh_copy() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let obj = Object::new(origin, "request-no-cache", "Cache-Control=max-age%3D3600");
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "MISS", "origin");
    wait_stored(&net, 0, 1).await;
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "HIT", "local");

    let no_cache = [("cache-control", "no-cache")];
    let got = get(&net, 0, &obj, &no_cache).await;
    assert_served(&got, &obj, "REVALIDATED", "local");
    assert_eq!(origin_counts(origin, &obj), (2, 1));
    let pragma = [("pragma", "no-cache")];
    assert_served(
        &get(&net, 0, &obj, &pragma).await,
        &obj,
        "REVALIDATED",
        "local",
    );
    assert_eq!(origin_counts(origin, &obj), (3, 2));
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "HIT", "local");
    assert_eq!(origin_counts(origin, &obj), (3, 2));
}

/// RFC 9111 §5.2.1.1: a request `max-age` below the copy's age makes the node revalidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_max_age_below_the_copys_age_revalidates() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let obj = Object::new(
        origin,
        "request-max-age",
        "Cache-Control=max-age%3D3600&Age=100",
    );
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "MISS", "origin");
    wait_stored(&net, 0, 1).await;
    let young = [("cache-control", "max-age=50")];
    assert_served(
        &get(&net, 0, &obj, &young).await,
        &obj,
        "REVALIDATED",
        "local",
    );
    assert_eq!(origin_counts(origin, &obj), (2, 1));
    let old_enough = [("cache-control", "max-age=600")];
    assert_served(&get(&net, 0, &obj, &old_enough).await, &obj, "HIT", "local");
    assert_eq!(origin_counts(origin, &obj), (2, 1));
}

/// RFC 9111 §5.2.1.3: `min-fresh` above the copy's remaining freshness makes the node revalidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_min_fresh_beyond_the_remaining_freshness_revalidates() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let obj = Object::new(origin, "request-min-fresh", "Cache-Control=max-age%3D600");
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "MISS", "origin");
    wait_stored(&net, 0, 1).await;
    let too_much = [("cache-control", "min-fresh=3600")];
    assert_served(
        &get(&net, 0, &obj, &too_much).await,
        &obj,
        "REVALIDATED",
        "local",
    );
    assert_eq!(origin_counts(origin, &obj), (2, 1));
    let within = [("cache-control", "min-fresh=60")];
    assert_served(&get(&net, 0, &obj, &within).await, &obj, "HIT", "local");
    assert_eq!(origin_counts(origin, &obj), (2, 1));
}

/// RFC 9111 §5.2.1.2: `max-stale` lets the client take a stale copy without the origin being
/// asked (served as a `HIT`), within its limit if it gives one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_max_stale_accepts_a_stale_copy_without_the_origin() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    // Stale by about 40 s on arrival.
    let obj = Object::new(
        origin,
        "request-max-stale",
        "Cache-Control=max-age%3D60&Age=100",
    );
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "MISS", "origin");
    wait_stored(&net, 0, 1).await;
    for allowance in ["max-stale", "max-stale=3600"] {
        let got = get(&net, 0, &obj, &[("cache-control", allowance)]).await;
        assert_served(&got, &obj, "HIT", "local");
        assert!(age(&got) >= 100, "Age {}", age(&got));
    }
    assert_eq!(origin_counts(origin, &obj), (1, 0));
    let too_little = [("cache-control", "max-stale=10")];
    assert_served(
        &get(&net, 0, &obj, &too_little).await,
        &obj,
        "REVALIDATED",
        "local",
    );
    assert_eq!(origin_counts(origin, &obj), (2, 1));
}

/// A client's `max-stale` never lets a copy through without validation when the response
/// forbids it: `must-revalidate` (RFC 9111 §5.2.2.2), `proxy-revalidate` in a shared cache
/// (§5.2.2.8) and `no-cache` (§5.2.2.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_max_stale_does_not_override_what_the_response_forbids() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let cases = [
        (
            "max-stale-must-revalidate",
            "Cache-Control=max-age%3D60,%20must-revalidate&Age=100",
        ),
        (
            "max-stale-proxy-revalidate",
            "Cache-Control=max-age%3D60,%20proxy-revalidate&Age=100",
        ),
        ("max-stale-no-cache", "Cache-Control=no-cache"),
    ];
    let any_stale = [("cache-control", "max-stale")];
    for (stored, (tag, query)) in (1..).zip(cases) {
        let obj = Object::new(origin, tag, query);
        assert_served(&get(&net, 0, &obj, &[]).await, &obj, "MISS", "origin");
        wait_stored(&net, 0, stored).await;
        let got = get(&net, 0, &obj, &any_stale).await;
        assert_served(&got, &obj, "REVALIDATED", "local");
        assert_eq!(origin_counts(origin, &obj), (2, 1), "{tag}");
    }
}

/// RFC 9111 §5.2.2.2: `must-revalidate` only matters once the copy is stale; a fresh copy
/// is served from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_revalidate_does_not_stop_a_fresh_copy_being_served() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let obj = Object::new(
        origin,
        "fresh-must-revalidate",
        "Cache-Control=max-age%3D3600,%20must-revalidate",
    );
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "MISS", "origin");
    wait_stored(&net, 0, 1).await;
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "HIT", "local");
    assert_eq!(origin_counts(origin, &obj), (1, 0));
}

/// RFC 9111 §5.2.2.8: `proxy-revalidate` only matters once the copy is stale; a fresh copy
/// is served from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_revalidate_does_not_stop_a_fresh_copy_being_served() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let obj = Object::new(
        origin,
        "fresh-proxy-revalidate",
        "Cache-Control=max-age%3D3600,%20proxy-revalidate",
    );
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "MISS", "origin");
    wait_stored(&net, 0, 1).await;
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "HIT", "local");
    assert_eq!(origin_counts(origin, &obj), (1, 0));
}

/// RFC 9111 §4.2.3: the node's `Age` includes the origin's `Age`, and the origin's `Date`
/// is passed on unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origins_age_counts_in_the_nodes_age() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let obj = Object::new(
        origin,
        "age",
        "Cache-Control=max-age%3D3600&Age=100&Date=now-30",
    );
    let first = get(&net, 0, &obj, &[]).await;
    assert_served(&first, &obj, "MISS", "origin");
    wait_stored(&net, 0, 1).await;
    let hit = get(&net, 0, &obj, &[]).await;
    assert_served(&hit, &obj, "HIT", "local");
    for got in [&first, &hit] {
        assert!(
            (100..160).contains(&age(got)),
            "{}: Age {}",
            got.header("x-cache"),
            age(got)
        );
        assert_eq!(got.header("date"), first.header("date"));
    }
    let date = httpdate::parse_http_date(first.header("date")).expect("http date");
    let behind = std::time::SystemTime::now()
        .duration_since(date)
        .expect("Date in the past");
    assert!(behind.as_secs() >= 29, "the origin's Date, {behind:?} ago");
    assert_eq!(origin_counts(origin, &obj), (1, 0));
}

/// RFC 9111 §4.2.3: apparent age. A copy whose `Date` is 100 s before it arrived is at
/// least 100 s old, so with `max-age=60` it is stale at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_in_the_past_counts_as_age() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let obj = Object::new(
        origin,
        "apparent-age",
        "Cache-Control=max-age%3D60&Date=now-100",
    );
    let first = get(&net, 0, &obj, &[]).await;
    assert_served(&first, &obj, "MISS", "origin");
    wait_stored(&net, 0, 1).await;
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "REVALIDATED", "local");
    assert_eq!(origin_counts(origin, &obj), (2, 1));
    assert!(age(&first) >= 100, "Age {}", age(&first));
}

/// A copy fetched from a peer keeps the origin's `Date`, and its `Age` goes on from the
/// peer's: hopping between nodes never makes a copy younger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_never_gets_younger_hopping_between_nodes() {
    let net = launch(2, &[]).await;
    let origin = &net.testnet.origin;
    let obj = Object::new(
        origin,
        "peer-age",
        "Cache-Control=max-age%3D3600&Age=100&Date=now-30",
    );
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "MISS", "origin");
    wait_stored(&net, 0, 1).await;
    wait_announced(&net, 0, 1).await;
    let at_holder = get(&net, 0, &obj, &[]).await;
    assert_served(&at_holder, &obj, "HIT", "local");

    let via_peer = get(&net, 1, &obj, &[]).await;
    assert_served(&via_peer, &obj, "MISS", "peer");
    assert_eq!(via_peer.header("date"), at_holder.header("date"));
    assert!(
        age(&via_peer) >= age(&at_holder) && age(&at_holder) >= 100,
        "Age at the holder {}, through the peer {}",
        age(&at_holder),
        age(&via_peer)
    );
    wait_stored(&net, 1, 1).await;
    let stored_at_1 = get(&net, 1, &obj, &[]).await;
    assert_served(&stored_at_1, &obj, "HIT", "local");
    assert_eq!(stored_at_1.header("date"), at_holder.header("date"));
    assert!(age(&stored_at_1) >= age(&via_peer));
    assert_eq!(origin_counts(origin, &obj), (1, 0));
}

/// RFC 9111 §5.2.1.3 across nodes: a peer's copy is only taken if it is fresh enough for the
/// request; one with 5 s of freshness left does not satisfy `min-fresh=30`, one with an hour
/// does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_copy_not_fresh_enough_for_the_request_is_skipped() {
    let net = launch(2, &[]).await;
    let origin = &net.testnet.origin;
    let nearly_stale = Object::new(
        origin,
        "peer-min-fresh-short",
        "Cache-Control=max-age%3D100&Age=95",
    );
    let lasting = Object::new(
        origin,
        "peer-min-fresh-long",
        "Cache-Control=max-age%3D3600&Age=95",
    );
    for (i, obj) in [&nearly_stale, &lasting].into_iter().enumerate() {
        assert_served(&get(&net, 0, obj, &[]).await, obj, "MISS", "origin");
        wait_stored(&net, 0, i as u64 + 1).await;
    }
    wait_announced(&net, 0, 2).await;

    let min_fresh = [("cache-control", "min-fresh=30")];
    let got = get(&net, 1, &nearly_stale, &min_fresh).await;
    assert_served(&got, &nearly_stale, "MISS", "origin");
    assert_eq!(origin_counts(origin, &nearly_stale), (2, 0));
    let got = get(&net, 1, &lasting, &min_fresh).await;
    assert_served(&got, &lasting, "MISS", "peer");
    assert_eq!(origin_counts(origin, &lasting), (1, 0));
}

/// Polls until the origin has been asked `want` times (a background revalidation runs after
/// the response that triggered it).
async fn wait_origin(origin: &Origin, obj: &Object, want: (u64, u64)) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while origin_counts(origin, obj) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: origin counts {:?}, want {want:?}",
            obj.path,
            origin_counts(origin, obj)
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// RFC 5861 §3: within `stale-while-revalidate`, a stale copy is served at once (with its real
/// `Age`) while the node revalidates it in the background; past the window, or when the
/// response says `must-revalidate` or the client wants something fresher, it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_stale_and_refreshes_in_the_background() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let swr = Object::new(
        origin,
        "swr",
        "Cache-Control=max-age%3D60%2C%20stale-while-revalidate%3D3600&Age=100",
    );
    assert_served(&get(&net, 0, &swr, &[]).await, &swr, "MISS", "origin");
    wait_stored(&net, 0, 1).await;
    let stale = get(&net, 0, &swr, &[]).await;
    assert_served(&stale, &swr, "STALE", "local");
    assert!(age(&stale) >= 100, "Age {}", age(&stale));
    // The background revalidation reaches the origin as a conditional request.
    wait_origin(origin, &swr, (2, 1)).await;
    // A client that wants a fresher copy waits for revalidation instead.
    let strict = get(&net, 0, &swr, &[("cache-control", "max-age=30")]).await;
    assert_served(&strict, &swr, "REVALIDATED", "local");

    // 40 s stale is past a 10 s window.
    let past = Object::new(
        origin,
        "swr-past",
        "Cache-Control=max-age%3D60%2C%20stale-while-revalidate%3D10&Age=100",
    );
    assert_served(&get(&net, 0, &past, &[]).await, &past, "MISS", "origin");
    wait_stored(&net, 0, 2).await;
    assert_served(
        &get(&net, 0, &past, &[]).await,
        &past,
        "REVALIDATED",
        "local",
    );

    let strict_origin = Object::new(
        origin,
        "swr-must-revalidate",
        "Cache-Control=max-age%3D60%2C%20stale-while-revalidate%3D3600%2C%20must-revalidate&Age=100",
    );
    assert_served(
        &get(&net, 0, &strict_origin, &[]).await,
        &strict_origin,
        "MISS",
        "origin",
    );
    wait_stored(&net, 0, 3).await;
    assert_served(
        &get(&net, 0, &strict_origin, &[]).await,
        &strict_origin,
        "REVALIDATED",
        "local",
    );
}

/// RFC 8246: a fresh `immutable` copy is not revalidated when a client reloads (browsers send
/// `max-age=0`); a forced reload (`no-cache`) still revalidates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_copies_are_not_revalidated_on_reload() {
    let net = launch(1, &[]).await;
    let origin = &net.testnet.origin;
    let obj = Object::new(
        origin,
        "immutable",
        "Cache-Control=max-age%3D3600%2C%20immutable",
    );
    assert_served(&get(&net, 0, &obj, &[]).await, &obj, "MISS", "origin");
    wait_stored(&net, 0, 1).await;
    let reload = [("cache-control", "max-age=0")];
    assert_served(&get(&net, 0, &obj, &reload).await, &obj, "HIT", "local");
    let forced = [("cache-control", "no-cache")];
    assert_served(
        &get(&net, 0, &obj, &forced).await,
        &obj,
        "REVALIDATED",
        "local",
    );
    assert_eq!(origin_counts(origin, &obj), (2, 1));

    // Without `immutable` the same reload revalidates.
    let plain = Object::new(origin, "not-immutable", "Cache-Control=max-age%3D3600");
    assert_served(&get(&net, 0, &plain, &[]).await, &plain, "MISS", "origin");
    wait_stored(&net, 0, 2).await;
    assert_served(
        &get(&net, 0, &plain, &reload).await,
        &plain,
        "REVALIDATED",
        "local",
    );
}
