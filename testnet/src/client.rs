//! A minimal HTTP/1.1 client for tests and the demo: one connection per request, optionally
//! through a node used as a forward proxy (absolute-form request target).
//!
//! HTTPS URLs are supported only through a proxy (the node talks TLS to the origin).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::Error;

/// Largest body [`fetch`] keeps in memory; bigger ones should go through
/// [`fetch_digest`], which only hashes them.
pub const MAX_BUFFERED_BODY: usize = 256 * 1024 * 1024;

/// A response whose body was read into memory.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
}

/// A response whose body was hashed while it streamed in, never held whole.
#[derive(Debug, Clone)]
pub struct Digested {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub len: u64,
    pub digest: blake3::Hash,
    /// From sending the request to the response headers.
    pub first_byte: Duration,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
}

/// Header accessors shared by both response kinds.
pub trait ResponseHeaders {
    fn headers(&self) -> &HeaderMap;

    /// A header as text, if present and valid.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers().get(name).and_then(|v| v.to_str().ok())
    }

    /// `X-Cache` (`HIT` / `MISS`).
    fn x_cache(&self) -> Option<&str> {
        self.header("x-cache")
    }

    /// `X-Reef-Source` (`local` / `peer` / `origin`).
    fn source(&self) -> Option<&str> {
        self.header("x-reef-source")
    }
}

impl ResponseHeaders for Fetched {
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

impl ResponseHeaders for Digested {
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

/// Sends `method url` (through `via` if given) and reads the body into memory, failing if
/// it exceeds [`MAX_BUFFERED_BODY`]. The whole exchange must finish within `timeout`.
pub async fn fetch(
    via: Option<SocketAddr>,
    method: Method,
    url: &str,
    timeout: Duration,
) -> Result<Fetched, Error> {
    let work = async {
        let start = Instant::now();
        let (resp, _conn) = send_held(via, method, url).await?;
        read_into_memory(url, resp, start).await
    };
    with_timeout(url, timeout, work).await
}

/// GET `path` of service `host` from the node at `node`, in origin form with `Host: host`
/// (how a client that resolved the service's name to that node asks), body in memory.
pub async fn fetch_service(
    node: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> Result<Fetched, Error> {
    let what = format!("http://{host}{path} at {node}");
    let work = async {
        let start = Instant::now();
        let target = path
            .parse::<Uri>()
            .map_err(|e| Error::http(&what, format!("bad path: {e}")))?;
        let host = HeaderValue::from_str(host).map_err(|e| Error::http(&what, e))?;
        let (resp, _conn) = exchange(&what, &node.to_string(), Method::GET, target, host).await?;
        read_into_memory(&what, resp, start).await
    };
    with_timeout(&what, timeout, work).await
}

async fn read_into_memory(
    url: &str,
    resp: Response<Incoming>,
    start: Instant,
) -> Result<Fetched, Error> {
    let (parts, mut body) = resp.into_parts();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::http(url, format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_BUFFERED_BODY {
                return Err(Error::http(
                    url,
                    format!("body larger than {MAX_BUFFERED_BODY} bytes; use fetch_digest"),
                ));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Fetched {
        status: parts.status,
        headers: parts.headers,
        body: buf.freeze(),
        elapsed: start.elapsed(),
    })
}

/// Like [`fetch`] with GET, but hashes the body with blake3 as it streams in, so any size
/// works. Compare with [`crate::origin::expected_digest`].
pub async fn fetch_digest(
    via: Option<SocketAddr>,
    url: &str,
    timeout: Duration,
) -> Result<Digested, Error> {
    let work = async {
        let start = Instant::now();
        let resp = send(via, Method::GET, url).await?;
        let first_byte = start.elapsed();
        let (parts, mut body) = resp.into_parts();
        let mut hasher = blake3::Hasher::new();
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Error::http(url, format!("reading the body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                hasher.update(&data);
                len += data.len() as u64;
            }
        }
        Ok(Digested {
            status: parts.status,
            headers: parts.headers,
            len,
            digest: hasher.finalize(),
            first_byte,
            elapsed: start.elapsed(),
        })
    };
    with_timeout(url, timeout, work).await
}

async fn with_timeout<T>(
    url: &str,
    timeout: Duration,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Timeout {
                what: format!("HTTP request to {url}"),
                after: timeout,
            })
        })
}

/// Opens a connection and sends the request; returns once the response headers are in.
/// The connection task ends by itself when the body has been read or dropped.
pub async fn send(
    via: Option<SocketAddr>,
    method: Method,
    url: &str,
) -> Result<Response<Incoming>, Error> {
    let (resp, conn) = send_held(via, method, url).await?;
    conn.detach();
    Ok(resp)
}

/// The task driving one client connection. Dropping it closes the connection at once, as a
/// client that gives up does: on a saturated link, a late answer nobody waits for any more
/// would otherwise still take its share of the bandwidth.
struct Connection(Option<tokio::task::JoinHandle<()>>);

impl Connection {
    /// Lets the connection run until its response is read or dropped.
    fn detach(mut self) {
        self.0.take();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// [`send`], with the connection closed when the returned [`Connection`] is dropped.
async fn send_held(
    via: Option<SocketAddr>,
    method: Method,
    url: &str,
) -> Result<(Response<Incoming>, Connection), Error> {
    let uri: Uri = url
        .parse()
        .map_err(|e| Error::http(url, format!("bad URL: {e}")))?;
    let authority = uri
        .authority()
        .ok_or_else(|| Error::http(url, "URL has no host"))?
        .clone();
    let scheme = uri.scheme_str().unwrap_or("http");
    let (connect_to, target) = match via {
        // Absolute-form: the proxy needs the whole URL.
        Some(proxy) => (proxy.to_string(), uri.clone()),
        None => {
            if scheme != "http" {
                return Err(Error::http(url, "direct requests support only http://"));
            }
            let port = authority.port_u16().unwrap_or(80);
            let origin_form = uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .parse::<Uri>()
                .map_err(|e| Error::http(url, e))?;
            (format!("{}:{port}", authority.host()), origin_form)
        }
    };
    let host = HeaderValue::from_str(authority.as_str()).map_err(|e| Error::http(url, e))?;
    exchange(url, &connect_to, method, target, host).await
}

/// One request on a new connection to `connect_to`; returns once the response headers are
/// in. `url` only names the request in errors.
async fn exchange(
    url: &str,
    connect_to: &str,
    method: Method,
    target: Uri,
    host: HeaderValue,
) -> Result<(Response<Incoming>, Connection), Error> {
    let stream = TcpStream::connect(connect_to)
        .await
        .map_err(|e| Error::http(url, format!("connecting to {connect_to}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Error::http(url, format!("HTTP handshake: {e}")))?;
    let conn = Connection(Some(tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "client connection ended with an error");
        }
    })));
    let req = Request::builder()
        .method(method)
        .uri(target)
        .header(header::HOST, host)
        .header(header::USER_AGENT, "reef-testnet")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::http(url, e))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| Error::http(url, format!("sending the request: {e}")))?;
    Ok((resp, conn))
}
