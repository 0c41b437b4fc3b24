//! Swarm and behaviour events; records peers ask us to store are checked in `records.rs`,
//! provider announcements here.

use std::collections::HashMap;

use libp2p::{
    Multiaddr, PeerId, identify,
    kad::{self, store::RecordStore},
    mdns, ping,
    swarm::SwarmEvent,
};
use tracing::{debug, warn};

use super::EventLoop;
use crate::addrs;
use crate::behaviour::{BehaviourEvent, IDENTIFY_PROTOCOL, KAD_PROTOCOL};

/// Listen addresses fed from one identify message into kad; more is noise or abuse.
const MAX_IDENTIFY_ADDRS: usize = 8;
/// Addresses kept from one provider record stored for another peer.
const MAX_PROVIDER_ADDRS: usize = 8;

impl EventLoop {
    // ---- swarm events ----

    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => self.on_identify_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => self.on_ping_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.on_gossip_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(event)) => self.on_mdns_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Peering(event)) => self.on_peering_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Goodbye(event)) => self.on_goodbye_event(event),
            SwarmEvent::ConnectionEstablished {
                peer_id: peer,
                endpoint,
                ..
            } => {
                let remote = endpoint.get_remote_address();
                let loopback = addrs::is_loopback(remote);
                *self.via_loopback.entry(peer).or_insert(loopback) |= loopback;
                let dialled = endpoint.is_dialer().then(|| {
                    addrs::split_peer(remote).map_or_else(|| remote.clone(), |(_, base)| base)
                });
                let usable = dialled.filter(|a| addrs::is_usable(a, loopback));
                self.recent.seen(peer, usable, std::time::Instant::now());
                self.broken.connected(&peer);
                self.budget.connected(peer);
                self.metrics
                    .set_connected_peers(self.swarm.connected_peers().count());
                debug!(%peer, %remote, "connected");
                self.join_soon();
                self.check_joined();
            }
            SwarmEvent::ConnectionClosed {
                peer_id: peer,
                num_established,
                cause,
                ..
            } => {
                debug!(%peer, ?cause, "connection closed");
                self.metrics
                    .set_connected_peers(self.swarm.connected_peers().count());
                if num_established == 0 {
                    self.rtt.remove(&peer);
                    self.ping_failures.remove(&peer);
                    self.via_loopback.remove(&peer);
                    let expected = self.budget.disconnected(&peer);
                    self.recent.seen(peer, [], std::time::Instant::now());
                    let io = matches!(cause, Some(libp2p::swarm::ConnectionError::IO(_)));
                    if io && !expected {
                        self.drop_broken(peer, "connection broke");
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, %error, "dial failed");
            }
            SwarmEvent::NewListenAddr { address, .. } => debug!(%address, "listening"),
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                debug!(%address, "listen address expired")
            }
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener error"),
            _ => {}
        }
    }

    pub(super) fn on_identify_event(&mut self, event: identify::Event) {
        let identify::Event::Received {
            peer_id: peer,
            info,
            ..
        } = event
        else {
            return;
        };
        if info.protocol_version != IDENTIFY_PROTOCOL {
            debug!(%peer, version = %info.protocol_version, "not a reef node");
            return;
        }
        let loopback = self.via_loopback.get(&peer).copied().unwrap_or(false);
        let usable: Vec<Multiaddr> = info
            .listen_addrs
            .iter()
            .map(|a| addrs::split_peer(a).map_or_else(|| a.clone(), |(_, base)| base))
            .filter(|a| addrs::is_usable(a, loopback))
            .take(MAX_IDENTIFY_ADDRS)
            .collect();
        if info.protocols.contains(&KAD_PROTOCOL) {
            for addr in &usable {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
        }
        debug!(%peer, agent = %info.agent_version, addrs = usable.len(), "identified");
        self.recent.seen(peer, usable, std::time::Instant::now());
    }

    pub(super) fn on_ping_event(&mut self, event: ping::Event) {
        match event.result {
            // Only connected peers: the table stays bounded by the connection count.
            Ok(rtt) if self.swarm.is_connected(&event.peer) => {
                self.rtt.insert(event.peer, rtt);
                self.ping_failures.remove(&event.peer);
            }
            Ok(_) => {}
            Err(ping::Failure::Unsupported) => {}
            Err(error) => {
                debug!(peer = %event.peer, %error, "ping failed");
                if !self.swarm.is_connected(&event.peer) {
                    return;
                }
                let failed = self.ping_failures.entry(event.peer).or_default();
                *failed = failed.saturating_add(1);
                // One late answer is a busy machine (a hundred nodes starting on two cores
                // miss a few); several in a row is a hung peer.
                if *failed >= crate::behaviour::PING_FAILURES_TO_DROP {
                    self.ping_failures.remove(&event.peer);
                    self.drop_broken(event.peer, "pings failed");
                    let _ = self.swarm.disconnect_peer_id(event.peer);
                }
            }
        }
    }

    /// `peer` died or hung (its connection broke, or it stopped answering pings): left in the
    /// routing table, it would hold every lookup until a request to it times out. It comes
    /// back the moment it connects again.
    fn drop_broken(&mut self, peer: PeerId, why: &'static str) {
        self.swarm.behaviour_mut().kad.remove_peer(&peer);
        self.broken.broke(peer, std::time::Instant::now());
        debug!(%peer, why, "dropped from the routing table");
    }

    pub(super) fn on_mdns_event(&mut self, event: mdns::Event) {
        if let mdns::Event::Discovered(found) = event {
            let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
            for (peer, addr) in found {
                by_peer.entry(peer).or_default().push(addr);
            }
            for (peer, addrs) in by_peer {
                self.add_and_dial(peer, addrs, "mdns");
            }
        }
    }

    pub(super) fn on_kad_event(&mut self, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                stats,
            } => self.on_query_progress(id, result, step, stats),
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => self.on_inbound_record(source, record),
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::AddProvider {
                        record: Some(record),
                    },
            } => self.on_inbound_provider(record),
            kad::Event::RoutingUpdated {
                peer,
                is_new_peer: true,
                ..
            } => {
                debug!(%peer, "added to the routing table");
                self.join_soon();
                self.hand_own_record_to(peer);
                self.reannounce_if_grown();
            }
            _ => {}
        }
    }

    /// A peer announces it provides a key. Kad already checked that the announcer is the
    /// sender, so a provider record can only ever name its sender; it carries no value, only
    /// addresses, which we filter. There is nothing to sign or verify here (and nothing is
    /// counted in `reef_records_rejected_total`): a node that lies about holding a key is found
    /// out at fetch time, when it has no valid NodeRecord or answers 404.
    pub(super) fn on_inbound_provider(&mut self, mut record: kad::ProviderRecord) {
        if record.key.as_ref().len() != 32 {
            debug!(provider = %record.provider, "refusing a provider record that is not for a content key");
            return;
        }
        let loopback = self
            .via_loopback
            .get(&record.provider)
            .copied()
            .unwrap_or(false);
        record.addresses.retain(|a| addrs::is_usable(a, loopback));
        record.addresses.truncate(MAX_PROVIDER_ADDRS);
        let provider = record.provider;
        if let Err(error) = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .add_provider(record)
        {
            debug!(%provider, %error, "cannot store a provider record");
        }
    }
}
