//! One request to a node's admin API, for the `reef` commands that talk to a running node
//! (`reef status`, `reef peering list|end`, `reef purge`).

use std::time::Duration;

use http::{Method, Request};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body;
use crate::fetch_cmd::{FetchCmdError, node_addr};

/// An admin API on the same machine or network answers at once; this only bounds a hang.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Admin answers are small JSON documents.
const MAX_ANSWER: usize = 4 << 20;

/// Where the admin API is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct Admin {
    /// `HOST:PORT` (an `http://` prefix is accepted).
    pub addr: String,
    /// Sent as `Authorization: Bearer …` when given (mutating endpoints need it when the node
    /// has an `admin_token`).
    pub token: Option<String>,
}

impl Admin {
    pub fn new(addr: &str, token: Option<String>) -> Admin {
        Admin {
            addr: addr.to_string(),
            token: token.filter(|t| !t.is_empty()),
        }
    }

    /// `GET path` as JSON.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, FetchCmdError> {
        let body = self.call(Method::GET, path, None).await?;
        serde_json::from_slice(&body)
            .map_err(|e| FetchCmdError::Failed(format!("the admin API answered no JSON: {e}")))
    }

    /// One request; a non-2xx answer is an error with its reason. Unreachable: `Failed`
    /// (exit 1); an address that is not one: `Usage` (exit 2).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        json: Option<String>,
    ) -> Result<Vec<u8>, FetchCmdError> {
        let admin = &self.addr;
        let addr = node_addr(admin).map_err(|_| {
            FetchCmdError::Usage(format!(
                "--admin {admin:?} is not an address like 127.0.0.1:9090"
            ))
        })?;
        let failed =
            |what: &str, e: &dyn std::fmt::Display| FetchCmdError::Failed(format!("{what}: {e}"));
        let work = async {
            let stream = TcpStream::connect(&addr).await.map_err(|e| {
                failed(
                    &format!("cannot reach the node's admin API at {addr} (is the node running, and is --admin right?)"),
                    &e,
                )
            })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| failed("HTTP handshake with the admin API", &e))?;
            tokio::spawn(conn);
            let body = match json {
                Some(text) => body::full(text),
                None => body::empty(),
            };
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, &addr)
                .header(http::header::CONTENT_TYPE, "application/json");
            if let Some(token) = &self.token {
                req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let req = req
                .body(body)
                .map_err(|e| failed("building the request", &e))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| failed("request failed", &e))?;
            let status = resp.status();
            let limited = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER);
            let bytes = limited
                .collect()
                .await
                .map_err(|e| failed("reading the answer", &*e))?
                .to_bytes();
            if !status.is_success() {
                let why = String::from_utf8_lossy(&bytes).trim().to_string();
                return Err(FetchCmdError::Failed(format!("{status}: {why}")));
            }
            Ok(bytes.to_vec())
        };
        tokio::time::timeout(ADMIN_TIMEOUT, work)
            .await
            .map_err(|_| {
                FetchCmdError::Failed(format!("no answer from {addr} within {ADMIN_TIMEOUT:?}"))
            })?
    }
}

/// `reef purge`: drops a URL (or every URL under a prefix) from the node's provider's caches.
pub async fn purge(admin: &Admin, url: &str, prefix: bool) -> Result<(), FetchCmdError> {
    reef_proto::CanonicalUrl::parse(url)
        .map_err(|e| FetchCmdError::Usage(format!("URL {url:?}: {e}")))?;
    let key = if prefix { "prefix" } else { "url" };
    let request = serde_json::json!({ key: url }).to_string();
    let body = admin
        .call(Method::POST, "/api/purge", Some(request))
        .await?;
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| FetchCmdError::Failed(format!("the admin API answered no JSON: {e}")))?;
    println!(
        "removed {} objects here; {}",
        answer["removed"],
        if answer["published"] == true {
            "the provider's other nodes were told"
        } else {
            "no other node listens (a node alone)"
        }
    );
    Ok(())
}
