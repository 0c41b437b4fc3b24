//! `GET /api/load`: the table as JSON, per node and summed per provider.

use std::collections::BTreeMap;
use std::time::Instant;

use reef_proto::records::{Membership, ProviderId};
use serde::Serialize;

use super::table::Table;

#[derive(Debug, Clone, Serialize)]
pub struct LoadView {
    /// Every node listed, ordered by peer id; ourselves included.
    pub nodes: Vec<NodeLoad>,
    /// One entry per provider with a node listed, ordered by provider id.
    pub providers: Vec<ProviderLoad>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeLoad {
    pub peer_id: String,
    pub provider: ProviderRef,
    pub req_per_s: u32,
    pub egress_bytes_per_s: u64,
    /// What it serves itself, against its capacity.
    pub utilisation_permille: u16,
    /// What arrives at it, including requests it sends to a peer provider's nodes.
    pub demand_permille: u16,
    pub hit_ratio_permille: u16,
    /// How old its report is: since it was issued, by our clock (see `table`).
    pub age_ms: u64,
}

/// Which provider a node's load counts toward.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderRef {
    /// The provider's public key (hex). An uncertified node is a provider of its own, keyed
    /// by its own public key.
    pub id: String,
    /// The name in the node's provider certificate; `null` without one (a name the node gives
    /// itself is not verified, so it is not shown as its provider's).
    pub name: Option<String>,
    pub certified: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProviderLoad {
    pub id: String,
    pub name: Option<String>,
    pub certified: bool,
    pub nodes: usize,
    /// Sum over its nodes.
    pub req_per_s: u64,
    /// Sum over its nodes.
    pub egress_bytes_per_s: u64,
    /// Mean of its nodes' utilisation. Reports do not carry capacities, so the mean weighs
    /// every node alike; it equals the capacity-weighted figure when the nodes are equal.
    pub utilisation_permille: u16,
    /// The busiest node's utilisation.
    pub max_utilisation_permille: u16,
    /// Mean of its nodes' demand, weighed like utilisation: what peering starts and ends on.
    pub demand_permille: u16,
}

fn provider_ref(membership: &Membership) -> (ProviderId, ProviderRef) {
    let id = membership.provider();
    let name = match membership {
        Membership::Certified { name, .. } => Some(name.clone()),
        Membership::Independent { .. } => None,
    };
    let r = ProviderRef {
        id: id.to_string(),
        name,
        certified: membership.is_certified(),
    };
    (id, r)
}

/// The listed entries of `table` at `now`.
pub fn view(table: &Table, now: Instant) -> LoadView {
    let mut nodes: Vec<NodeLoad> = Vec::new();
    // Per provider: the sums, and the sums of utilisation and demand for the means.
    let mut providers: BTreeMap<ProviderId, (ProviderLoad, u64, u64)> = BTreeMap::new();
    for (peer, entry) in table.live(now) {
        let r = entry.report.record();
        let (id, provider) = provider_ref(&entry.membership);
        let demand = r.demand_permille.max(r.utilisation_permille);
        let (sum, util_sum, demand_sum) = providers.entry(id).or_insert_with(|| {
            let load = ProviderLoad {
                id: provider.id.clone(),
                name: provider.name.clone(),
                certified: provider.certified,
                nodes: 0,
                req_per_s: 0,
                egress_bytes_per_s: 0,
                utilisation_permille: 0,
                max_utilisation_permille: 0,
                demand_permille: 0,
            };
            (load, 0, 0)
        });
        sum.nodes += 1;
        sum.req_per_s = sum.req_per_s.saturating_add(u64::from(r.req_per_s));
        sum.egress_bytes_per_s = sum.egress_bytes_per_s.saturating_add(r.egress_bytes_per_s);
        sum.max_utilisation_permille = sum.max_utilisation_permille.max(r.utilisation_permille);
        *util_sum += u64::from(r.utilisation_permille);
        *demand_sum += u64::from(demand);
        nodes.push(NodeLoad {
            peer_id: peer.to_string(),
            provider,
            req_per_s: r.req_per_s,
            egress_bytes_per_s: r.egress_bytes_per_s,
            utilisation_permille: r.utilisation_permille,
            demand_permille: demand,
            hit_ratio_permille: r.hit_ratio_permille,
            age_ms: u64::try_from(now.saturating_duration_since(entry.issued).as_millis())
                .unwrap_or(u64::MAX),
        });
    }
    nodes.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
    let providers = providers
        .into_values()
        .map(|(mut p, util_sum, demand_sum)| {
            let n = p.nodes.max(1) as u64;
            // Rounded to the nearest permille; a mean of u16 values fits a u16.
            let mean = |sum: u64| u16::try_from((sum + n / 2) / n).unwrap_or(u16::MAX);
            p.utilisation_permille = mean(util_sum);
            p.demand_permille = mean(demand_sum);
            p
        })
        .collect();
    LoadView { nodes, providers }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reef_overlay::PeerId;
    use reef_proto::records::{
        LoadReport, ProviderCert, ProviderKey, SigningKey, open, peer_id_bytes, seal,
    };

    use super::*;
    use crate::load::table::{ENTRY_TTL, Now};

    const T0: u64 = 1_700_000_000_000;

    fn report(key: &SigningKey, cert: Option<Vec<u8>>, req: u32, util: u16) -> (PeerId, Vec<u8>) {
        let peer_id = peer_id_bytes(&key.verifying_key().to_bytes());
        let record = LoadReport {
            peer_id: peer_id.clone(),
            cert,
            seq: 1,
            req_per_s: req,
            egress_bytes_per_s: u64::from(req) * 1000,
            utilisation_permille: util,
            hit_ratio_permille: 500,
            demand_permille: util.saturating_mul(2),
        };
        let sealed = seal(key, &record, T0, T0 + 10_000).unwrap();
        (PeerId::from_bytes(&peer_id).unwrap(), sealed)
    }

    fn cert(provider: &ProviderKey, node: &SigningKey) -> Vec<u8> {
        let cert = ProviderCert {
            provider: provider.id(),
            name: "acme".into(),
            node: peer_id_bytes(&node.verifying_key().to_bytes()),
        };
        seal(provider.signing_key(), &cert, T0 - 1000, T0 + 86_400_000).unwrap()
    }

    #[test]
    fn nodes_are_listed_and_summed_per_provider() {
        let start = Instant::now();
        let now = Now {
            mono: start,
            unix_ms: T0,
        };
        let acme = ProviderKey::from_bytes(&[9; 32]);
        let (n1, n2, solo) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
            SigningKey::from_bytes(&[3; 32]),
        );
        let mut table = Table::default();
        for (key, cert, req, util) in [
            (&n1, Some(cert(&acme, &n1)), 10, 100),
            (&n2, Some(cert(&acme, &n2)), 30, 401),
            (&solo, None, 5, 7),
        ] {
            let (peer, sealed) = report(key, cert, req, util);
            table.insert(peer, open(&sealed, T0).unwrap(), now).unwrap();
        }
        let v = view(&table, start + Duration::from_millis(250));
        assert_eq!(v.nodes.len(), 3);
        assert!(v.nodes.windows(2).all(|w| w[0].peer_id < w[1].peer_id));
        assert!(v.nodes.iter().all(|n| n.age_ms == 250));
        assert_eq!(v.providers.len(), 2);
        let acme_row = v.providers.iter().find(|p| p.certified).unwrap();
        assert_eq!(acme_row.id, acme.id().to_string());
        assert_eq!(acme_row.name.as_deref(), Some("acme"));
        assert_eq!(
            (
                acme_row.nodes,
                acme_row.req_per_s,
                acme_row.egress_bytes_per_s
            ),
            (2, 40, 40_000)
        );
        assert_eq!(
            (
                acme_row.utilisation_permille,
                acme_row.max_utilisation_permille
            ),
            (251, 401)
        );
        // Reported twice the utilisation: the mean of 200 and 802.
        assert_eq!(acme_row.demand_permille, 501);
        let solo_row = v.providers.iter().find(|p| !p.certified).unwrap();
        let solo_id = ProviderId::from_bytes(solo.verifying_key().to_bytes());
        assert_eq!(solo_row.id, solo_id.to_string());
        assert_eq!((solo_row.name.as_deref(), solo_row.nodes), (None, 1));
        let json = serde_json::to_value(&v).unwrap();
        assert!(json["nodes"][0]["provider"]["certified"].is_boolean());

        // Expired entries are not listed.
        let later = view(&table, start + ENTRY_TTL);
        assert!(later.nodes.is_empty() && later.providers.is_empty());
    }
}
