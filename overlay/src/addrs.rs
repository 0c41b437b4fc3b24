//! Which advertised addresses are worth remembering and dialling.

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};

/// Whether `addr`, advertised by a peer we reach at a loopback address or not
/// (`remote_is_loopback`), could possibly be dialled by us.
///
/// Rejects unspecified, multicast and broadcast IPs, IPv6 link-local (needs a scope we do not
/// have), relayed addresses, addresses without a transport we speak, and loopback addresses of
/// peers that are not themselves on our loopback.
pub(crate) fn is_usable(addr: &Multiaddr, remote_is_loopback: bool) -> bool {
    let mut iter = addr.iter();
    let host_ok = match iter.next() {
        Some(Protocol::Ip4(ip)) => {
            !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast())
                && (remote_is_loopback || !ip.is_loopback())
        }
        Some(Protocol::Ip6(ip)) => {
            !(ip.is_unspecified() || ip.is_multicast() || ip.is_unicast_link_local())
                && (remote_is_loopback || !ip.is_loopback())
        }
        Some(Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_)) => true,
        _ => false,
    };
    if !host_ok {
        return false;
    }
    let transport_ok = match iter.next() {
        Some(Protocol::Tcp(port)) => port != 0,
        Some(Protocol::Udp(port)) => port != 0 && matches!(iter.next(), Some(Protocol::QuicV1)),
        _ => false,
    };
    transport_ok && !addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// Whether the address points at this machine's loopback interface.
pub(crate) fn is_loopback(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// `addr` with a trailing `/p2p/<peer>` (unless it already ends in one).
pub(crate) fn with_peer(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    match addr.iter().last() {
        Some(Protocol::P2p(_)) => addr.clone(),
        _ => addr.clone().with(Protocol::P2p(peer)),
    }
}

/// The peer named by a trailing `/p2p/<peer id>`, and the address without it.
pub(crate) fn split_peer(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut base = addr.clone();
    match base.pop() {
        Some(Protocol::P2p(peer)) => Some((peer, base)),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn usable(s: &str, local: bool) -> bool {
        is_usable(&s.parse().unwrap(), local)
    }

    #[test]
    fn filters_unusable_addresses() {
        assert!(usable("/ip4/192.0.2.1/tcp/4001", false));
        assert!(usable("/ip4/192.0.2.1/udp/4001/quic-v1", false));
        assert!(usable("/dns4/node.example/tcp/4001", false));
        assert!(usable("/ip4/127.0.0.1/tcp/4001", true));
        assert!(!usable("/ip4/127.0.0.1/tcp/4001", false));
        assert!(!usable("/ip4/0.0.0.0/tcp/4001", true));
        assert!(!usable("/ip4/224.0.0.251/udp/5353/quic-v1", true));
        assert!(!usable("/ip6/fe80::1/tcp/4001", true));
        assert!(!usable("/ip4/192.0.2.1/udp/4001", false));
        assert!(!usable("/ip4/192.0.2.1/tcp/0", false));
        assert!(!usable("/ip4/192.0.2.1/tcp/4001/p2p-circuit", false));
    }

    #[test]
    fn peer_suffix() {
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let full = with_peer(&addr, peer);
        assert_eq!(with_peer(&full, peer), full);
        assert_eq!(split_peer(&full), Some((peer, addr.clone())));
        assert_eq!(split_peer(&addr), None);
    }
}
