//! The zone's names: where a query name falls (outside, apex, a nameserver, a service, an
//! empty name between them, or nothing) and the fixed records (SOA, NS, glue).
//!
//! A service is named by its hostname under the zone: `video.example` of our provider is
//! `video.example.cdn.example`, which the customer points at with a CNAME. Only our own
//! provider's services (those in the node's `[services]`) are in the zone.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};

use super::settings::{Nameserver, Settings, dns_name};

/// Nameservers are changed by operators, not by load: resolvers may keep them an hour.
pub const NS_TTL_S: u32 = 3600;
/// SOA timers for secondaries; nobody transfers this zone, but the fields must hold something
/// sensible.
const SOA_REFRESH_S: i32 = 3600;
const SOA_RETRY_S: i32 = 600;
const SOA_EXPIRE_S: i32 = 86_400;

/// Why a zone cannot be served with these settings (the operator's to fix).
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("--dns needs a zone: set [dns] zone = \"cdn.example\" in the config file")]
    NoZone,
    #[error(
        "nameserver {0} is inside the zone but has no addresses: give [[dns.nameservers]] \
         addresses"
    )]
    NoGlue(String),
    #[error(
        "the DNS server listens on {0}, an address nobody can be sent to: list the zone's \
         [[dns.nameservers]] with their addresses"
    )]
    UnspecifiedListen(SocketAddr),
    #[error("{0}")]
    Name(String),
}

/// Where a query name falls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place<'z> {
    /// Not in our zone: we are not authoritative.
    Outside,
    Apex,
    /// An in-zone nameserver, with its addresses.
    Nameserver(&'z [IpAddr]),
    /// One of our services, by hostname.
    Service(&'z str),
    /// A name with names below it but no records of its own (`example.cdn.example` when
    /// `video.example` is a service): NODATA, never NXDOMAIN, or resolvers that minimise
    /// their queries (RFC 9156) would stop there.
    Between,
    /// Nothing here: NXDOMAIN.
    Nothing,
}

#[derive(Debug)]
pub struct Zone {
    apex: Name,
    /// Labels of the apex, to cut a name into its part under the zone.
    apex_labels: usize,
    pub ttl_s: u32,
    soa: Record,
    ns: Vec<Record>,
    /// A/AAAA of in-zone nameservers, for the additional section of an NS answer.
    glue: Vec<Record>,
    /// In-zone nameservers by their name under the zone (`ns1`).
    nameservers: HashMap<String, Vec<IpAddr>>,
    services: HashSet<String>,
    between: HashSet<String>,
}

impl Zone {
    /// The zone of `settings` for `services` (our provider's hostnames). `listen` is the
    /// bound DNS address: the default nameserver, `ns1.<zone>`, is there. `serial` goes into
    /// the SOA (the start time: the zone has no versions of its own).
    pub fn new<'a>(
        settings: &Settings,
        services: impl IntoIterator<Item = &'a str>,
        listen: SocketAddr,
        serial: u32,
    ) -> Result<Zone, ZoneError> {
        let apex = settings.zone.clone().ok_or(ZoneError::NoZone)?;
        let apex_labels = usize::from(apex.num_labels());
        let nameservers = if settings.nameservers.is_empty() {
            if listen.ip().is_unspecified() {
                return Err(ZoneError::UnspecifiedListen(listen));
            }
            let name = Name::from_ascii("ns1")
                .and_then(|n| n.append_domain(&apex))
                .map_err(|e| ZoneError::Name(format!("ns1.{apex}: {e}")))?;
            vec![Nameserver {
                name,
                addresses: vec![listen.ip()],
            }]
        } else {
            settings.nameservers.clone()
        };
        let hostmaster = match &settings.hostmaster {
            Some(h) => h.clone(),
            None => Name::from_ascii("hostmaster")
                .and_then(|n| n.append_domain(&apex))
                .map_err(|e| ZoneError::Name(format!("hostmaster.{apex}: {e}")))?,
        };
        let mut zone = Zone {
            soa: Record::from_rdata(
                apex.clone(),
                settings.ttl_s,
                RData::SOA(SOA::new(
                    nameservers[0].name.clone(),
                    hostmaster,
                    serial,
                    SOA_REFRESH_S,
                    SOA_RETRY_S,
                    SOA_EXPIRE_S,
                    // Negative answers are cached for min(SOA TTL, this): as short as
                    // positive ones, since a service may appear any moment.
                    settings.ttl_s,
                )),
            ),
            ns: Vec::new(),
            glue: Vec::new(),
            nameservers: HashMap::new(),
            services: HashSet::new(),
            between: HashSet::new(),
            ttl_s: settings.ttl_s,
            apex_labels,
            apex,
        };
        for ns in nameservers {
            zone.ns.push(Record::from_rdata(
                zone.apex.clone(),
                NS_TTL_S,
                RData::NS(NS(ns.name.clone())),
            ));
            let Some(Some(relative)) = zone.relative(&LowerName::new(&ns.name)) else {
                continue;
            };
            if ns.addresses.is_empty() {
                return Err(ZoneError::NoGlue(ns.name.to_ascii()));
            }
            for addr in &ns.addresses {
                zone.glue
                    .push(address_record(ns.name.clone(), NS_TTL_S, *addr));
            }
            zone.add_between(&relative);
            zone.nameservers.insert(relative, ns.addresses);
        }
        for host in services {
            // A hostname that is not a DNS name (an IPv6 literal) has no place in the zone.
            let Ok(name) = dns_name("service", host) else {
                continue;
            };
            let relative = name.to_ascii();
            let relative = relative.trim_end_matches('.').to_string();
            zone.add_between(&relative);
            zone.services.insert(relative);
        }
        // A name that is both a service and between others is a service.
        let named: Vec<String> = zone
            .between
            .iter()
            .filter(|n| zone.services.contains(*n) || zone.nameservers.contains_key(*n))
            .cloned()
            .collect();
        for n in named {
            zone.between.remove(&n);
        }
        Ok(zone)
    }

    /// Every proper suffix of `relative` (`example` for `video.example`) has names below it.
    fn add_between(&mut self, relative: &str) {
        let mut rest = relative;
        while let Some((_, suffix)) = rest.split_once('.') {
            self.between.insert(suffix.to_string());
            rest = suffix;
        }
    }

    pub fn apex(&self) -> &Name {
        &self.apex
    }

    /// The part of `name` under the apex, lower-case, labels joined with dots (`""` for the
    /// apex itself); `None` outside the zone, `Some(None)` for a name in the zone that no
    /// host name can be (odd bytes in a label).
    fn relative(&self, name: &LowerName) -> Option<Option<String>> {
        let name = Name::from(name);
        if !self.apex.zone_of(&name) {
            return None;
        }
        let count = usize::from(name.num_labels()).checked_sub(self.apex_labels)?;
        let mut out = String::new();
        for label in name.iter().take(count) {
            if !label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            {
                return Some(None);
            }
            if !out.is_empty() {
                out.push('.');
            }
            out.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
        }
        Some(Some(out))
    }

    /// Where `name` falls in the zone.
    pub fn place(&self, name: &LowerName) -> Place<'_> {
        let relative = match self.relative(name) {
            None => return Place::Outside,
            Some(None) => return Place::Nothing,
            Some(Some(relative)) => relative,
        };
        if relative.is_empty() {
            return Place::Apex;
        }
        if let Some(addrs) = self.nameservers.get(&relative) {
            return Place::Nameserver(addrs);
        }
        if let Some(host) = self.services.get(&relative) {
            return Place::Service(host);
        }
        if self.between.contains(&relative) {
            return Place::Between;
        }
        Place::Nothing
    }

    pub fn soa(&self) -> &Record {
        &self.soa
    }

    pub fn ns(&self) -> &[Record] {
        &self.ns
    }

    pub fn glue(&self) -> &[Record] {
        &self.glue
    }

    /// Our services' hostnames.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.services.iter().map(String::as_str)
    }
}

/// An A or AAAA record for `addr`.
pub fn address_record(name: Name, ttl: u32, addr: IpAddr) -> Record {
    let rdata = match addr.to_canonical() {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, ttl, rdata)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(services: &[&str]) -> Zone {
        let settings = Settings {
            zone: Some(dns_name("zone", "cdn.example").unwrap()),
            ..Settings::default()
        };
        Zone::new(
            &settings,
            services.iter().copied(),
            "127.0.0.10:53".parse().unwrap(),
            7,
        )
        .unwrap()
    }

    fn at<'z>(z: &'z Zone, name: &str) -> Place<'z> {
        z.place(&LowerName::new(&Name::from_ascii(name).unwrap()))
    }

    #[test]
    fn names_fall_where_they_should() {
        let z = zone(&["video.example", "img.example.com", "[::1]"]);
        assert_eq!(at(&z, "cdn.example."), Place::Apex);
        assert_eq!(at(&z, "CDN.Example."), Place::Apex);
        assert_eq!(
            at(&z, "video.EXAMPLE.cdn.example."),
            Place::Service("video.example")
        );
        assert_eq!(
            at(&z, "img.example.com.cdn.example."),
            Place::Service("img.example.com")
        );
        assert_eq!(at(&z, "example.cdn.example."), Place::Between);
        assert_eq!(at(&z, "example.com.cdn.example."), Place::Between);
        assert_eq!(at(&z, "com.cdn.example."), Place::Between);
        assert_eq!(at(&z, "nobody.cdn.example."), Place::Nothing);
        assert_eq!(at(&z, "a.video.example.cdn.example."), Place::Nothing);
        assert_eq!(at(&z, "video.example."), Place::Outside);
        assert_eq!(at(&z, "xcdn.example."), Place::Outside);
        assert_eq!(at(&z, "example."), Place::Outside);
        let ns1: &[IpAddr] = &["127.0.0.10".parse().unwrap()];
        assert_eq!(at(&z, "ns1.cdn.example."), Place::Nameserver(ns1));
        assert_eq!(z.ns().len(), 1);
        assert_eq!(z.glue().len(), 1);
        let mut services: Vec<&str> = z.services().collect();
        services.sort();
        assert_eq!(services, ["img.example.com", "video.example"]);
    }

    #[test]
    fn a_zone_needs_a_name_and_reachable_nameservers() {
        let listen: SocketAddr = "0.0.0.0:53".parse().unwrap();
        let no_zone = Zone::new(&Settings::default(), [], listen, 1).unwrap_err();
        assert!(matches!(no_zone, ZoneError::NoZone));
        let mut settings = Settings {
            zone: Some(dns_name("zone", "cdn.example").unwrap()),
            ..Settings::default()
        };
        let e = Zone::new(&settings, [], listen, 1).unwrap_err();
        assert!(matches!(e, ZoneError::UnspecifiedListen(_)), "{e}");
        settings.nameservers = vec![Nameserver {
            name: dns_name("ns", "ns.cdn.example").unwrap(),
            addresses: Vec::new(),
        }];
        let e = Zone::new(&settings, [], listen, 1).unwrap_err();
        assert!(e.to_string().contains("ns.cdn.example"), "{e}");
        // Out of the zone, no glue is needed.
        settings.nameservers[0].name = dns_name("ns", "ns.provider.example").unwrap();
        let z = Zone::new(&settings, [], listen, 1).unwrap();
        assert!(z.glue().is_empty());
    }
}
