//! `reef peering list|end`: the arrangements of a node's provider, through its admin API.

use http::Method;
use reef_proto::records::ArrangementId;

use crate::admin_client::Admin;
use crate::fetch_cmd::FetchCmdError;

/// Prints one line per arrangement.
pub async fn list(admin: &Admin) -> Result<(), FetchCmdError> {
    let doc = admin.get_json("/api/arrangements").await?;
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

/// Ends arrangement `id` through the node's agent (a mutating call: `admin` carries the token).
pub async fn end(admin: &Admin, id: &str) -> Result<(), FetchCmdError> {
    let id: ArrangementId = id
        .parse()
        .map_err(|e| FetchCmdError::Usage(format!("arrangement id {id:?}: {e}")))?;
    let request = serde_json::json!({ "id": id.to_string() }).to_string();
    admin
        .call(Method::POST, "/api/arrangements/end", Some(request))
        .await?;
    println!("ended {id}");
    Ok(())
}
