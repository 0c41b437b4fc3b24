//! Assembling and running one node: identity, cache, overlay, edge and admin API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use reef_overlay::Multiaddr;
use reef_proto::records::{Capacity, LOAD_TOPIC, ProviderId};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::activity::{self, Activity};
use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::edge::{self, Edge, Gate};
use crate::fetch::{Announcer, Fetcher, LocalInfo, Upstreams};
use crate::heap;
use crate::load::{self, Load};
use crate::offers;
use crate::peering::agent::{self, Agent};
use crate::peering::mediator::Mediator;
use crate::peering::{self, Arrangements, Redirector};
use crate::provider::{self, ProviderIdentity, ProviderStatus};
use crate::purge::{self, Purger};
use crate::services::{self, Services};
use crate::{dns, identity, runtime_file};

/// How long after start we keep waiting to join before re-announcing cached objects anyway.
const JOIN_WAIT_FOR_REANNOUNCE: Duration = Duration::from_secs(60);

/// Errors that stop a node from starting, split by whose fault they are.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad settings or files: the operator must fix something (exit code 2).
    #[error("{0}")]
    Input(String),
    /// The machine refused (port taken, disk full...).
    #[error("{0}")]
    Runtime(String),
}

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(config: Config, public_http: Option<SocketAddr>) -> Result<(), StartError> {
    let input = |what: &str, e: &dyn std::fmt::Display| StartError::Input(format!("{what}: {e}"));
    let keypair = identity::load_or_create(&config.data_dir).map_err(|e| input("node key", &e))?;
    let signing_key = identity::signing_key(&keypair).map_err(|e| input("node key", &e))?;
    let peer_id = keypair.public().to_peer_id();
    let short = short_peer(&peer_id.to_string());
    let node_public = keypair
        .public()
        .try_into_ed25519()
        .map_err(|_| StartError::Input("node key: not an ed25519 key".into()))?
        .to_bytes();
    let certifier = match &config.provider_key {
        Some(path) => Some(provider::load(path).map_err(|e| input("--provider-key", &e))?),
        None => None,
    };
    // Checked before anything starts, so a bad `[offer]` is a clear exit 2.
    let offer = match (&config.offer, &certifier) {
        (Some(offer), Some(p)) => Some((
            p.clone(),
            offer.to_record(p).map_err(|e| input("[offer]", &e))?,
        )),
        (Some(_), None) => {
            return Err(input(
                "[offer]",
                &"publishing an offer needs --provider-key",
            ));
        }
        (None, _) => None,
    };
    // Likewise a `[dns]` that cannot make a zone, before any port is bound.
    let own_services = config
        .services
        .iter()
        .filter(|(_, s)| s.origin.is_some())
        .map(|(host, _)| host.as_str());
    dns::check(&config.dns, own_services).map_err(|e| StartError::Input(format!("[dns]: {e}")))?;
    let membership = membership(
        certifier.as_ref(),
        config.provider.as_deref(),
        ProviderId::from_bytes(node_public),
        &short,
    )?;
    let provider = membership.name.clone().unwrap_or_default();
    let cert = match &certifier {
        Some(p) => Some(
            provider::issue_cert(p, &peer_id, provider::unix_ms()).map_err(|e| {
                StartError::Runtime(format!("cannot issue our provider certificate: {e}"))
            })?,
        ),
        None => None,
    };
    let listen = parse_multiaddrs("--listen", &config.listen)?;
    let bootstrap = parse_multiaddrs("--bootstrap", &config.bootstrap)?;

    let http_listener = bind(config.http, "HTTP").await?;
    let admin_listener = bind(config.admin, "admin").await?;
    let http_addr = local_addr(&http_listener)?;
    let admin_addr = local_addr(&admin_listener)?;
    let advertised_http = public_http.unwrap_or(http_addr);
    if advertised_http.ip().is_unspecified() {
        warn!(%http_addr, "HTTP edge listens on all interfaces but --public-http is not set; peers cannot fetch from this node");
    }

    let cache_dir = config.data_dir.join("cache");
    let cache_config = reef_cache::Config {
        dir: cache_dir.clone(),
        max_bytes: config.cache_size,
        quotas: config.quotas(),
    };
    let store = tokio::task::spawn_blocking(move || reef_cache::Store::open(cache_config))
        .await
        .map_err(|e| StartError::Runtime(format!("cache open panicked: {e}")))?
        .map_err(|e| {
            StartError::Runtime(format!("cannot open cache in {}: {e}", cache_dir.display()))
        })?;

    let mut registry = Registry::default();
    let overlay = reef_overlay::spawn(reef_overlay::Config {
        keypair,
        listen,
        bootstrap,
        mdns: config.mdns,
        peers_file: Some(config.data_dir.join("peers.json")),
        local_record: reef_overlay::LocalInfo {
            http: advertised_http.to_string(),
            region: config.region.clone(),
            capacity: Capacity {
                req_per_s: config.capacity_rps,
                mbit_per_s: config.capacity_mbps,
            },
            cert: cert.clone(),
        },
        metrics: reef_overlay::Metrics::register(&mut registry),
        peering_timeout: reef_overlay::PEERING_REQUEST_TIMEOUT,
        keep_connections: config.keep_connections,
    })
    .await
    .map_err(|e| match e {
        // What we would publish about ourselves is wrong: the operator's to fix.
        reef_overlay::Error::Rejected { .. }
        | reef_overlay::Error::Cert(_)
        | reef_overlay::Error::Identity(_) => input("our node record", &e),
        e => StartError::Runtime(format!("cannot start the overlay: {e}")),
    })?;
    // Signed by our provider's key, or by our own for a node that is its own provider.
    let service_owner = certifier
        .as_ref()
        .map_or(signing_key.clone(), |p| p.key.signing_key().clone());
    // The agent's side of peering needs the provider key; kept before the renewal takes it.
    let agent_identity = certifier.clone();
    // Proves our requests for private objects to the other nodes of our provider.
    let object_auth = certifier
        .as_ref()
        .map(|p| crate::private::ObjectAuth::from_provider_secret(&p.key.to_bytes()));
    let our_offer = offer.as_ref().map(|(_, record)| record.clone());
    let renewal = certifier.map(|p| provider::spawn_renewal(p, peer_id, overlay.clone()));
    let offer_task = offer.map(|(p, record)| offers::spawn_publisher(p, record, overlay.clone()));
    // Subscribed before joining, so no notice published after we join passes us by.
    let notices = overlay
        .subscribe(reef_proto::PURGE_TOPIC, purge::NOTICE_QUEUE)
        .await
        .map_err(|e| StartError::Runtime(format!("cannot subscribe to purge notices: {e}")))?;
    let purger = Purger::new(store.clone(), overlay.clone(), membership.id);
    let purge_task = purger.listen(notices);
    let load_config = load::Config {
        capacity_rps: config.capacity_rps,
        capacity_mbps: config.capacity_mbps,
        // Carried in every report, so the node's load counts toward its provider.
        cert: cert.clone(),
    };
    let load = Load::new(load_config, overlay.clone());
    let reports = overlay
        .subscribe(LOAD_TOPIC, load::REPORT_QUEUE)
        .await
        .map_err(|e| StartError::Runtime(format!("cannot subscribe to load reports: {e}")))?;
    let load_task = load.start(signing_key.clone(), reports);

    let services = Arc::new(Services::new(
        &config.services,
        membership.id,
        overlay.clone(),
    ));
    services::check(&services, &service_owner).map_err(|e| input("[services]", &e))?;
    let services_task = services::spawn_publisher(service_owner, services.clone(), overlay.clone());
    let peering_db = config.data_dir.join("peering.redb");
    let arrangements = {
        let (own, policy) = (membership.id, config.peering.clone());
        tokio::task::spawn_blocking(move || Arrangements::open(own, &policy, &peering_db))
            .await
            .map_err(|e| StartError::Runtime(format!("peering database open panicked: {e}")))?
            .map_err(|e| StartError::Runtime(e.to_string()))?
    };
    let arrangements = Arc::new(arrangements);
    let saver = arrangements.spawn_saver();
    let arrangement_notices = overlay
        .subscribe(reef_proto::peering::NOTICE_TOPIC, agent::NOTICE_QUEUE)
        .await
        .map_err(|e| StartError::Runtime(format!("cannot subscribe to arrangements: {e}")))?;
    let ledger = {
        let path = config.data_dir.join("ledger.redb");
        tokio::task::spawn_blocking(move || peering::ledger::open_or_memory(&path))
            .await
            .map_err(|e| StartError::Runtime(format!("ledger open panicked: {e}")))?
    };
    let receipts = peering::receipts::Sender {
        arrangements: arrangements.clone(),
        load: load.clone(),
        overlay: overlay.clone(),
        own: membership.id,
        key: signing_key.clone(),
        cert,
    };
    let mut peering_tasks = vec![
        agent::listen(
            arrangements.clone(),
            services.clone(),
            overlay.clone(),
            arrangement_notices,
        ),
        receipts.spawn(),
    ];
    let upstreams = Upstreams::new(config.origin_timeout)
        .map_err(|e| StartError::Runtime(e.to_string()))?
        .with_services(services.clone());
    // Every node watches the peer nodes it may send requests to.
    let health = Arc::new(peering::health::Health::default());
    peering_tasks.push(
        peering::health::Prober {
            health: health.clone(),
            arrangements: arrangements.clone(),
            load: load.clone(),
            overlay: overlay.clone(),
            upstreams: upstreams.clone(),
        }
        .spawn(),
    );
    let mut agent_handle = None;
    if let Some(identity) = agent_identity {
        let agent = Agent::new(
            identity,
            agent::Parts {
                offer: our_offer,
                policy: config.peering.clone(),
                arrangements: arrangements.clone(),
                services: services.clone(),
                overlay: overlay.clone(),
                ledger: ledger.clone(),
                load: load.clone(),
                node_key: node_public,
            },
        );
        let inbox = overlay
            .peering_inbox()
            .await
            .map_err(|e| StartError::Runtime(format!("cannot take peering requests: {e}")))?;
        peering_tasks.push(agent.serve(inbox));
        peering_tasks.push(agent.spawn_settler());
        agent_handle = Some(agent.clone());
        if config.peering.max_price_micros_per_gb.is_some() {
            let mediator = Mediator {
                agent,
                arrangements: arrangements.clone(),
                health: health.clone(),
                load: load.clone(),
                local: peer_id,
                own: membership.id,
                policy: config.peering.clone(),
                services: services.own().map(|s| s.hostname.clone()).collect(),
                region: config.region.clone(),
            };
            peering_tasks.push(mediator.spawn());
        }
    }
    let arrangements_at_stop = arrangements.clone();
    let announcer = Announcer::new(overlay.clone(), signing_key.clone());
    let local = LocalInfo {
        provider: membership.id,
        region: config.region.clone(),
        object_auth: object_auth.clone(),
    };
    let homes = crate::fetch::home::Homes::new(
        config.home_routing,
        Some(load.clone()),
        membership.id,
        peer_id,
    );
    let fetcher = Fetcher::new(
        store.clone(),
        overlay.clone(),
        upstreams.clone(),
        local,
        announcer.clone(),
        homes,
        Some(load.clone()),
    );
    let requests = crate::metrics::Requests::register(&mut registry);
    let rejections = crate::private::Rejections::register(&mut registry);
    let ingress = upstreams.ingress();
    let limits = crate::limits::Limits::new(
        config.limits.clone(),
        config.capacity_rps,
        config.bandwidths(),
        &mut registry,
    );
    let edge = Arc::new(Edge::new(
        fetcher.clone(),
        upstreams,
        &short,
        load.meter(),
        requests.clone(),
        Gate {
            services: services.clone(),
            provider: membership.id,
            arrangements: arrangements.clone(),
            redirector: Redirector::new(
                arrangements.clone(),
                load.clone(),
                overlay.clone(),
                health.clone(),
                &config.peering,
            ),
            rejections,
            object_auth,
        },
        limits.clone(),
    ));

    let dns = match config.dns.listen {
        Some(listen) => Some(
            dns::start(dns::Parts {
                settings: config.dns.clone(),
                listen,
                own: membership.id,
                services: services.own().map(|s| s.hostname.clone()).collect(),
                region: config.region.clone(),
                high_watermark_permille: config.peering.high_watermark_permille,
                load: load.clone(),
                overlay: overlay.clone(),
                arrangements: arrangements.clone(),
            })
            .await
            .map_err(|e| match e {
                dns::Error::Zone(_) => StartError::Input(e.to_string()),
                dns::Error::Bind { .. } => StartError::Runtime(e.to_string()),
            })?,
        ),
        None => None,
    };
    let dns_handle = dns.as_ref().map(dns::Dns::handle);
    // What other parts count already is read at scrape time.
    registry.register_collector(Box::new(crate::metrics::Collector {
        meter: load.meter(),
        load: load.clone(),
        store: store.clone(),
        ingress,
        arrangements: arrangements.clone(),
        health: health.clone(),
        ledger: ledger.clone(),
        dns: dns_handle.clone(),
    }));
    let registry = Arc::new(registry);
    let activity = Arc::new(Activity::default());
    let activity_task = activity.spawn(activity::Watch {
        requests,
        arrangements: arrangements.clone(),
        health: health.clone(),
        ledger: ledger.clone(),
        load: load.clone(),
    });
    let guard = admin::Guard::new(config.admin_token.clone(), admin_addr);
    if matches!(guard, admin::Guard::Closed) {
        warn!(%admin_addr, "the admin API listens beyond loopback without admin_token: its POST endpoints (purge, ending arrangements) are refused");
    }

    let status = overlay
        .status()
        .await
        .map_err(|e| StartError::Runtime(format!("overlay did not start: {e}")))?;
    let runtime = runtime_file::Runtime {
        peer_id: peer_id.to_string(),
        pid: std::process::id(),
        provider: provider.clone(),
        provider_id: membership.id.to_string(),
        certified: membership.certified,
        region: config.region.clone(),
        http: http_addr,
        admin: admin_addr,
        listen_addrs: status.listen_addrs.clone(),
        dns: dns_handle.as_ref().map(dns::Handle::addr),
    };
    runtime_file::write(&config.data_dir, &runtime)
        .map_err(|e| StartError::Runtime(format!("cannot write runtime.json: {e}")))?;
    info!(
        target: "reef::ready",
        peer_id = %peer_id, %provider, provider_id = %membership.id,
        certified = membership.certified, region = %config.region, http = %http_addr,
        admin = %admin_addr, listen = ?status.listen_addrs,
        dns = ?dns_handle.as_ref().map(dns::Handle::addr), "node ready"
    );

    heap::spawn_trimmer();
    crate::mapped::spawn_sweeper();
    crate::code_pages::spawn_dropper();
    let (stop_tx, stop_rx) = watch::channel(false);
    let edge_task = tokio::spawn(edge::serve(http_listener, edge, stop_rx.clone()));
    let admin_state = Arc::new(AdminState {
        overlay: overlay.clone(),
        store: store.clone(),
        announcer: announcer.clone(),
        fetcher: fetcher.clone(),
        purger,
        provider: membership,
        registry,
        load,
        services,
        arrangements,
        agent: agent_handle,
        health,
        ledger,
        region: config.region.clone(),
        http: http_addr,
        admin: admin_addr,
        dns: dns_handle,
        guard,
        activity,
        limits,
    });
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_state, stop_rx));
    let reannounce = {
        let overlay = overlay.clone();
        let fetcher_at_start = fetcher.clone();
        let store = store.clone();
        tokio::spawn(async move {
            if overlay.wait_joined(JOIN_WAIT_FOR_REANNOUNCE).await.is_err() {
                warn!("not joined yet; announcing cached objects anyway");
            }
            let keys = fetcher_at_start.announceable(store.keys()).await;
            announcer.announce_all(keys).await;
        })
    };

    wait_for_signal().await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    reannounce.abort();
    for task in [offer_task, services_task].into_iter().flatten() {
        task.abort();
    }
    saver.abort();
    activity_task.abort();
    if let Some(dns) = dns {
        dns.stop();
    }
    for task in peering_tasks {
        task.abort();
    }
    if let Some(renewal) = renewal {
        renewal.abort();
    }
    let _ = edge_task.await;
    let _ = admin_task.await;
    // After the edge has stopped, so the last requests are counted.
    arrangements_at_stop.persist().await;
    overlay.shutdown().await;
    // It ends by itself once the overlay has dropped its queue; this only stops one that
    // still waits for a free check slot.
    purge_task.abort();
    // Likewise ends once the overlay is gone; this stops one between two ticks.
    load_task.abort();
    runtime_file::remove(&config.data_dir);
    info!("stopped");
    Ok(())
}

/// Whom this node belongs to: the provider whose key it was given, or itself. `label` is
/// `--provider`: with a key it must be the key's name (a mismatch is a misconfiguration);
/// without one it only names this node.
fn membership(
    certifier: Option<&ProviderIdentity>,
    label: Option<&str>,
    own: ProviderId,
    short: &str,
) -> Result<ProviderStatus, StartError> {
    match (certifier, label) {
        (Some(p), Some(label)) if label != p.name => Err(StartError::Input(format!(
            "--provider {label:?} does not match the name in the provider key ({:?}); \
             leave --provider out or make them the same",
            p.name
        ))),
        (Some(p), _) => Ok(ProviderStatus {
            id: p.key.id(),
            name: Some(p.name.clone()),
            certified: true,
        }),
        (None, label) => {
            let name = label.map_or_else(|| format!("solo-{short}"), str::to_string);
            provider::check_name(&name)
                .map_err(|e| StartError::Input(format!("--provider: {e}")))?;
            Ok(ProviderStatus {
                id: own,
                name: Some(name),
                certified: false,
            })
        }
    }
}

pub fn short_peer(peer_id: &str) -> String {
    let start = peer_id.len().saturating_sub(8);
    peer_id[start..].to_string()
}

fn parse_multiaddrs(flag: &str, texts: &[String]) -> Result<Vec<Multiaddr>, StartError> {
    texts
        .iter()
        .map(|t| {
            t.parse::<Multiaddr>()
                .map_err(|e| StartError::Input(format!("{flag} {t:?} is not a multiaddr: {e}")))
        })
        .collect()
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Runtime(format!("cannot listen for {what} on {addr}: {e}")))
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|e| StartError::Runtime(e.to_string()))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
