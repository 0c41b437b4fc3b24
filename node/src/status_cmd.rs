//! `reef status [--admin ADDR]`: a running node's state as a few readable lines, from its
//! admin API (`/api/status`, `/api/arrangements`, `/api/load`).

use std::fmt::Write as _;

use serde_json::Value;

use crate::admin_client::Admin;
use crate::fetch_cmd::FetchCmdError;

/// Prints the summary; an unreachable node is `Failed` (exit 1).
pub async fn run(admin: &Admin) -> Result<(), FetchCmdError> {
    let status = admin.get_json("/api/status").await?;
    let arrangements = admin.get_json("/api/arrangements").await?;
    let load = admin.get_json("/api/load").await?;
    print!("{}", summary(&status, &arrangements, &load));
    Ok(())
}

/// The summary, one topic a line (arrangements one more line each).
pub fn summary(status: &Value, arrangements: &Value, load: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let p = &status["provider"];
    let provider_id = s(&p["id"]);
    let names: Vec<(String, String)> = load["providers"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|x| Some((s(&x["id"]), x["name"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let name_of = |id: &str| {
        names
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, name)| name.clone())
            .or_else(|| (id == provider_id).then(|| s(&p["name"])))
            .unwrap_or_else(|| format!("provider {}…", id.get(..12).unwrap_or(id)))
    };
    let _ = writeln!(out, "node          {}", s(&status["peer_id"]));
    let _ = writeln!(
        out,
        "provider      {} ({}, id {}…)",
        s(&p["name"]),
        if p["certified"] == true {
            "certified"
        } else {
            "uncertified: its own provider"
        },
        provider_id.get(..16).unwrap_or(&provider_id)
    );
    let _ = writeln!(out, "region        {}", s(&status["region"]));
    let _ = writeln!(
        out,
        "addresses     http {} · admin {}",
        s(&status["http"]),
        s(&status["admin"])
    );
    let peers = status["connected_peers"].as_array().map_or(0, Vec::len);
    let _ = writeln!(
        out,
        "overlay       {} · {peers} peer{} connected · routing table {}",
        if status["joined"] == true {
            "joined"
        } else {
            "not joined yet"
        },
        if peers == 1 { "" } else { "s" },
        n(&status["routing_table_size"])
    );
    let c = &status["cache"];
    let _ = writeln!(
        out,
        "cache         {} objects · {} of {} · {} purges applied",
        n(&c["objects"]),
        bytes(n(&c["bytes"])),
        bytes(n(&c["max_bytes"])),
        n(&status["purges"]["applied"]),
    );
    let l = &status["load"];
    let own = &l["own"];
    let _ = writeln!(
        out,
        "load          {} req/s · {}/s out · utilisation {} · demand {} · hit ratio {} · {} nodes in the load table",
        n(&own["req_per_s"]),
        bytes(n(&own["egress_bytes_per_s"])),
        permille(n(&own["utilisation_permille"])),
        permille(n(&own["demand_permille"])),
        permille(n(&own["hit_ratio_permille"])),
        n(&l["nodes"]),
    );
    let list = arrangements["arrangements"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let active = list.iter().filter(|a| a["status"] == "active").count();
    let _ = writeln!(
        out,
        "arrangements  {active} active · {} ended",
        list.len() - active
    );
    for a in &list {
        let primary = a["role"] == "primary";
        let other = name_of(&s(if primary { &a["peer"] } else { &a["primary"] }));
        let usage = if primary {
            format!("{} requests sent to the peer", n(&a["redirected"]))
        } else {
            format!(
                "served {} requests, {}",
                n(&a["served"]["requests"]),
                bytes(n(&a["served"]["bytes"]))
            )
        };
        let sla = match a["sla"].as_object() {
            Some(sla) if sla.get("breach").is_some_and(|b| !b.is_null()) => {
                format!(" · SLA breached ({})", s(&sla["breach"]))
            }
            Some(_) => " · SLA kept".to_string(),
            None => String::new(),
        };
        let id = s(&a["id"]);
        let _ = writeln!(
            out,
            "  {}  {} {} {}{} with {other} · share {:.0}% · {usage}{sla}",
            id.get(..8).unwrap_or(&id),
            s(&a["basis"]).replace('_', "-"),
            s(&a["role"]),
            s(&a["status"]),
            a["end_reason"]
                .as_str()
                .map_or(String::new(), |r| format!(" ({r})")),
            a["share"].as_f64().unwrap_or(0.0) * 100.0,
        );
    }
    let dns = &status["dns"];
    if dns.is_null() {
        let _ = writeln!(out, "dns           off");
    } else {
        let c = &dns["counts"];
        let _ = writeln!(
            out,
            "dns           {} zone {} · {} queries · {} answered · {} nxdomain · {} refused",
            s(&dns["addr"]),
            s(&dns["zone"]),
            n(&c["queries"]),
            n(&c["answered"]),
            n(&c["nxdomain"]),
            n(&c["refused"]),
        );
    }
    out
}

fn permille(v: u64) -> String {
    format!("{:.1}%", v as f64 / 10.0)
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_the_node_its_arrangements_and_dns() {
        let ours = "ab".repeat(32);
        let theirs = "cd".repeat(32);
        let status = serde_json::json!({
            "peer_id": "12D3KooWExample",
            "provider": {"id": ours, "name": "acme", "certified": true},
            "region": "eu", "http": "127.0.0.1:8080", "admin": "127.0.0.1:9090",
            "connected_peers": ["a", "b"], "routing_table_size": 2, "joined": true,
            "cache": {"objects": 3, "bytes": 3072, "max_bytes": 1073741824u64},
            "purges": {"applied": 1},
            "load": {"nodes": 4, "own": {"req_per_s": 12, "egress_bytes_per_s": 2048,
                "utilisation_permille": 12, "demand_permille": 15, "hit_ratio_permille": 750}},
            "dns": {"addr": "127.0.0.1:5353", "zone": "cdn.test",
                "counts": {"queries": 9, "answered": 8, "nxdomain": 1, "refused": 0}},
        });
        let arrangements = serde_json::json!({"arrangements": [{
            "id": "0123456789abcdef0123456789abcdef", "basis": "long_term", "role": "primary",
            "status": "active", "end_reason": null, "primary": ours, "peer": theirs,
            "share": 0.3, "served": {"requests": 0, "bytes": 0}, "redirected": 7, "sla": null,
        }]});
        let load = serde_json::json!({"providers": [{"id": theirs, "name": "beta"}]});
        let text = summary(&status, &arrangements, &load);
        for want in [
            "node          12D3KooWExample",
            "provider      acme (certified, id abababababababab…)",
            "region        eu",
            "overlay       joined · 2 peers connected · routing table 2",
            "cache         3 objects · 3.0 KiB of 1.0 GiB",
            "load          12 req/s · 2.0 KiB/s out · utilisation 1.2% · demand 1.5% · hit ratio 75.0% · 4 nodes",
            "arrangements  1 active · 0 ended",
            "  01234567  long-term primary active with beta · share 30% · 7 requests sent to the peer",
            "dns           127.0.0.1:5353 zone cdn.test · 9 queries · 8 answered · 1 nxdomain",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        let off = summary(
            &serde_json::json!({"dns": null}),
            &serde_json::json!({}),
            &serde_json::json!({}),
        );
        assert!(off.contains("dns           off"), "{off}");
        assert!(off.contains("arrangements  0 active · 0 ended"), "{off}");
    }
}
