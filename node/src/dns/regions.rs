//! Which region a DNS client is in: subnets mapped to region names by the operator
//! (`[[dns.regions]]`), matched against the client subnet a resolver forwards (EDNS Client
//! Subnet, RFC 7871) or else the resolver's own address.

use std::net::IpAddr;

use ipnet::IpNet;

/// One `subnet → region` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub subnet: IpNet,
    pub region: String,
}

/// Rules ordered most specific first, so the first that contains an address is its longest
/// prefix match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionMap {
    rules: Vec<Rule>,
}

/// Where a client was placed, and how much of its address decided it: the prefix length of the
/// rule that matched, which an ECS answer reports as its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed<'a> {
    pub region: &'a str,
    pub prefix_len: u8,
}

impl RegionMap {
    pub fn new(mut rules: Vec<Rule>) -> Self {
        // Stable: of two rules for the same subnet, the first given wins.
        rules.sort_by_key(|r| std::cmp::Reverse(r.subnet.prefix_len()));
        Self { rules }
    }

    /// The region of `addr` by the most specific rule that contains it. IPv4-mapped IPv6
    /// addresses (a dual-stack socket's view of an IPv4 client) count as IPv4.
    pub fn region_of(&self, addr: IpAddr) -> Option<Placed<'_>> {
        let addr = addr.to_canonical();
        self.rules
            .iter()
            .find(|r| r.subnet.contains(&addr))
            .map(|r| Placed {
                region: &r.region,
                prefix_len: r.subnet.prefix_len(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(subnet: &str, region: &str) -> Rule {
        Rule {
            subnet: subnet.parse().unwrap(),
            region: region.into(),
        }
    }

    #[test]
    fn the_longest_prefix_wins_whatever_the_order() {
        let map = RegionMap::new(vec![
            rule("10.0.0.0/8", "wide"),
            rule("10.1.2.0/24", "narrow"),
            rule("2001:db8::/32", "v6"),
        ]);
        let at = |a: &str| {
            map.region_of(a.parse().unwrap())
                .map(|p| (p.region, p.prefix_len))
        };
        assert_eq!(at("10.1.2.3"), Some(("narrow", 24)));
        assert_eq!(at("10.9.9.9"), Some(("wide", 8)));
        assert_eq!(at("::ffff:10.1.2.3"), Some(("narrow", 24)));
        assert_eq!(at("2001:db8::1"), Some(("v6", 32)));
        assert_eq!(at("192.0.2.1"), None);
        assert!(
            RegionMap::default()
                .region_of("10.0.0.1".parse().unwrap())
                .is_none()
        );
    }
}
