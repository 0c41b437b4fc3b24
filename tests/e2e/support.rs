//! Shared helpers: launching a testnet of the real binary and talking HTTP to its nodes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use reef_testnet::{Options, Testnet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Generous bound on any single request in a test; a hang fails the test instead of the run.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub fn reef_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_reef"))
}

pub struct Net {
    pub testnet: Testnet,
    pub dir: tempfile::TempDir,
}

pub async fn launch(nodes: usize, extra_args: &[&str]) -> Net {
    launch_with_env(nodes, extra_args, &[]).await
}

pub async fn launch_with_env(nodes: usize, extra_args: &[&str], env: &[(&str, &str)]) -> Net {
    launch_options(nodes, 1, extra_args, env, &[], false).await
}

/// Nodes of one provider with home routing on (the node's default): a cold miss goes to the
/// key's home node. The other helpers turn it off, because which node is a key's home depends
/// on the nodes' random peer ids, and their tests assert where each response came from.
pub async fn launch_home(nodes: usize) -> Net {
    launch_inner(nodes, 1, &[], &[], &[], false, true).await
}

/// [`launch_home`] with the provider's config file (`{origin}` replaced as for
/// [`launch_configured`]).
pub async fn launch_home_configured(nodes: usize, config: &str) -> Net {
    launch_inner(nodes, 1, &[], &[], &[config], false, true).await
}

/// Waits until every node's load table lists every node, so that they all agree on each
/// key's home.
pub async fn wait_tables_full(net: &Net) {
    let n = net.testnet.nodes.len() as u64;
    for node in &net.testnet.nodes {
        node.wait_status("load table lists every node", JOIN_TIMEOUT, |s| {
            s["load"]["nodes"].as_u64() == Some(n)
        })
        .await
        .expect("load tables fill");
    }
}

/// Nodes of `providers` providers (round-robin), each certified with its provider's key.
pub async fn launch_providers(nodes: usize, providers: usize, extra_args: &[&str]) -> Net {
    launch_options(nodes, providers, extra_args, &[], &[], false).await
}

/// Like [`launch_providers`], with a config file per provider (`{origin}` is replaced by the
/// demo origin's base URL; see `reef_testnet::Options::provider_configs`).
pub async fn launch_configured(nodes: usize, providers: usize, configs: &[&str]) -> Net {
    launch_options(nodes, providers, &[], &[], configs, false).await
}

/// Like [`launch_configured`], with every node's DNS server on (`--dns 127.0.0.x:0`); each
/// provider's config needs a `[dns] zone`.
pub async fn launch_dns(nodes: usize, providers: usize, configs: &[&str]) -> Net {
    launch_options(nodes, providers, &[], &[], configs, true).await
}

async fn launch_options(
    nodes: usize,
    providers: usize,
    extra_args: &[&str],
    env: &[(&str, &str)],
    configs: &[&str],
    dns: bool,
) -> Net {
    launch_inner(nodes, providers, extra_args, env, configs, dns, false).await
}

async fn launch_inner(
    nodes: usize,
    providers: usize,
    extra_args: &[&str],
    env: &[(&str, &str)],
    configs: &[&str],
    dns: bool,
    home_routing: bool,
) -> Net {
    let mut extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
    if !home_routing {
        extra_args.extend(["--home-routing".to_string(), "false".to_string()]);
    }
    let dir = tempfile::Builder::new()
        .prefix("reef-e2e-")
        .tempdir()
        .expect("tempdir");
    let testnet = Testnet::launch(Options {
        bin: reef_bin(),
        nodes,
        providers,
        dir: dir.path().to_path_buf(),
        extra_args,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        provider_configs: configs.iter().map(|c| c.to_string()).collect(),
        dns,
        links: Default::default(),
    })
    .await
    .expect("testnet launches");
    Net { testnet, dir }
}

impl Net {
    pub fn http(&self, node: usize) -> SocketAddr {
        self.testnet.nodes[node].runtime().http
    }
}

pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Fetched {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn source(&self) -> &str {
        self.header("x-reef-source")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GET `url` through the node at `node` as a forward proxy (absolute-form request target).
pub async fn get_via(node: SocketAddr, url: &str) -> Fetched {
    request_via(node, Request::get(url)).await
}

pub async fn request_via(node: SocketAddr, builder: http::request::Builder) -> Fetched {
    try_request(node, builder, REQUEST_TIMEOUT)
        .await
        .expect("request finished in time")
}

/// Like [`request_via`], but a refused connection, a reset or a timeout is an `Err` saying
/// which, for tests where a node that fails is part of the plot.
pub async fn try_request(
    node: SocketAddr,
    builder: http::request::Builder,
    timeout: Duration,
) -> Result<Fetched, String> {
    let req = builder
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(timeout, async {
        let stream = TcpStream::connect(node)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("response: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Fetched {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    })
    .await
    .map_err(|_| format!("no answer within {timeout:?}"))?
}

/// Sends raw bytes and returns the raw response (for requests a client library would refuse to send).
pub async fn raw_exchange(node: SocketAddr, request: &[u8]) -> String {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut stream = TcpStream::connect(node).await.expect("connect");
        stream.write_all(request).await.expect("write");
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("raw exchange finished in time")
}

/// Waits until node `node` has announced at least `count` objects in the DHT, so that the
/// next node to miss can find them (announcing happens after the response, in the background).
pub async fn wait_announced(net: &Net, node: usize, count: u64) {
    wait_at_least(net, node, ["announcements", "done"], count).await;
}

/// Waits until node `node` has committed at least `count` objects to its cache (a response
/// streams to the client while it is written; the commit follows right after).
pub async fn wait_stored(net: &Net, node: usize, count: u64) {
    wait_at_least(net, node, ["cache", "objects"], count).await;
}

/// Waits until the counter at `field` of the node's `/api/status` reaches `count`.
async fn wait_at_least(net: &Net, node: usize, field: [&str; 2], count: u64) {
    let what = field.join(".");
    net.testnet.nodes[node]
        .wait_status(&what, JOIN_TIMEOUT, |s| {
            s[field[0]][field[1]].as_u64().unwrap_or(0) >= count
        })
        .await
        .unwrap_or_else(|e| panic!("{what} never reached {count}: {e}"));
}

/// GETs a large object through a node, checking its bytes against the origin's as they stream.
pub async fn stream_matches(node: SocketAddr, url: &str, size: u64) -> bool {
    let got = reef_testnet::client::fetch_digest(Some(node), url, Duration::from_secs(600))
        .await
        .expect("streamed fetch");
    let path = url
        .splitn(4, '/')
        .nth(3)
        .map(|p| format!("/{p}"))
        .unwrap_or_default();
    got.status == StatusCode::OK
        && got.len == size
        && got.digest == reef_testnet::origin::expected_digest(&path, size)
}
