//! Gossip in the loop: subscriptions with bounded queues, publishing, verdicts on received
//! messages, and provider withdrawals, which the loop sends and applies itself.
//!
//! Nothing here waits: a full subscriber queue drops the message (counted) instead of
//! stalling the loop, and withdrawals are batched and published on the sweep tick.

use std::collections::BTreeMap;
use std::collections::hash_map::Entry;

use libp2p::{
    PeerId,
    gossipsub::{self, IdentTopic, MessageId, PublishError, TopicHash},
    kad::{RecordKey, store::RecordStore},
};
use reef_proto::{ContentKey, MAX_WITHDRAWAL_KEYS, WITHDRAWAL_TOPIC, Withdrawal};
use tokio::sync::mpsc::{self, error::TrySendError};
use tracing::{debug, warn};

use super::EventLoop;
use crate::Error;
use crate::gossip::{
    Acceptance, GossipMessage, MAX_SUBSCRIBER_QUEUE, MAX_SUBSCRIPTIONS, MessageHandle, Published,
};
use crate::scoring;

impl EventLoop {
    pub(super) fn on_gossip_event(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source: from,
                message_id: id,
                message,
            } => {
                let topic = message.topic.clone();
                if let Some(verdict) = self.on_gossip_message(from, &id, message) {
                    self.metrics.gossip_verdict(topic.as_str(), verdict);
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(&id, &from, verdict.into());
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                debug!(peer = %peer_id, %topic, "peer subscribed")
            }
            gossipsub::Event::Unsubscribed { peer_id, topic } => {
                debug!(peer = %peer_id, %topic, "peer unsubscribed")
            }
            gossipsub::Event::SlowPeer { peer_id, .. } => {
                debug!(peer = %peer_id, "gossip peer is slow; messages to it were dropped")
            }
            _ => {}
        }
    }

    /// The verdict on a received message, or `None` when a subscriber now owns it (and
    /// reports through [`crate::Client::report`]).
    fn on_gossip_message(
        &mut self,
        from: PeerId,
        id: &MessageId,
        message: gossipsub::Message,
    ) -> Option<Acceptance> {
        // Strict validation mode drops unsigned messages before we see them.
        let Some(source) = message.source else {
            return Some(Acceptance::Reject);
        };
        if message.topic.as_str() == WITHDRAWAL_TOPIC {
            return Some(self.on_withdrawal(source, &message.data));
        }
        let Entry::Occupied(subscriber) = self.subscribers.entry(message.topic.clone()) else {
            // Subscribed but nobody consumes it (any more): do not forward what nobody checked.
            return Some(Acceptance::Ignore);
        };
        let delivered = GossipMessage {
            source,
            topic: message.topic.to_string(),
            data: message.data,
            handle: MessageHandle {
                id: id.clone(),
                from,
                topic: message.topic,
            },
        };
        match subscriber.get().try_send(delivered) {
            Ok(()) => None,
            Err(TrySendError::Full(m)) => {
                self.gossip_dropped += 1;
                debug!(%source, topic = %m.topic, "subscriber queue full; gossip message dropped");
                Some(Acceptance::Ignore)
            }
            Err(TrySendError::Closed(m)) => {
                // The subscriber is gone; we stay in the topic's mesh but judge nothing.
                debug!(topic = %m.topic, "gossip subscriber gone");
                subscriber.remove();
                Some(Acceptance::Ignore)
            }
        }
    }

    pub(super) fn subscribe(
        &mut self,
        topic: &str,
        queue: usize,
    ) -> Result<mpsc::Receiver<GossipMessage>, Error> {
        let hash = TopicHash::from_raw(topic);
        self.subscribers.retain(|_, tx| !tx.is_closed());
        if self.subscribers.contains_key(&hash) {
            return Err(Error::Gossip(format!("{topic} already has a subscriber")));
        }
        if hash.as_str() == WITHDRAWAL_TOPIC {
            return Err(Error::Gossip(format!("{topic} is the overlay's own")));
        }
        if self.subscribers.len() >= MAX_SUBSCRIPTIONS {
            return Err(Error::Gossip(format!(
                "at most {MAX_SUBSCRIPTIONS} topics can have subscribers"
            )));
        }
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        gossipsub
            .subscribe(&IdentTopic::new(topic))
            .map_err(|e| Error::Gossip(format!("subscribing to {topic}: {e}")))?;
        // Whatever the subscriber rejects counts against the peer that relayed it.
        gossipsub
            .set_topic_params(IdentTopic::new(topic), scoring::topic())
            .map_err(|e| Error::Gossip(format!("scoring {topic}: {e}")))?;
        let (tx, rx) = mpsc::channel(queue.clamp(1, MAX_SUBSCRIBER_QUEUE));
        self.subscribers.insert(hash, tx);
        debug!(%topic, "subscribed");
        Ok(rx)
    }

    pub(super) fn publish(&mut self, topic: &str, data: Vec<u8>) -> Result<Published, Error> {
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(IdentTopic::new(topic), data)
        {
            Ok(id) => {
                debug!(%topic, message = %id, "published");
                Ok(Published::Sent)
            }
            Err(PublishError::NoPeersSubscribedToTopic) => Ok(Published::NoPeers),
            Err(PublishError::AllQueuesFull(_)) => Err(Error::Busy),
            Err(e) => Err(Error::Gossip(format!("publishing on {topic}: {e}"))),
        }
    }

    /// Gossipsub's score of every connected peer it scores.
    pub(super) fn gossip_scores(&self) -> BTreeMap<String, f64> {
        let gossipsub = &self.swarm.behaviour().gossipsub;
        self.swarm
            .connected_peers()
            .filter_map(|peer| Some((peer.to_string(), gossipsub.peer_score(peer)?)))
            .collect()
    }

    pub(super) fn report(&mut self, handle: &MessageHandle, acceptance: Acceptance) -> bool {
        self.metrics
            .gossip_verdict(handle.topic.as_str(), acceptance);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&handle.id, &handle.from, acceptance.into())
    }

    // ---- provider withdrawals ----

    /// Stops providing `keys`; those we did provide are queued for the next withdrawal message.
    pub(super) fn unprovide(&mut self, keys: Vec<ContentKey>) {
        for key in keys {
            let rkey = RecordKey::new(key.as_bytes());
            let kad = &mut self.swarm.behaviour_mut().kad;
            let provided = kad
                .store_mut()
                .providers(&rkey)
                .iter()
                .any(|p| p.provider == self.local);
            kad.stop_providing(&rkey);
            self.unannounced.retain(|k| *k != rkey);
            if provided {
                debug!(key = %key.short(), "stopped providing");
                self.withdrawals.push(key);
            }
        }
        if self.withdrawals.len() >= MAX_WITHDRAWAL_KEYS {
            self.flush_withdrawals();
        }
    }

    /// Publishes the queued withdrawals (on the sweep tick, or at once when a message is full).
    pub(super) fn flush_withdrawals(&mut self) {
        if self.withdrawals.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.withdrawals);
        for chunk in keys.chunks(MAX_WITHDRAWAL_KEYS) {
            let withdrawal = Withdrawal {
                keys: chunk.to_vec(),
                nonce: rand::random(),
            };
            let data = match withdrawal.encode() {
                Ok(data) => data,
                Err(error) => {
                    warn!(%error, "cannot encode a withdrawal");
                    continue;
                }
            };
            match self.publish(WITHDRAWAL_TOPIC, data) {
                Ok(outcome) => debug!(keys = chunk.len(), ?outcome, "withdrawal published"),
                // Records on other nodes then expire on their own.
                Err(error) => debug!(keys = chunk.len(), %error, "withdrawal not published"),
            }
        }
    }

    /// A peer withdraws its own provider records: drop those we store for it.
    fn on_withdrawal(&mut self, source: PeerId, data: &[u8]) -> Acceptance {
        let withdrawal = match Withdrawal::decode(data) {
            Ok(w) => w,
            Err(error) => {
                debug!(%source, %error, "refusing a malformed withdrawal");
                return Acceptance::Reject;
            }
        };
        let store = self.swarm.behaviour_mut().kad.store_mut();
        for key in &withdrawal.keys {
            store.remove_provider(&RecordKey::new(key.as_bytes()), &source);
        }
        debug!(%source, keys = withdrawal.keys.len(), "provider records withdrawn");
        Acceptance::Accept
    }
}
