//! `/reef/peering/1` between in-process overlays over real loopback sockets (127.0.0.1,
//! port 0, mDNS off).
//!
//! Tests wait on conditions with deadlines; they never sleep to synchronise.

mod support;

use std::time::{Duration, Instant};

use support::{addr_of, eventually, init_tracing};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use reef_overlay::{
    Client, Config, Error, InboundPeering, Keypair, MAX_PEERING_MESSAGE, Multiaddr,
    PEERING_REQUEST_TIMEOUT, PeerId,
};
use tokio::sync::mpsc;

/// Joining over loopback takes well under a second; generous for a loaded 2-core machine.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for conditions that depend on connections being set up.
const CONDITION_TIMEOUT: Duration = Duration::from_secs(30);

fn config(name: &str, bootstrap: Vec<Multiaddr>, peering_timeout: Duration) -> Config {
    Config {
        peering_timeout,
        ..support::config(Keypair::generate_ed25519(), name, bootstrap, None)
    }
}

async fn start(name: &str, bootstrap: Vec<Multiaddr>) -> Result<Client> {
    Ok(reef_overlay::spawn(config(name, bootstrap, PEERING_REQUEST_TIMEOUT)).await?)
}

/// Answers every request with `"<sender peer id>|<request>"`, except `b"big"`, answered with
/// a response over the limit (which the responder refuses).
fn echo(mut inbox: mpsc::Receiver<InboundPeering>) {
    tokio::spawn(async move {
        while let Some(InboundPeering {
            peer,
            request,
            reply,
        }) = inbox.recv().await
        {
            if request == b"big" {
                let refused = reply.send(vec![0; MAX_PEERING_MESSAGE + 1]);
                assert!(
                    matches!(refused, Err(Error::TooLarge { .. })),
                    "{refused:?}"
                );
                continue;
            }
            let mut response = format!("{peer}|").into_bytes();
            response.extend_from_slice(&request[..request.len().min(16)]);
            let _ = reply.send(response);
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_the_peer_and_responses_come_back() -> Result<()> {
    init_tracing();
    let a = start("a", vec![]).await?;
    let a_quic = addr_of(&a, "quic-v1").await?;
    let b = start("b", vec![a_quic.clone()]).await?;
    b.wait_joined(JOIN_TIMEOUT).await?;
    let c = start("c", vec![a_quic]).await?;
    c.wait_joined(JOIN_TIMEOUT).await?;
    echo(b.peering_inbox().await?);
    ensure!(
        matches!(b.peering_inbox().await, Err(Error::PeeringInboxTaken)),
        "a second inbox while the first is alive"
    );

    // A is connected to B (B joined through A).
    let response = a
        .peering_request(b.local_peer_id(), b"hello".to_vec())
        .await?;
    ensure!(
        response == format!("{}|hello", a.local_peer_id()).into_bytes(),
        "{:?}",
        String::from_utf8_lossy(&response)
    );

    // C learnt B from the DHT; it dials B if it is not connected yet.
    let response = eventually("c to reach b", CONDITION_TIMEOUT, || async {
        match c
            .peering_request(b.local_peer_id(), b"from c".to_vec())
            .await
        {
            Ok(response) => Ok(Some(response)),
            Err(Error::Unreachable) => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    ensure!(response == format!("{}|from c", c.local_peer_id()).into_bytes());

    // The largest request there is goes through; one byte more is refused before sending.
    let response = a
        .peering_request(b.local_peer_id(), vec![b'x'; MAX_PEERING_MESSAGE])
        .await?;
    ensure!(response.ends_with(&[b'x'; 16]));
    let sent_before = a.status().await?.peering.requests_sent;
    match a
        .peering_request(b.local_peer_id(), vec![0; MAX_PEERING_MESSAGE + 1])
        .await
    {
        Err(Error::TooLarge { len, max }) => {
            ensure!(len == MAX_PEERING_MESSAGE + 1 && max == MAX_PEERING_MESSAGE)
        }
        other => bail!("an oversized request gave {other:?}"),
    }
    ensure!(a.status().await?.peering.requests_sent == sent_before);

    // A response B cannot send (too large) fails A's request rather than hanging it.
    match a.peering_request(b.local_peer_id(), b"big".to_vec()).await {
        Err(Error::PeeringFailed(_)) => {}
        other => bail!("an unsendable response gave {other:?}"),
    }

    // C never took its inbox: A's request is dropped there, at once, and counted.
    let started = Instant::now();
    match a
        .peering_request(c.local_peer_id(), b"anyone?".to_vec())
        .await
    {
        Err(Error::PeeringFailed(_)) => {}
        other => bail!("a request nobody takes gave {other:?}"),
    }
    ensure!(
        started.elapsed() < PEERING_REQUEST_TIMEOUT,
        "took {:?}",
        started.elapsed()
    );

    let a_stats = a.status().await?.peering;
    ensure!(a_stats.requests_sent == 4, "{a_stats:?}");
    ensure!(a_stats.requests_failed == 2, "{a_stats:?}");
    let b_stats = b.status().await?.peering;
    ensure!(b_stats.requests_received >= 4, "{b_stats:?}");
    ensure!(b_stats.requests_dropped == 0, "{b_stats:?}");
    let c_stats = c.status().await?.peering;
    ensure!(c_stats.requests_dropped == 1, "{c_stats:?}");
    ensure!(c_stats.requests_received == 0, "{c_stats:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_request_times_out() -> Result<()> {
    init_tracing();
    const SHORT: Duration = Duration::from_millis(500);
    let b = start("b", vec![]).await?;
    let a = reef_overlay::spawn(config("a", vec![addr_of(&b, "quic-v1").await?], SHORT)).await?;
    a.wait_joined(JOIN_TIMEOUT).await?;
    let mut inbox = b.peering_inbox().await?;

    let b_peer = b.local_peer_id();
    let started = Instant::now();
    let request = tokio::spawn(async move { a.peering_request(b_peer, b"wait".to_vec()).await });
    // B holds the request without answering.
    let held = inbox.recv().await.context("b's inbox closed")?;
    let a_peer = held.peer;
    let outcome = request.await?;
    let took = started.elapsed();
    ensure!(matches!(outcome, Err(Error::Timeout)), "{outcome:?}");
    // Within A's short timeout (libp2p's fires first, the client's own a second later), far
    // from B's 5 s.
    ensure!(took < SHORT + Duration::from_secs(2), "took {took:?}");
    ensure!(held.request == b"wait");
    ensure!(a_peer != b_peer);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_foreign_peers_fail_with_typed_errors() -> Result<()> {
    init_tracing();
    let a = start("a", vec![]).await?;

    // Nobody knows an address for a fresh peer id.
    let nobody = PeerId::random();
    let outcome = a.peering_request(nobody, b"hi".to_vec()).await;
    ensure!(matches!(outcome, Err(Error::Unreachable)), "{outcome:?}");
    let outcome = a.peering_request(a.local_peer_id(), b"hi".to_vec()).await;
    ensure!(matches!(outcome, Err(Error::Unreachable)), "{outcome:?}");

    // A libp2p node that speaks ping and nothing else connects to A.
    let mut foreign = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )?
        .with_behaviour(|_| libp2p::ping::Behaviour::default())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let foreign_peer = *foreign.local_peer_id();
    foreign.dial(addr_of(&a, "tcp").await?)?;
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::ConnectionClosed { .. } = foreign.select_next_some().await {
                break;
            }
        }
    });
    eventually("a to see the foreign node", CONDITION_TIMEOUT, || async {
        let status = a.status().await?;
        Ok(status
            .connected_peers
            .contains(&foreign_peer.to_string())
            .then_some(()))
    })
    .await?;
    let outcome = a.peering_request(foreign_peer, b"hi".to_vec()).await;
    ensure!(matches!(outcome, Err(Error::Unsupported)), "{outcome:?}");

    let stats = a.status().await?.peering;
    ensure!(stats.requests_failed == 2, "{stats:?}");
    Ok(())
}
