//! Responses that vary (RFC 9111 §4.1): each variant is stored under its own key, served only
//! to requests that select it, shared between nodes, and invalidated together.

use http::Request;
use reef_testnet::origin::{expected_body, variant_seed};

use crate::support::{Fetched, Net, launch, request_via, wait_announced, wait_stored};

const PATH: &str = "/vary/accept-language/3000";

async fn get_lang(net: &Net, node: usize, path: &str, lang: Option<&str>) -> Fetched {
    let url = net.testnet.origin.url(path);
    let mut req = Request::get(&url);
    if let Some(lang) = lang {
        req = req.header("accept-language", lang);
    }
    request_via(net.http(node), req).await
}

fn variant(path: &str, lang: Option<&str>) -> Vec<u8> {
    expected_body(&variant_seed(path, lang), 3000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_variant_is_stored_and_served_only_to_requests_that_select_it() {
    let net = launch(1, &[]).await;

    let en = get_lang(&net, 0, PATH, Some("en")).await;
    assert_eq!((en.status.as_u16(), en.header("x-cache")), (200, "MISS"));
    assert_eq!(en.body, variant(PATH, Some("en")));
    // The URL's variant index and the "en" variant.
    wait_stored(&net, 0, 2).await;

    let fr = get_lang(&net, 0, PATH, Some("fr")).await;
    assert_eq!(fr.header("x-cache"), "MISS");
    assert_eq!(fr.body, variant(PATH, Some("fr")));
    wait_stored(&net, 0, 3).await;
    let none = get_lang(&net, 0, PATH, None).await;
    assert_eq!(none.header("x-cache"), "MISS");
    assert_eq!(none.body, variant(PATH, None));
    wait_stored(&net, 0, 4).await;

    for lang in [Some("en"), Some("fr"), None] {
        let got = get_lang(&net, 0, PATH, lang).await;
        assert_eq!(got.header("x-cache"), "HIT", "{lang:?}");
        assert_eq!(got.body, variant(PATH, lang), "{lang:?}");
        assert!(got.header("vary").contains("accept-language"));
    }
    assert_eq!(net.testnet.origin.hits(PATH), 3);

    // Spelling a list differently selects the same variant.
    let list = "en, fr;q=0.5";
    let first = get_lang(&net, 0, PATH, Some("en,fr;q=0.5")).await;
    assert_eq!(first.body, variant(PATH, Some(list)));
    wait_stored(&net, 0, 5).await;
    let again = get_lang(&net, 0, PATH, Some(" en ,  fr;q=0.5")).await;
    assert_eq!(again.header("x-cache"), "HIT");
    assert_eq!(again.body, variant(PATH, Some(list)));
    assert_eq!(net.testnet.origin.hits(PATH), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_for_different_variants_each_get_their_own() {
    let net = launch(1, &[]).await;
    let path = "/vary/accept-language/2000";
    let langs = [
        Some("en"),
        Some("fr"),
        Some("en"),
        Some("de"),
        Some("fr"),
        None,
    ];
    let url = net.testnet.origin.url(path);
    let node = net.http(0);
    let requests = langs.map(|lang| {
        let url = url.clone();
        tokio::spawn(async move {
            let mut req = Request::get(&url);
            if let Some(lang) = lang {
                req = req.header("accept-language", lang);
            }
            request_via(node, req).await
        })
    });
    for (lang, request) in langs.into_iter().zip(requests) {
        let got = request.await.expect("request task");
        assert_eq!(got.status, 200);
        assert_eq!(
            got.body,
            expected_body(&variant_seed(path, lang), 2000),
            "{lang:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_are_found_through_peers() {
    let net = launch(2, &[]).await;
    get_lang(&net, 0, PATH, Some("en")).await;
    // The index and the variant are both announced.
    wait_announced(&net, 0, 2).await;

    // Node 1 learns from node 0 that the URL varies, then fetches its variant from node 0.
    let en = get_lang(&net, 1, PATH, Some("en")).await;
    assert_eq!(en.source(), "peer");
    assert_eq!(en.body, variant(PATH, Some("en")));
    assert_eq!(net.testnet.origin.hits(PATH), 1);

    // A variant no node holds comes from the origin.
    let de = get_lang(&net, 1, PATH, Some("de")).await;
    assert_eq!(de.source(), "origin");
    assert_eq!(de.body, variant(PATH, Some("de")));
    assert_eq!(net.testnet.origin.hits(PATH), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_method_invalidates_every_variant() {
    let net = launch(1, &[]).await;
    for lang in ["en", "fr"] {
        get_lang(&net, 0, PATH, Some(lang)).await;
    }
    wait_stored(&net, 0, 3).await;
    let url = net.testnet.origin.url(PATH);
    let written = request_via(net.http(0), Request::put(&url)).await;
    assert_eq!(written.status, 204);
    for lang in ["en", "fr"] {
        let got = get_lang(&net, 0, PATH, Some(lang)).await;
        assert_eq!(got.header("x-cache"), "MISS", "{lang}");
        assert_eq!(got.source(), "origin", "{lang}");
        assert_eq!(got.body, variant(PATH, Some(lang)));
    }
    assert_eq!(net.testnet.origin.hits(PATH), 4);
}
