//! The cloneable handle through which the rest of the node talks to the overlay.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use libp2p::{PeerId, metrics::Registry};
use reef_proto::ContentKey;
use reef_proto::records::{Membership, NodeRecord};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::Error;
use crate::behaviour::KAD_QUERY_TIMEOUT;
use crate::gossip::{Acceptance, GossipMessage, MessageHandle, Published};
use crate::node_records::NodeInfo;
use crate::peering::{self, InboundPeering, PeeringStats};
use crate::traffic::{self, Traffic};

/// Commands queued for the event loop; a full queue applies back-pressure to callers.
pub(crate) const COMMAND_QUEUE: usize = 64;
/// A quick command (status, unprovide) that takes longer than this means the loop is wedged.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Announcing a key waits for kad's own query timeout plus time to queue the command.
const PROVIDE_TIMEOUT: Duration = Duration::from_secs(KAD_QUERY_TIMEOUT.as_secs() + 5);
/// Looking up holders is on the fetch path of a cache miss: better go to the origin than wait.
const FIND_PROVIDERS_TIMEOUT: Duration = Duration::from_secs(3);
/// One NodeRecord lookup; runs in parallel for all holders, so this bounds the second phase.
const NODE_RECORD_TIMEOUT: Duration = Duration::from_secs(3);
/// A generic record lookup: long enough for a lookup across a large overlay, short enough
/// that callers on a request path are not held up for long.
pub(crate) const GET_RECORD_TIMEOUT: Duration = Duration::from_secs(5);
/// Publishing a record: find the closest peers, then store at them; quorum one.
pub(crate) const PUT_RECORD_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra wait for the loop's answer after its own deadline, so the loop answers, not the timer.
const REPLY_SLACK: Duration = Duration::from_secs(1);
/// Most holders resolved per lookup; kad keeps at most 20 providers per key anyway.
pub(crate) const MAX_HOLDERS: usize = 20;
/// Keys per unprovide command, so that withdrawing a whole prefix never holds the event loop
/// for long (each key is a store removal there).
const UNPROVIDE_CHUNK: usize = 1024;

/// The answer to a provider lookup: holders other than ourselves and their last ping RTT.
pub(crate) type ProvidersReply = oneshot::Sender<Result<ProvidersFound, Error>>;

pub(crate) struct ProvidersFound {
    pub holders: Vec<(PeerId, Option<Duration>)>,
    pub stats: LookupStats,
}

/// What a Kademlia lookup cost, as libp2p counts it (`QueryStats`). Kademlia is iterative:
/// we ask the closest peers we know, they name closer ones, we ask those; `requests` is how
/// many peers were asked in all, the nearest thing to a hop count an iterative lookup has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LookupStats {
    /// Peers asked.
    pub requests: u32,
    /// Of those, peers that answered.
    pub successes: u32,
    /// Peers that failed or timed out.
    pub failures: u32,
}

impl LookupStats {
    pub(crate) fn of(stats: &libp2p::kad::QueryStats) -> LookupStats {
        LookupStats {
            requests: stats.num_requests(),
            successes: stats.num_successes(),
            failures: stats.num_failures(),
        }
    }
}

/// What the event loop can be asked to do.
pub(crate) enum Command {
    Status {
        reply: oneshot::Sender<Status>,
    },
    Provide {
        key: ContentKey,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// Stops providing the keys and queues a gossip withdrawal of those we did provide.
    Unprovide {
        keys: Vec<ContentKey>,
        reply: oneshot::Sender<()>,
    },
    Subscribe {
        topic: String,
        queue: usize,
        reply: oneshot::Sender<Result<mpsc::Receiver<GossipMessage>, Error>>,
    },
    Publish {
        topic: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Published, Error>>,
    },
    Report {
        handle: MessageHandle,
        acceptance: Acceptance,
        reply: oneshot::Sender<bool>,
    },
    /// Answers with providers other than ourselves and their last measured RTT.
    GetProviders {
        key: ContentKey,
        limit: usize,
        deadline: Instant,
        reply: ProvidersReply,
    },
    NodeRecord {
        peer: PeerId,
        deadline: Instant,
        reply: oneshot::Sender<Result<Option<NodeInfo>, Error>>,
    },
    PutRecord {
        key: Vec<u8>,
        value: Vec<u8>,
        deadline: Instant,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    GetRecord {
        key: Vec<u8>,
        deadline: Instant,
        reply: oneshot::Sender<Result<Option<Vec<u8>>, Error>>,
    },
    LocalRecord {
        key: Vec<u8>,
        reply: oneshot::Sender<Option<Vec<u8>>>,
    },
    SetCert {
        cert: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// Sends a `/reef/peering/1` request (dialling the peer if needed) and answers with the
    /// response.
    PeeringRequest {
        peer: PeerId,
        request: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, Error>>,
    },
    PeeringInbox {
        reply: oneshot::Sender<Result<mpsc::Receiver<InboundPeering>, Error>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// Runs a closure on the loop's state: lets in-crate tests look inside a running node.
    #[cfg(test)]
    Inspect(Box<dyn FnOnce(&mut crate::event_loop::EventLoop) + Send>),
}

/// A node that holds a content key, with its verified record.
#[derive(Debug, Clone)]
pub struct Holder {
    pub peer: PeerId,
    pub record: NodeRecord,
    /// Whom the holder belongs to (see [`NodeInfo::membership`]).
    pub membership: Membership,
    /// Last ping round-trip time, if we are connected to the holder.
    pub rtt: Option<Duration>,
}

/// A snapshot of the overlay for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub peer_id: String,
    /// Bound listen addresses, each ending in `/p2p/<peer id>`.
    pub listen_addrs: Vec<String>,
    pub connected_peers: Vec<String>,
    pub routing_table_size: usize,
    /// DHT records held in our store, ours and those peers handed us (capped by the store).
    pub dht_records: usize,
    pub joined: bool,
    /// Gossip messages dropped because their subscriber's queue was full.
    pub gossip_dropped: u64,
    /// DHT records refused since start, by `"<kind>/<reason>"` (the labels of
    /// `reef_records_rejected_total`); only those that happened.
    pub records_rejected: BTreeMap<String, u64>,
    /// Peers refused now for sending too many invalid records (see `offenders.rs`).
    pub banned_peers: Vec<String>,
    /// Bans since start.
    pub peers_banned: u64,
    /// Gossipsub score of each connected peer that has one (see [`crate::GRAYLIST_THRESHOLD`]).
    pub gossip_scores: BTreeMap<String, f64>,
    /// Gossip and stream bytes since start.
    pub traffic: Traffic,
    /// `/reef/peering/1` requests since start.
    pub peering: PeeringStats,
}

/// Handle to the overlay's event loop. Cheap to clone; the loop ends when the last clone is
/// dropped or [`Client::shutdown`] is called.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
    joined: watch::Receiver<bool>,
    /// libp2p's own counters (gossipsub, bandwidth); read, never written, outside the loop.
    metrics: Arc<Registry>,
    /// [`crate::Config::peering_timeout`].
    peering_timeout: Duration,
    broken: crate::broken::Broken,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("local_peer_id", &self.local_peer_id)
            .finish()
    }
}

impl Client {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        local_peer_id: PeerId,
        joined: watch::Receiver<bool>,
        metrics: Arc<Registry>,
        peering_timeout: Duration,
        broken: crate::broken::Broken,
    ) -> Self {
        Self {
            commands,
            local_peer_id,
            joined,
            metrics,
            peering_timeout,
            broken,
        }
    }

    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// Whether our last connection to `peer` broke (it died, or the path did) and none has
    /// been made since, within the last minute. Answered without asking the event loop.
    pub fn connection_broken(&self, peer: &PeerId) -> bool {
        self.broken.is_broken(peer, std::time::Instant::now())
    }

    pub async fn status(&self) -> Result<Status, Error> {
        let mut status = self
            .request(|reply| Command::Status { reply }, COMMAND_TIMEOUT)
            .await?;
        status.traffic = self.traffic();
        Ok(status)
    }

    /// Gossip and stream byte counters since start (read here, not in the event loop).
    pub fn traffic(&self) -> Traffic {
        traffic::read(&self.metrics)
    }

    /// Resolves once the node has joined: at least one peer connected and one kad bootstrap
    /// query completed. `Err(Error::Timeout)` after `timeout`.
    pub async fn wait_joined(&self, timeout: Duration) -> Result<(), Error> {
        if self.commands.is_closed() {
            return Err(Error::Stopped);
        }
        let mut joined = self.joined.clone();
        match tokio::time::timeout(timeout, joined.wait_for(|j| *j)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// Announces that we hold `key` (kad `start_providing`). Returns once the provider record
    /// was sent to the closest peers; before the node has joined, once it is stored locally
    /// (it is announced to the network as soon as the node joins).
    pub async fn provide(&self, key: ContentKey) -> Result<(), Error> {
        self.request(|reply| Command::Provide { key, reply }, PROVIDE_TIMEOUT)
            .await?
    }

    /// Stops announcing `key`; see [`Client::unprovide_all`].
    pub async fn unprovide(&self, key: ContentKey) -> Result<(), Error> {
        self.unprovide_all(vec![key]).await
    }

    /// Stops announcing `keys`: our own provider records go at once, and the keys we did
    /// provide are withdrawn over gossip (batched, within about a quarter of a second), so the
    /// nodes storing our provider records drop them too. A node the withdrawal does not reach
    /// keeps our record until it expires (4 h); fetchers then find we no longer have the
    /// object and move on to the next holder.
    pub async fn unprovide_all(&self, keys: Vec<ContentKey>) -> Result<(), Error> {
        for chunk in keys.chunks(UNPROVIDE_CHUNK) {
            let keys = chunk.to_vec();
            self.request(|reply| Command::Unprovide { keys, reply }, COMMAND_TIMEOUT)
                .await?;
        }
        Ok(())
    }

    /// Subscribes to a gossip topic and returns the queue its messages arrive on (at most
    /// `queue` waiting, capped at 1024; when full, new messages are dropped, counted in
    /// [`Status::gossip_dropped`], and not forwarded). Every message received must be judged
    /// with [`Client::report`] to be forwarded. One subscriber per topic: a second subscribe
    /// fails while the first receiver is alive. Our own messages are not delivered to us.
    pub async fn subscribe(
        &self,
        topic: &str,
        queue: usize,
    ) -> Result<mpsc::Receiver<GossipMessage>, Error> {
        let topic = topic.to_string();
        self.request(
            |reply| Command::Subscribe {
                topic,
                queue,
                reply,
            },
            COMMAND_TIMEOUT,
        )
        .await?
    }

    /// Publishes `data` on `topic` (we need not be subscribed). The message is signed with the
    /// node's key. Identical bytes published twice within a minute are one message to gossipsub
    /// (it names messages by their content): put a nonce in messages that may repeat.
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<Published, Error> {
        let topic = topic.to_string();
        self.request(
            |reply| Command::Publish { topic, data, reply },
            COMMAND_TIMEOUT,
        )
        .await?
    }

    /// Judges a received message, once: forwarded on `Accept`, dropped otherwise. False if
    /// gossipsub no longer holds it (judged too late, or already rejected or ignored).
    pub async fn report(
        &self,
        handle: MessageHandle,
        acceptance: Acceptance,
    ) -> Result<bool, Error> {
        self.request(
            |reply| Command::Report {
                handle,
                acceptance,
                reply,
            },
            COMMAND_TIMEOUT,
        )
        .await
    }

    /// Who holds `key`, other than us: up to `limit` providers (the DHT lookup ends early once
    /// that many are found, and after 3 s at the latest), each with its verified NodeRecord
    /// and membership (holders whose record cannot be found are dropped) and last measured
    /// RTT. Sorted by RTT, unknown last.
    pub async fn find_holders(&self, key: ContentKey, limit: usize) -> Result<Vec<Holder>, Error> {
        Ok(self.find_holders_with_stats(key, limit).await?.0)
    }

    /// [`Client::find_holders`], with what the DHT lookup cost.
    pub async fn find_holders_with_stats(
        &self,
        key: ContentKey,
        limit: usize,
    ) -> Result<(Vec<Holder>, LookupStats), Error> {
        let limit = limit.min(MAX_HOLDERS);
        if limit == 0 {
            return Ok((Vec::new(), LookupStats::default()));
        }
        let deadline = Instant::now() + FIND_PROVIDERS_TIMEOUT;
        let providers = self
            .request(
                |reply| Command::GetProviders {
                    key,
                    limit,
                    deadline,
                    reply,
                },
                FIND_PROVIDERS_TIMEOUT + REPLY_SLACK,
            )
            .await??;
        let ProvidersFound {
            holders: providers,
            stats,
        } = providers;
        let lookups = providers.into_iter().map(|(peer, rtt)| async move {
            match self.node_record(peer).await {
                Ok(Some(info)) => Some(Holder {
                    peer,
                    record: info.record,
                    membership: info.membership,
                    rtt,
                }),
                Ok(None) => {
                    tracing::debug!(%peer, key = %key.short(), "holder has no node record");
                    None
                }
                Err(error) => {
                    tracing::debug!(%peer, key = %key.short(), %error, "holder record lookup failed");
                    None
                }
            }
        });
        let mut holders: Vec<Holder> = join_all(lookups).await.into_iter().flatten().collect();
        holders.sort_by_key(|h| h.rtt.unwrap_or(Duration::MAX));
        Ok((holders, stats))
    }

    /// The verified NodeRecord of `peer` and its membership (from the cache, else the DHT);
    /// `None` if the DHT has no valid one. Our own peer id gives our current record.
    pub async fn node_record(&self, peer: PeerId) -> Result<Option<NodeInfo>, Error> {
        let deadline = Instant::now() + NODE_RECORD_TIMEOUT;
        self.request(
            |reply| Command::NodeRecord {
                peer,
                deadline,
                reply,
            },
            NODE_RECORD_TIMEOUT + REPLY_SLACK,
        )
        .await?
    }

    /// Publishes a signed record in the DHT: `value` is a sealed envelope of the kind that
    /// `key` names (`node_record_key`, `content_record_key`, `offer_key`), checked here exactly
    /// as every receiving node will check it. Stored locally, then at the closest peers;
    /// returns once one of them has stored it (quorum one), `Err(Timeout)` after 10 s.
    /// Refused with [`Error::Rejected`] when it is invalid, or older than the version we
    /// already hold (`replay`); re-putting the same value is fine (that is how to keep a record
    /// alive: kad re-replicates it, but only its signer can renew it before it expires).
    pub async fn put_record(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), Error> {
        let deadline = Instant::now() + PUT_RECORD_TIMEOUT;
        self.request(
            |reply| Command::PutRecord {
                key,
                value,
                deadline,
                reply,
            },
            PUT_RECORD_TIMEOUT + REPLY_SLACK,
        )
        .await?
    }

    /// The newest valid value the DHT holds under `key` (ours included), validated by the
    /// kind `key` names; invalid answers are dropped and counted like invalid inbound records.
    /// The lookup stops once three peers have answered with a valid value, when the query
    /// ends, or after 5 s (then: the newest found so far, or `Err(Timeout)` if none).
    pub async fn get_record(&self, key: Vec<u8>) -> Result<Option<Vec<u8>>, Error> {
        let deadline = Instant::now() + GET_RECORD_TIMEOUT;
        self.request(
            |reply| Command::GetRecord {
                key,
                deadline,
                reply,
            },
            GET_RECORD_TIMEOUT + REPLY_SLACK,
        )
        .await?
    }

    /// What this node's own DHT store holds under `key`, without asking anyone: for
    /// diagnostics and tests (everything in it was validated on the way in).
    pub async fn local_record(&self, key: Vec<u8>) -> Result<Option<Vec<u8>>, Error> {
        self.request(|reply| Command::LocalRecord { key, reply }, COMMAND_TIMEOUT)
            .await
    }

    /// Replaces the node's provider certificate (renewal) and republishes its NodeRecord at
    /// once. `Err(Cert)` if it is not a current certificate for this node; `None` makes the
    /// node independent.
    pub async fn set_provider_cert(&self, cert: Option<Vec<u8>>) -> Result<(), Error> {
        self.request(|reply| Command::SetCert { cert, reply }, COMMAND_TIMEOUT)
            .await?
    }

    /// Sends `request` to `peer` over `/reef/peering/1` and waits for its response. Dials the
    /// peer if we are not connected, at the addresses the swarm knows for it (from kad, fed
    /// by identify, bootstrap and lookups). Fails with [`Error::TooLarge`] before sending
    /// anything over [`crate::MAX_PEERING_MESSAGE`] (a response over it fails the same way),
    /// [`Error::Timeout`] when no response came within [`crate::Config::peering_timeout`]
    /// (the whole call returns within that plus a second), [`Error::Unreachable`],
    /// [`Error::Unsupported`], [`Error::ConnectionClosed`], [`Error::PeeringFailed`] (e.g.
    /// the peer dropped the request), or [`Error::Busy`] when too many requests are in
    /// flight.
    pub async fn peering_request(&self, peer: PeerId, request: Vec<u8>) -> Result<Vec<u8>, Error> {
        peering::check_len(request.len())?;
        if peer == self.local_peer_id {
            return Err(Error::Unreachable);
        }
        self.request(
            |reply| Command::PeeringRequest {
                peer,
                request,
                reply,
            },
            self.peering_timeout + REPLY_SLACK,
        )
        .await?
    }

    /// Takes the queue on which peers' `/reef/peering/1` requests arrive (at most 256
    /// waiting). Answer each through its [`crate::Responder`] within
    /// [`crate::Config::peering_timeout`] of its arrival, or drop it to fail the peer's request
    /// at once. Requests that arrive while nobody holds the inbox, or while it is full, are
    /// dropped (the peer's request fails) and counted in [`PeeringStats::requests_dropped`].
    /// One inbox at a time: [`Error::PeeringInboxTaken`] while an earlier receiver is alive.
    pub async fn peering_inbox(&self) -> Result<mpsc::Receiver<InboundPeering>, Error> {
        self.request(|reply| Command::PeeringInbox { reply }, COMMAND_TIMEOUT)
            .await?
    }

    /// Saves the peers file and stops the event loop. Afterwards every method returns
    /// [`Error::Stopped`].
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            // An error means the loop is already gone, which is what we want.
            let _ = done.await;
        }
    }

    /// Test hook: runs `f` on the running event loop and returns its result.
    #[cfg(test)]
    pub(crate) async fn inspect<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut crate::event_loop::EventLoop) -> T + Send + 'static,
    ) -> Result<T, Error> {
        self.request(
            |reply| {
                Command::Inspect(Box::new(move |el| {
                    let _ = reply.send(f(el));
                }))
            },
            COMMAND_TIMEOUT,
        )
        .await
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
        within: Duration,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        let exchange = async {
            self.commands
                .send(command(reply))
                .await
                .map_err(|_| Error::Stopped)?;
            answer.await.map_err(|_| Error::Stopped)
        };
        tokio::time::timeout(within, exchange)
            .await
            .map_err(|_| Error::Timeout)?
    }
}
