//! `reef peering list|end`: the arrangements of a node's provider, through its admin API.

use std::time::Duration;

use http::{Method, Request};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use reef_proto::records::ArrangementId;
use tokio::net::TcpStream;

use crate::body;
use crate::fetch_cmd::{FetchCmdError, node_addr};

/// An admin API on the same machine or network answers at once; this only bounds a hang.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Admin answers are small JSON documents.
const MAX_ANSWER: usize = 4 << 20;

/// Prints one line per arrangement.
pub async fn list(admin: &str) -> Result<(), FetchCmdError> {
    let body = call(admin, Method::GET, "/api/arrangements", None).await?;
    let doc: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| FetchCmdError::Failed(format!("the admin API answered no JSON: {e}")))?;
    let list = doc["arrangements"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no arrangements");
    }
    for a in list {
        let s = |k: &str| a[k].as_str().unwrap_or("-").to_string();
        let other = if a["role"] == "primary" {
            s("peer")
        } else {
            s("primary")
        };
        println!(
            "{}  {:<10} {:<7} {:<6} with {}…  share {}  served {} req / {} bytes  redirected {}",
            s("id"),
            s("basis"),
            s("role"),
            s("status"),
            other.get(..12).unwrap_or(&other),
            a["share"],
            a["served"]["requests"],
            a["served"]["bytes"],
            a["redirected"],
        );
    }
    Ok(())
}

/// Ends arrangement `id` through the node's agent.
pub async fn end(admin: &str, id: &str) -> Result<(), FetchCmdError> {
    let id: ArrangementId = id
        .parse()
        .map_err(|e| FetchCmdError::Usage(format!("arrangement id {id:?}: {e}")))?;
    let request = serde_json::json!({ "id": id.to_string() }).to_string();
    call(admin, Method::POST, "/api/arrangements/end", Some(request)).await?;
    println!("ended {id}");
    Ok(())
}

/// One request to the admin API at `admin`; a non-2xx answer is an error with its reason.
async fn call(
    admin: &str,
    method: Method,
    path: &str,
    json: Option<String>,
) -> Result<Vec<u8>, FetchCmdError> {
    let addr = node_addr(admin).map_err(|_| {
        FetchCmdError::Usage(format!(
            "--admin {admin:?} is not an address like 127.0.0.1:9090"
        ))
    })?;
    let failed =
        |what: &str, e: &dyn std::fmt::Display| FetchCmdError::Failed(format!("{what}: {e}"));
    let work = async {
        let stream = TcpStream::connect(&addr)
            .await
            .map_err(|e| failed(&format!("cannot connect to {addr}"), &e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed("HTTP handshake with the admin API", &e))?;
        tokio::spawn(conn);
        let body = match json {
            Some(text) => body::full(text),
            None => body::empty(),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &addr)
            .header(http::header::CONTENT_TYPE, "application/json")
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
