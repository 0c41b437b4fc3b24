//! N nodes of K providers plus an origin, on loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::link::Link;
use crate::node::NodeProcess;
use crate::{Error, NodeSpec, Origin};

/// How long every node gets to report `joined` after all are up: loopback Kademlia
/// bootstrap takes well under a second, but a debug build of 50+ nodes on 2 cores needs
/// headroom.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Nodes started at once after the bootstrap nodes: each start is a fork/exec plus key and
/// cache setup; more at once only thrash a small machine.
const SPAWN_CONCURRENCY: usize = 16;

/// Nodes on 127.0.0.x (x = 10..250) before moving on to 127.0.1.x and up.
const FIRST_OCTET_NODES: usize = 240;

/// Usable host numbers in each following /24 (1..=254).
const HOSTS_PER_BLOCK: usize = 254;

/// What to launch.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `reef` binary (see [`crate::locate_reef_binary`]).
    pub bin: PathBuf,
    /// Number of nodes (≥ 1).
    pub nodes: usize,
    /// Number of providers (1 ≤ K ≤ nodes), assigned round-robin. Each is a real provider
    /// key, made with `reef provider init` in `DIR/providers/p<k>.key` (reused if present),
    /// and its nodes run with `--provider-key`, so they are certified members of it.
    pub providers: usize,
    /// Root directory: `DIR/node-<i>/` per node, `DIR/providers/`, `DIR/manifest.json`.
    pub dir: PathBuf,
    /// Appended to every node's command line.
    pub extra_args: Vec<String>,
    /// Extra environment for every node.
    pub env: Vec<(String, String)>,
    /// Per provider (index k for provider `p<k>`): a config file (TOML) for its nodes, the
    /// provider's policy repository. `{origin}` is replaced with the demo origin's base URL
    /// (`http://127.0.0.1:PORT`), so services can point at it, and `{provider:K}` with the id
    /// of provider `p<K>`, so policies can name partners. Written to
    /// `DIR/providers/p<k>.toml` and given as `--config`; providers past the end get none.
    pub provider_configs: Vec<String>,
    /// Start every node's DNS server on its own loopback address, at a port the kernel picks
    /// (`--dns 127.0.0.x:0`); the node reports the bound address in `runtime.json` and the
    /// manifest lists it. Each node needs a `[dns] zone` in its provider's config.
    pub dns: bool,
    /// Links of limited bandwidth in front of the nodes and the origin (none by default).
    pub links: Links,
}

/// Bandwidth limits for a testnet: each is a [`Link`] (a relay on its own address passing at
/// most so many bytes a second each way) in front of a server.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// Per provider (index k for `p<k>`): bytes/s of each of its nodes' links. A node with a
    /// link advertises it with `--public-http`, so clients, redirects and peers all cross it.
    /// Providers past the end have none.
    pub node_bytes_per_s: Vec<u64>,
    /// Bytes/s of the origin's link; services' `{origin}` is then the link's address.
    pub origin_bytes_per_s: Option<u64>,
}

/// A running testnet. Dropping it kills every node (SIGKILL) and the origin;
/// [`Testnet::shutdown`] stops them gracefully.
#[derive(Debug)]
pub struct Testnet {
    pub origin: Origin,
    pub nodes: Vec<NodeProcess>,
    dir: PathBuf,
    /// Per node, its link if it has one (see [`Links`]).
    node_links: Vec<Option<Link>>,
    origin_link: Option<Link>,
}

/// `DIR/manifest.json`: what a human or a script needs to talk to the testnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `127.0.0.1:PORT`.
    pub origin: String,
    pub nodes: Vec<ManifestNode>,
}

/// One node in the [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestNode {
    pub name: String,
    pub peer_id: String,
    /// The provider's name.
    pub provider: String,
    /// The provider's id (hex public key), as the node reports it.
    #[serde(default)]
    pub provider_id: String,
    pub region: String,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// The node's DNS server (UDP and TCP), when the testnet starts one ([`Options::dns`]).
    pub dns: Option<SocketAddr>,
    /// Listen multiaddrs with `/p2p/` suffix.
    pub p2p: Vec<String>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

/// Loopback address of node `i`: 127.0.0.(10+i) for the first 240, then 127.0.1.1,
/// 127.0.1.2, … (254 per /24, skipping .0 and .255).
pub fn node_ip(i: usize) -> Result<Ipv4Addr, Error> {
    if i < FIRST_OCTET_NODES {
        return Ok(Ipv4Addr::new(127, 0, 0, (10 + i) as u8));
    }
    let j = i - FIRST_OCTET_NODES;
    let block = 1 + j / HOSTS_PER_BLOCK;
    let host = 1 + j % HOSTS_PER_BLOCK;
    match (u8::try_from(block), u8::try_from(host)) {
        (Ok(block), Ok(host)) => Ok(Ipv4Addr::new(127, 0, block, host)),
        _ => Err(Error::InvalidOptions(format!(
            "node {i} does not fit in 127.0.0.0/16"
        ))),
    }
}

/// Provider and region of node `i` among `providers`: providers round-robin
/// (`p0..p{K-1}`), regions alternate by provider (`r0` for even, `r1` for odd).
pub fn provider_region(i: usize, providers: usize) -> (String, String) {
    let p = i % providers.max(1);
    (format!("p{p}"), format!("r{}", p % 2))
}

/// Where the testnet in `dir` keeps the key of provider `p` (named `p<p>`).
pub fn provider_key_path(dir: &Path, p: usize) -> PathBuf {
    dir.join("providers").join(format!("p{p}.key"))
}

/// Makes each provider's key with the real `reef provider init` (the node owns the file
/// format), or reuses the one a previous run left in `dir`.
async fn provider_keys(bin: &Path, dir: &Path, providers: usize) -> Result<(), Error> {
    for p in 0..providers {
        let path = provider_key_path(dir, p);
        if path.exists() {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        let out = tokio::process::Command::new(bin)
            .args(["provider", "init", "--name", &format!("p{p}"), "--out"])
            .arg(&path)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| Error::io(format!("running {} provider init", bin.display()), e))?;
        if !out.status.success() {
            return Err(Error::ProviderKey {
                path,
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}

/// Writes each provider's config file with the placeholders filled in; their paths, by
/// provider.
fn provider_configs(opts: &Options, origin: &str) -> Result<Vec<PathBuf>, Error> {
    if opts.provider_configs.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::new();
    for p in 0..opts.providers {
        ids.push((format!("{{provider:{p}}}"), provider_id(&opts.dir, p)?));
    }
    let mut paths = Vec::new();
    for (p, text) in opts
        .provider_configs
        .iter()
        .enumerate()
        .take(opts.providers)
    {
        let mut text = text.replace("{origin}", origin.trim_end_matches('/'));
        for (placeholder, id) in &ids {
            text = text.replace(placeholder, id);
        }
        let path = opts.dir.join("providers").join(format!("p{p}.toml"));
        std::fs::write(&path, text)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        paths.push(path);
    }
    Ok(paths)
}

/// The id of provider `p`, as its key file (from `reef provider init`) states it.
pub fn provider_id(dir: &Path, p: usize) -> Result<String, Error> {
    let path = provider_key_path(dir, p);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let file: toml::Table = toml::from_str(&text).map_err(|e| Error::ProviderKey {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    match file.get("id").and_then(|v| v.as_str()) {
        Some(id) => Ok(id.to_string()),
        None => Err(Error::ProviderKey {
            path,
            reason: "no id in the key file".into(),
        }),
    }
}

impl Testnet {
    /// Starts the origin on 127.0.0.1:0, then node 0, then node 1 bootstrapping from node 0,
    /// then the others in parallel bootstrapping from nodes 0 and 1; waits until every node
    /// is joined (a single node: until its admin API answers); writes `DIR/manifest.json`.
    /// On failure everything started so far is killed.
    pub async fn launch(opts: Options) -> Result<Testnet, Error> {
        if opts.nodes == 0 {
            return Err(Error::InvalidOptions("at least one node is needed".into()));
        }
        if opts.providers == 0 || opts.providers > opts.nodes {
            return Err(Error::InvalidOptions(format!(
                "providers must be between 1 and the number of nodes ({}), got {}",
                opts.nodes, opts.providers
            )));
        }
        if opts.extra_args.iter().any(|a| a == "--mdns") {
            return Err(Error::InvalidOptions(
                "--mdns would join every testnet on this host into one".into(),
            ));
        }
        let specs = (0..opts.nodes)
            .map(|i| spec_for(&opts, i))
            .collect::<Result<Vec<_>, _>>()?;
        std::fs::create_dir_all(&opts.dir)
            .map_err(|e| Error::io(format!("creating {}", opts.dir.display()), e))?;
        provider_keys(&opts.bin, &opts.dir, opts.providers).await?;

        let origin = Origin::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        info!(addr = %origin.addr(), "origin up");
        let origin_link = match opts.links.origin_bytes_per_s {
            Some(rate) => {
                let link = Link::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), rate).await?;
                link.connect_to(origin.addr());
                Some(link)
            }
            None => None,
        };
        let origin_url = match &origin_link {
            Some(link) => format!("http://{}", link.addr()),
            None => origin.url(""),
        };
        let configs = provider_configs(&opts, &origin_url)?;
        let mut node_links = Vec::with_capacity(opts.nodes);
        for i in 0..opts.nodes {
            node_links.push(match opts.links.node_bytes_per_s.get(i % opts.providers) {
                Some(rate) => Some(Link::start(SocketAddr::from((node_ip(i)?, 0)), *rate).await?),
                None => None,
            });
        }
        let specs = specs.into_iter().enumerate().map(|(i, mut spec)| {
            if let Some(path) = configs.get(i % opts.providers) {
                spec.extra_args
                    .extend(["--config".to_string(), path.display().to_string()]);
            }
            if let Some(link) = &node_links[i] {
                spec.extra_args
                    .extend(["--public-http".to_string(), link.addr().to_string()]);
            }
            spec
        });

        let mut specs = specs.into_iter();
        let mut nodes = Vec::with_capacity(opts.nodes);
        let mut bootstrap = Vec::new();
        // Nodes 0 and 1 one after the other: the rest bootstrap from both, so losing
        // node 0 later does not cut anyone off.
        for spec in specs.by_ref().take(2) {
            let spec = NodeSpec {
                bootstrap: bootstrap.clone(),
                ..spec
            };
            let node = NodeProcess::spawn(spec).await?;
            bootstrap.extend(node.runtime().listen_addrs.iter().cloned());
            nodes.push(node);
        }
        let rest: Vec<NodeProcess> = futures::stream::iter(specs.map(|spec| {
            NodeProcess::spawn(NodeSpec {
                bootstrap: bootstrap.clone(),
                ..spec
            })
        }))
        .buffered(SPAWN_CONCURRENCY)
        .try_collect()
        .await?;
        nodes.extend(rest);
        for (node, link) in nodes.iter().zip(&node_links) {
            if let Some(link) = link {
                link.connect_to(node.runtime().http);
            }
        }
        info!(
            nodes = nodes.len(),
            "all nodes started; waiting until they joined"
        );

        if nodes.len() == 1 {
            nodes[0]
                .wait_status("answering", JOIN_TIMEOUT, |_| true)
                .await?;
        } else {
            let waits = nodes.iter().map(|n| n.wait_joined(JOIN_TIMEOUT));
            futures::future::try_join_all(waits).await?;
        }

        let testnet = Testnet {
            origin,
            nodes,
            dir: opts.dir,
            node_links,
            origin_link,
        };
        testnet.write_manifest()?;
        info!(manifest = %testnet.manifest_path().display(), "testnet ready");
        Ok(testnet)
    }

    /// Where clients reach node `i`: its link if it has one, else its HTTP address. (A
    /// restarted node gets a new port its link does not follow.)
    pub fn public_http(&self, i: usize) -> SocketAddr {
        match self.node_links.get(i).and_then(Option::as_ref) {
            Some(link) => link.addr(),
            None => self.nodes[i].runtime().http,
        }
    }

    /// Node `i`'s link, if it has one.
    pub fn node_link(&self, i: usize) -> Option<&Link> {
        self.node_links.get(i).and_then(Option::as_ref)
    }

    /// The origin's link, if it has one.
    pub fn origin_link(&self) -> Option<&Link> {
        self.origin_link.as_ref()
    }

    /// The root directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// `DIR/manifest.json`.
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join("manifest.json")
    }

    /// Bootstrap multiaddrs for (re)starting node `except`: those of the first two other
    /// nodes that are still running. Use with [`NodeProcess::restart`].
    pub fn bootstrap_addrs(&self, except: usize) -> Vec<String> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, node)| *i != except && node.exit_status().is_none())
            .take(2)
            .flat_map(|(_, node)| node.runtime().listen_addrs.iter().cloned())
            .collect()
    }

    /// The conventional name of node `i`: `node-<i>`.
    pub fn node_name(i: usize) -> String {
        format!("node-{i}")
    }

    /// The manifest as of now (after a restart, ports may have changed).
    pub fn manifest(&self) -> Manifest {
        Manifest {
            origin: self.origin.addr().to_string(),
            nodes: self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, node)| {
                    let rt = node.runtime();
                    ManifestNode {
                        name: Self::node_name(i),
                        peer_id: rt.peer_id.clone(),
                        provider: rt.provider.clone(),
                        provider_id: rt.provider_id.clone(),
                        region: rt.region.clone(),
                        http: rt.http,
                        admin: rt.admin,
                        dns: rt.dns,
                        p2p: rt.listen_addrs.clone(),
                        data_dir: node.spec().dir.clone(),
                        log: node.log_path(),
                    }
                })
                .collect(),
        }
    }

    /// (Re)writes `DIR/manifest.json` atomically (temp file + rename).
    pub fn write_manifest(&self) -> Result<(), Error> {
        let path = self.manifest_path();
        let json = serde_json::to_vec_pretty(&self.manifest()).map_err(|source| Error::Json {
            context: "serialising the manifest".into(),
            source,
        })?;
        let tmp = self.dir.join(".manifest.json.tmp");
        std::fs::write(&tmp, json)
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
    }

    /// SIGTERM every node, wait for them (SIGKILL after the grace period), stop the origin.
    pub async fn shutdown(mut self) {
        let stops = self.nodes.iter_mut().map(|n| n.stop());
        for result in futures::future::join_all(stops).await {
            if let Err(e) = result {
                warn!(error = %e, "stopping a node failed");
            }
        }
        self.nodes.clear();
        self.origin.shutdown().await;
    }
}

fn spec_for(opts: &Options, i: usize) -> Result<NodeSpec, Error> {
    let (provider, region) = provider_region(i, opts.providers);
    let ip = node_ip(i)?;
    let mut extra_args = opts.extra_args.clone();
    if opts.dns {
        extra_args.extend(["--dns".to_string(), format!("{ip}:0")]);
    }
    Ok(NodeSpec {
        bin: opts.bin.clone(),
        dir: opts.dir.join(Testnet::node_name(i)),
        ip,
        provider,
        provider_key: Some(provider_key_path(&opts.dir, i % opts.providers)),
        region,
        bootstrap: Vec::new(),
        extra_args,
        env: opts.env.clone(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ips_are_unique_loopback() {
        assert_eq!(node_ip(0).unwrap(), Ipv4Addr::new(127, 0, 0, 10));
        assert_eq!(node_ip(239).unwrap(), Ipv4Addr::new(127, 0, 0, 249));
        assert_eq!(node_ip(240).unwrap(), Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(node_ip(240 + 253).unwrap(), Ipv4Addr::new(127, 0, 1, 254));
        assert_eq!(node_ip(240 + 254).unwrap(), Ipv4Addr::new(127, 0, 2, 1));
        let mut seen = std::collections::HashSet::new();
        for i in 0..2000 {
            let ip = node_ip(i).unwrap();
            assert!(ip.is_loopback());
            assert_ne!(ip, Ipv4Addr::LOCALHOST, "127.0.0.1 is the origin's");
            assert!(seen.insert(ip));
        }
        assert!(node_ip(240 + 254 * 255).is_err());
    }

    #[test]
    fn providers_round_robin_regions_alternate() {
        let got: Vec<_> = (0..5).map(|i| provider_region(i, 2)).collect();
        let want = [
            ("p0", "r0"),
            ("p1", "r1"),
            ("p0", "r0"),
            ("p1", "r1"),
            ("p0", "r0"),
        ];
        for ((p, r), (wp, wr)) in got.iter().zip(want) {
            assert_eq!((p.as_str(), r.as_str()), (wp, wr));
        }
        assert_eq!(provider_region(2, 3), ("p2".into(), "r0".into()));
    }

    #[test]
    fn manifest_serialises_as_documented() {
        let m = Manifest {
            origin: "127.0.0.1:8080".into(),
            nodes: vec![ManifestNode {
                name: "node-0".into(),
                peer_id: "12D3KooWabc".into(),
                provider: "p0".into(),
                provider_id: "ab".repeat(32),
                region: "r0".into(),
                http: "127.0.0.10:1000".parse().unwrap(),
                admin: "127.0.0.10:1001".parse().unwrap(),
                dns: None,
                p2p: vec!["/ip4/127.0.0.10/tcp/1002/p2p/12D3KooWabc".into()],
                data_dir: "/tmp/t/node-0".into(),
                log: "/tmp/t/node-0/node.log".into(),
            }],
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "origin": "127.0.0.1:8080",
                "nodes": [{
                    "name": "node-0", "peer_id": "12D3KooWabc", "provider": "p0",
                    "provider_id": "ab".repeat(32), "region": "r0", "http": "127.0.0.10:1000", "admin": "127.0.0.10:1001",
                    "dns": null, "p2p": ["/ip4/127.0.0.10/tcp/1002/p2p/12D3KooWabc"],
                    "data_dir": "/tmp/t/node-0", "log": "/tmp/t/node-0/node.log"
                }]
            })
        );
        let back: Manifest = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }
}
