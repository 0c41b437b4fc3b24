//! HTTPS origins (verified against a test CA the node is told to trust) and h2c clients.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use reef_testnet::origin::{Origin, expected_body};

use crate::support::{get_via, launch, launch_with_env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origin_is_fetched_and_verified_with_the_trusted_ca() {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca =
        rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("key"))
            .expect("test CA");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let origin = Origin::start_tls(
        "127.0.0.1:0".parse().expect("addr"),
        &leaf.pem(),
        &leaf_key.serialize_pem(),
    )
    .await
    .expect("TLS origin");

    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write CA");
    let trusting = launch_with_env(
        1,
        &[],
        &[("SSL_CERT_FILE", ca_file.to_str().expect("utf8"))],
    )
    .await;
    let path = "/bytes/7000";
    let got = get_via(trusting.http(0), &origin.url(path)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.source(), "origin");
    assert_eq!(got.body, expected_body(path, 7000));

    // A node that does not trust the test CA refuses the origin's certificate.
    let sceptical = launch(1, &[]).await;
    let got = get_via(sceptical.http(0), &origin.url(path)).await;
    assert_eq!(got.status, 502, "{}", got.text());
    assert_eq!(
        origin.hits(path),
        1,
        "the failed handshake never reached HTTP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_are_served() {
    let net = launch(1, &[]).await;
    let path = "/bytes/4096";
    let url = net.testnet.origin.url(path);
    let stream = tokio::net::TcpStream::connect(net.http(0))
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let resp = sender
        .send_request(Request::get(&url).body(Empty::<Bytes>::new()).expect("req"))
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-reef-source"], "origin");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, expected_body(path, 4096));
}
