//! Which holder of an object to ask first.

use std::time::Duration;

use reef_overlay::Holder;

/// Orders holders: our own provider first, then our region, then lowest measured RTT;
/// holders whose RTT we have not measured go after those we have.
pub fn rank(mut holders: Vec<Holder>, provider: &str, region: &str) -> Vec<Holder> {
    holders.sort_by_key(|h| {
        (
            h.record.provider != provider,
            h.record.region != region,
            h.rtt.unwrap_or(Duration::MAX),
        )
    });
    holders
}

#[cfg(test)]
mod tests {
    use super::*;
    use reef_overlay::{Keypair, PeerId};
    use reef_proto::NodeRecord;

    fn holder(provider: &str, region: &str, rtt_ms: Option<u64>) -> Holder {
        let peer = PeerId::from(Keypair::generate_ed25519().public());
        Holder {
            peer,
            record: NodeRecord {
                peer_id: peer.to_bytes(),
                http: format!("{provider}-{region}-{rtt_ms:?}"),
                provider: provider.into(),
                region: region.into(),
                listen_addrs: vec![],
                issued_at: 0,
            },
            rtt: rtt_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn same_provider_then_region_then_rtt() {
        let ranked = rank(
            vec![
                holder("other", "eu", Some(1)),
                holder("acme", "us", Some(1)),
                holder("acme", "eu", None),
                holder("acme", "eu", Some(30)),
                holder("acme", "eu", Some(5)),
            ],
            "acme",
            "eu",
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
}
