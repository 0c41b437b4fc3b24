//! Which holder of an object to ask first.

use std::time::Duration;

use reef_overlay::{Holder, PeerId};
use reef_proto::records::ProviderId;

/// Orders holders: our own provider first (by verified membership: a holder counts as ours
/// only with a certificate from our provider's key), then our region, then lowest measured
/// RTT; holders whose RTT we have not measured go after those we have.
///
/// A holder that is `swamped` (its load report says more arrives than it can serve) goes
/// after every other one of ours, and is left out altogether when it belongs to another
/// provider: that provider is shedding load (perhaps to us), and a body pulled through its
/// saturated links would make our answer as slow as its own. The origin, or one of our own
/// nodes, serves instead.
pub fn rank(
    mut holders: Vec<Holder>,
    provider: ProviderId,
    region: &str,
    swamped: impl Fn(&PeerId) -> bool,
) -> Vec<Holder> {
    holders.retain(|h| h.membership.provider() == provider || !swamped(&h.peer));
    holders.sort_by_key(|h| {
        (
            h.membership.provider() != provider,
            swamped(&h.peer),
            h.record.region != region,
            h.rtt.unwrap_or(Duration::MAX),
        )
    });
    holders
}

#[cfg(test)]
mod tests {
    use super::*;
    use reef_overlay::Keypair;
    use reef_proto::records::{Capacity, Membership, NodeRecord};

    fn acme() -> ProviderId {
        ProviderId::from_bytes([1; 32])
    }

    fn other() -> ProviderId {
        ProviderId::from_bytes([2; 32])
    }

    fn holder(membership: Membership, region: &str, rtt_ms: Option<u64>) -> Holder {
        let peer = PeerId::from(Keypair::generate_ed25519().public());
        let tag = match &membership {
            Membership::Certified { provider, .. } if *provider == acme() => "acme",
            Membership::Certified { .. } => "other",
            Membership::Independent { .. } => "solo",
        };
        Holder {
            peer,
            record: NodeRecord {
                peer_id: peer.to_bytes(),
                http: format!("{tag}-{region}-{rtt_ms:?}"),
                region: region.into(),
                listen_addrs: vec![],
                capacity: Capacity::default(),
                cert: None,
            },
            membership,
            rtt: rtt_ms.map(Duration::from_millis),
        }
    }

    fn certified(provider: ProviderId, name: &str) -> Membership {
        Membership::Certified {
            provider,
            name: name.into(),
        }
    }

    #[test]
    fn same_provider_then_region_then_rtt() {
        let ranked = rank(
            vec![
                holder(certified(other(), "other"), "eu", Some(1)),
                holder(certified(acme(), "acme"), "us", Some(1)),
                holder(certified(acme(), "acme"), "eu", None),
                holder(certified(acme(), "acme"), "eu", Some(30)),
                holder(certified(acme(), "acme"), "eu", Some(5)),
            ],
            acme(),
            "eu",
            |_| false,
        );
        let order: Vec<_> = ranked.iter().map(|h| h.record.http.as_str()).collect();
        assert_eq!(
            order,
            [
                "acme-eu-Some(5)",
                "acme-eu-Some(30)",
                "acme-eu-None",
                "acme-us-Some(1)",
                "other-eu-Some(1)"
            ]
        );
    }

    #[test]
    fn a_name_alone_never_makes_a_holder_ours() {
        // Another provider that calls itself "acme", and an independent node: neither is
        // ranked with acme's own nodes.
        let ranked = rank(
            vec![
                holder(certified(other(), "acme"), "eu", Some(1)),
                holder(
                    Membership::Independent {
                        provider: ProviderId::from_bytes([3; 32]),
                    },
                    "eu",
                    Some(1),
                ),
                holder(certified(acme(), "acme"), "us", Some(50)),
            ],
            acme(),
            "eu",
            |_| false,
        );
        assert_eq!(ranked[0].record.http, "acme-us-Some(50)");
    }

    #[test]
    fn swamped_holders_go_last_when_ours_and_are_left_out_when_not() {
        let swamped_ours = holder(certified(acme(), "acme"), "eu", Some(1));
        let swamped_theirs = holder(certified(other(), "other"), "eu", Some(1));
        let swamped = [swamped_ours.peer, swamped_theirs.peer];
        let ranked = rank(
            vec![
                swamped_theirs,
                swamped_ours,
                holder(certified(other(), "other"), "us", Some(90)),
                holder(certified(acme(), "acme"), "us", Some(50)),
            ],
            acme(),
            "eu",
            |peer| swamped.contains(peer),
        );
        let order: Vec<_> = ranked.iter().map(|h| h.record.http.as_str()).collect();
        assert_eq!(
            order,
            ["acme-us-Some(50)", "acme-eu-Some(1)", "other-us-Some(90)"]
        );
    }
}
