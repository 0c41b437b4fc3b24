//! Capacity discovery latency: a testnet whose every node is its provider's agent (an
//! `[offer]` in a shared config file), then many `/api/offers?region=` discoveries from every
//! node in turn, timed by the client.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use http::Method;

use crate::{Error, Options, Testnet, client};

/// The offer every agent publishes; only its regions matter here.
const OFFER: &str = r#"
[offer]
req_per_s = 5000
mbit_per_s = 2000
regions = ["r0", "r1"]
price_per_gb = 0.02
min_duration_s = 300
max_duration_s = 86400
"#;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct DiscoveryBenchOptions {
    pub bin: PathBuf,
    pub nodes: usize,
    pub providers: usize,
    pub lookups: usize,
    pub dir: PathBuf,
}

pub struct DiscoveryBenchReport {
    pub nodes: usize,
    pub providers: usize,
    /// From all nodes up until a discovery from node 0 found every provider's offer.
    pub until_complete: Duration,
    /// Client-measured time of each discovery, sorted.
    pub latencies: Vec<Duration>,
    /// Discoveries that returned fewer offers than there are providers.
    pub incomplete: usize,
}

impl DiscoveryBenchReport {
    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }

    pub fn markdown(&self) -> String {
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        format!(
            "| nodes | providers | discoveries | median | p99 | max | incomplete | all offers found after start |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|\n\
             | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            self.nodes,
            self.providers,
            self.latencies.len(),
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
            ms(self.percentile(1.0)),
            self.incomplete,
            ms(self.until_complete),
        )
    }
}

pub async fn run(opts: &DiscoveryBenchOptions) -> Result<DiscoveryBenchReport, Error> {
    std::fs::create_dir_all(&opts.dir).map_err(|source| Error::Io {
        context: format!("creating {}", opts.dir.display()),
        source,
    })?;
    let config = opts.dir.join("offer.toml");
    std::fs::write(&config, OFFER).map_err(|source| Error::Io {
        context: format!("writing {}", config.display()),
        source,
    })?;
    let testnet = Testnet::launch(Options {
        bin: opts.bin.clone(),
        nodes: opts.nodes,
        providers: opts.providers,
        dir: opts.dir.join("net"),
        extra_args: vec!["--config".into(), config.display().to_string()],
        env: Vec::new(),
        provider_configs: Vec::new(),
        dns: false,
        links: Default::default(),
    })
    .await?;
    let admins: Vec<_> = testnet.nodes.iter().map(|n| n.runtime().admin).collect();
    let discover = |admin: std::net::SocketAddr| async move {
        let url = format!("http://{admin}/api/offers?region=r0");
        let got = client::fetch(None, Method::GET, &url, REQUEST_TIMEOUT).await?;
        let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap_or_default();
        Ok::<usize, Error>(body["offers"].as_array().map_or(0, Vec::len))
    };

    // Agents publish once joined; wait until one discovery sees every provider.
    let started = Instant::now();
    while discover(admins[0]).await? < opts.providers {
        if started.elapsed() > READY_TIMEOUT {
            return Err(Error::Timeout {
                what: "every provider's offer to be discoverable".into(),
                after: READY_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let until_complete = started.elapsed();

    let mut latencies = Vec::with_capacity(opts.lookups);
    let mut incomplete = 0;
    for i in 0..opts.lookups {
        let t = Instant::now();
        let found = discover(admins[i % admins.len()]).await?;
        latencies.push(t.elapsed());
        if found < opts.providers {
            incomplete += 1;
        }
    }
    latencies.sort();
    Ok(DiscoveryBenchReport {
        nodes: opts.nodes,
        providers: opts.providers,
        until_complete,
        latencies,
        incomplete,
    })
}
