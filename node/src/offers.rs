//! Capacity offers: a provider's agent publishes the spare capacity it will lend (signed with
//! the provider key, in the DHT under the provider's id) and announces itself under each
//! region of the offer; discovery for a region finds those agents, learns their providers from
//! their verified NodeRecords, and fetches and checks each provider's offer.

use std::collections::BTreeSet;
use std::time::Duration;

use reef_proto::records::{CapacityOffer, ProviderId, offer_key, open, region_announce_key, seal};
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::provider::{ProviderIdentity, unix_ms};

/// An offer lives this long in the DHT; it is republished well before.
const OFFER_LIFETIME: Duration = Duration::from_secs(3600);
const REPUBLISH_EVERY: Duration = Duration::from_secs(20 * 60);
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Most providers a discovery asks for their offer (kad keeps at most 20 announcers per key).
const MAX_PROVIDERS: usize = 20;

/// `[offer]` in the node's TOML: what this provider lends to others. Only a node with a
/// provider key (its agent) publishes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferConfig {
    pub req_per_s: u32,
    pub mbit_per_s: u32,
    pub regions: Vec<String>,
    /// In currency units per GB, e.g. 0.02; kept in millionths on the wire.
    pub price_per_gb: f64,
    pub min_duration_s: u32,
    pub max_duration_s: u32,
}

impl OfferConfig {
    /// The record this config describes, checked as every receiver will check it.
    pub fn to_record(&self, provider: &ProviderIdentity) -> Result<CapacityOffer, String> {
        if !(self.price_per_gb.is_finite() && self.price_per_gb >= 0.0) {
            return Err(format!("price_per_gb {} is not a price", self.price_per_gb));
        }
        let offer = CapacityOffer {
            provider: provider.key.id(),
            name: provider.name.clone(),
            req_per_s: self.req_per_s,
            mbit_per_s: self.mbit_per_s,
            regions: self.regions.clone(),
            price_micros_per_gb: (self.price_per_gb * 1e6).round() as u64,
            min_duration_s: self.min_duration_s,
            max_duration_s: self.max_duration_s,
        };
        sealed(provider, &offer).map_err(|e| format!("the offer would be rejected: {e}"))?;
        Ok(offer)
    }
}

/// Publishes `offer` now and every [`REPUBLISH_EVERY`], and announces this node under each of
/// its regions.
pub fn spawn_publisher(
    provider: ProviderIdentity,
    offer: CapacityOffer,
    overlay: reef_overlay::Client,
) -> tokio::task::JoinHandle<()> {
    crate::republish::spawn("capacity offer", REPUBLISH_EVERY, RETRY_AFTER, move || {
        let (provider, offer, overlay) = (provider.clone(), offer.clone(), overlay.clone());
        async move {
            publish(&provider, &offer, &overlay).await?;
            Ok(format!("regions {:?}", offer.regions))
        }
    })
}

async fn publish(
    provider: &ProviderIdentity,
    offer: &CapacityOffer,
    overlay: &reef_overlay::Client,
) -> Result<(), String> {
    overlay
        .wait_joined(Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())?;
    let value = sealed(provider, offer).map_err(|e| e.to_string())?;
    overlay
        .put_record(offer_key(&offer.provider), value)
        .await
        .map_err(|e| e.to_string())?;
    for region in &offer.regions {
        overlay
            .provide(region_announce_key(region))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `offer` signed by its provider, valid from now for [`OFFER_LIFETIME`].
fn sealed(
    provider: &ProviderIdentity,
    offer: &CapacityOffer,
) -> Result<Vec<u8>, reef_proto::records::RecordError> {
    let now = unix_ms();
    let until = now + OFFER_LIFETIME.as_millis() as u64;
    seal(provider.key.signing_key(), offer, now, until)
}

/// A verified offer, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct OfferView {
    pub provider: String,
    pub name: String,
    pub req_per_s: u32,
    pub mbit_per_s: u32,
    pub regions: Vec<String>,
    pub price_per_gb: f64,
    pub min_duration_s: u32,
    pub max_duration_s: u32,
    /// Unix milliseconds.
    pub valid_until: u64,
}

/// Every provider's verified offer that covers `region`. `own` is this node's provider, whose
/// agent may be this very node (lookups never return ourselves).
pub async fn discover(
    overlay: &reef_overlay::Client,
    region: &str,
    own: ProviderId,
) -> Result<Vec<OfferView>, reef_overlay::Error> {
    let found = discover_records(overlay, region, own, &BTreeSet::new()).await?;
    Ok(found
        .offers
        .into_iter()
        .map(|(offer, valid_until)| OfferView {
            provider: offer.provider.to_string(),
            name: offer.name,
            req_per_s: offer.req_per_s,
            mbit_per_s: offer.mbit_per_s,
            regions: offer.regions,
            price_per_gb: offer.price_micros_per_gb as f64 / 1e6,
            min_duration_s: offer.min_duration_s,
            max_duration_s: offer.max_duration_s,
            valid_until,
        })
        .collect())
}

/// What a discovery found: the offers with their expiry (unix ms), and the agents announced
/// under the region (whom to negotiate with).
pub struct Discovered {
    pub offers: Vec<(CapacityOffer, u64)>,
    pub agents: Vec<reef_overlay::Holder>,
}

/// [`discover`], as the records, without looking up the offers of the providers in `skip`
/// (one whose nodes are gone would only cost a slow lookup).
pub async fn discover_records(
    overlay: &reef_overlay::Client,
    region: &str,
    own: ProviderId,
    skip: &BTreeSet<ProviderId>,
) -> Result<Discovered, reef_overlay::Error> {
    let agents = overlay
        .find_holders(region_announce_key(region), MAX_PROVIDERS)
        .await?;
    let mut providers: BTreeSet<ProviderId> =
        agents.iter().map(|a| a.membership.provider()).collect();
    providers.insert(own);
    providers.retain(|p| !skip.contains(p));
    let lookups = providers.iter().map(|id| overlay.get_record(offer_key(id)));
    let found = futures::future::join_all(lookups).await;
    let now = unix_ms();
    let mut offers = Vec::new();
    for (id, value) in std::mem::take(&mut providers).into_iter().zip(found) {
        let value = match value {
            Ok(Some(value)) => value,
            Ok(None) => continue,
            Err(e) => {
                debug!(provider = %id.short(), error = %e, "offer lookup failed");
                continue;
            }
        };
        // The overlay validated it; opening again gives the fields and the expiry.
        let Ok(opened) = open::<CapacityOffer>(&value, now) else {
            continue;
        };
        let valid_until = opened.expires_at();
        let offer = opened.into_record();
        if offer.provider != id || !offer.regions.iter().any(|r| r == region) {
            continue;
        }
        offers.push((offer, valid_until));
    }
    Ok(Discovered { offers, agents })
}
