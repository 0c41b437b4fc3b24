//! `reef fetch URL --via http://NODE`: one request through a node, as a forward proxy.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use http::{Request, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use reef_proto::CanonicalUrl;
use tokio::net::TcpStream;

use crate::body;

/// Enough for a node on another continent to answer headers; bodies stream without a limit.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum FetchCmdError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

pub struct FetchArgs {
    pub url: String,
    pub via: String,
    pub output: Option<PathBuf>,
    pub verbose: bool,
}

pub async fn run(args: FetchArgs) -> Result<(), FetchCmdError> {
    let url = CanonicalUrl::parse(&args.url)
        .map_err(|e| FetchCmdError::Usage(format!("URL {:?}: {e}", args.url)))?;
    let node = node_addr(&args.via)?;
    let failed =
        |what: &str, e: &dyn std::fmt::Display| FetchCmdError::Failed(format!("{what}: {e}"));
    let started = Instant::now();

    let stream = TcpStream::connect(&node)
        .await
        .map_err(|e| failed(&format!("cannot connect to {node}"), &e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed("HTTP handshake with the node", &e))?;
    tokio::spawn(conn);
    // Absolute-form request target: the node acts as a forward proxy.
    let req = Request::get(url.to_uri())
        .header(http::header::HOST, url.authority())
        .body(body::empty())
        .map_err(|e| failed("building the request", &e))?;
    let resp = tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| {
            FetchCmdError::Failed(format!(
                "no response from {node} within {RESPONSE_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| failed("request failed", &e))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let first_byte = started.elapsed();

    let mut body = resp.into_body();
    let mut out: Box<dyn Write> = match (&args.output, status.is_success()) {
        (Some(path), true) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| failed(&format!("cannot create {}", path.display()), &e))?,
        )),
        (_, true) => Box::new(std::io::stdout().lock()),
        (_, false) => Box::new(std::io::stderr().lock()),
    };
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| failed("body", &e))?;
        if let Ok(data) = frame.into_data() {
            bytes += data.len() as u64;
            out.write_all(&data)
                .map_err(|e| failed("writing output", &e))?;
        }
    }
    out.flush().map_err(|e| failed("writing output", &e))?;
    drop(out);

    if args.verbose {
        let h = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        eprintln!(
            "{} {status} via {node}: source={} cache={} age={} via=\"{}\" bytes={bytes} first-byte={:.1}ms total={:.1}ms",
            url,
            h("x-reef-source"),
            h("x-cache"),
            h("age"),
            h("via"),
            first_byte.as_secs_f64() * 1e3,
            started.elapsed().as_secs_f64() * 1e3,
        );
    }
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        Ok(())
    } else {
        Err(FetchCmdError::Failed(format!(
            "{url}: the node answered {status}"
        )))
    }
}

/// Accepts `http://host:port`, `host:port`.
pub(crate) fn node_addr(via: &str) -> Result<String, FetchCmdError> {
    let bad = || {
        FetchCmdError::Usage(format!(
            "--via {via:?} is not a node address like http://127.0.0.1:8080"
        ))
    };
    let uri: Uri = if via.contains("://") {
        via.parse().map_err(|_| bad())?
    } else {
        format!("http://{via}").parse().map_err(|_| bad())?
    };
    if uri.scheme_str() != Some("http") {
        return Err(FetchCmdError::Usage(format!(
            "--via {via:?}: nodes are reached over http://"
        )));
    }
    let authority = uri.authority().ok_or_else(bad)?;
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    Ok(match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_forms() {
        assert_eq!(
            node_addr("http://127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(node_addr("127.0.0.1:81").unwrap(), "127.0.0.1:81");
        assert_eq!(node_addr("http://[::1]:81/").unwrap(), "[::1]:81");
        assert_eq!(node_addr("http://node.example").unwrap(), "node.example:80");
        assert!(matches!(
            node_addr("https://x:1"),
            Err(FetchCmdError::Usage(_))
        ));
        assert!(matches!(
            node_addr("not a url"),
            Err(FetchCmdError::Usage(_))
        ));
    }
}
