//! `[dns]` in the node's config, and `--dns ADDR` (the same as `[dns] listen`): the zone this
//! node answers for and how it answers.
//!
//! ```toml
//! [dns]
//! listen = "0.0.0.0:53"          # or --dns ADDR; without it no DNS server runs
//! zone = "cdn.example"           # the provider's CDN domain
//! ttl_s = 20                     # TTL of node addresses (and of negative answers)
//! answers = 2                    # addresses per answer
//! hostmaster = "hostmaster.cdn.example"   # the SOA's mailbox, as a name
//! [[dns.nameservers]]            # the zone's NS records; an in-zone name needs addresses
//! name = "ns1.cdn.example"
//! addresses = ["192.0.2.53"]
//! [[dns.regions]]                # client subnet → region, longest prefix wins
//! subnet = "192.0.2.0/24"
//! region = "eu"
//! ```

use std::net::{IpAddr, SocketAddr};

use hickory_server::proto::rr::Name;
use ipnet::IpNet;
use serde::Deserialize;

use super::regions::{RegionMap, Rule};

/// Node addresses change with load, so resolvers should ask again soon; 20 s is what CDNs
/// commonly use for load-steered names.
pub const DEFAULT_TTL_S: u32 = 20;
/// A day: longer would let resolvers keep sending clients to a node long gone.
pub const MAX_TTL_S: u32 = 86_400;
/// Two addresses: a client whose first choice fails has a second, and the load spreads over
/// more nodes than one per TTL.
pub const DEFAULT_ANSWERS: usize = 2;
/// 16 AAAA records (28 bytes each, names compressed) fit the 512 bytes of a UDP answer
/// without EDNS for names up to about 50 bytes; a longer answer is truncated and the client
/// asks again over TCP.
pub const MAX_ANSWERS: usize = 16;
/// A zone delegated to more nameservers than this gains nothing; resolvers try a few.
pub const MAX_NAMESERVERS: usize = 8;
/// Addresses of one nameserver (v4 and v6, a couple each).
pub const MAX_NAMESERVER_ADDRESSES: usize = 4;
/// Each query scans the rules; a thousand subnets is a detailed map of one provider's world.
pub const MAX_REGION_RULES: usize = 1024;
/// Region names are labels in NodeRecords, which cap them at this length.
const MAX_REGION_LEN: usize = reef_proto::records::MAX_REGION_LEN;

/// `[dns]` as written in the file; every field optional, so a later layer (the flags) changes
/// only what it gives.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsFile {
    /// UDP and TCP address of the DNS server (`--dns ADDR`); without it none runs.
    pub listen: Option<SocketAddr>,
    /// The provider's CDN domain, e.g. `cdn.example`.
    pub zone: Option<String>,
    /// TTL in seconds of node addresses and of negative answers; default 20.
    pub ttl_s: Option<u32>,
    /// Node addresses per answer, 1 to 16; default 2.
    pub answers: Option<usize>,
    /// The SOA's responsible mailbox as a name (`hostmaster.cdn.example`); default
    /// `hostmaster.<zone>`.
    pub hostmaster: Option<String>,
    /// The zone's nameservers; default one, `ns1.<zone>`, at this node's DNS address.
    #[serde(default)]
    pub nameservers: Vec<NameserverFile>,
    /// Client subnets mapped to regions.
    #[serde(default)]
    pub regions: Vec<RegionFile>,
}

/// One `[[dns.nameservers]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameserverFile {
    pub name: String,
    /// Glue: needed when the name is inside the zone, ignored otherwise.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

/// One `[[dns.regions]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionFile {
    /// `a.b.c.d/len` or `ipv6/len`.
    pub subnet: String,
    pub region: String,
}

/// A nameserver of the zone, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nameserver {
    pub name: Name,
    pub addresses: Vec<IpAddr>,
}

/// The checked DNS settings. `listen` without `zone` is refused when the node starts (a
/// later layer may still bring the zone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub listen: Option<SocketAddr>,
    /// Lower-case, fully qualified.
    pub zone: Option<Name>,
    pub ttl_s: u32,
    pub answers: usize,
    pub hostmaster: Option<Name>,
    pub nameservers: Vec<Nameserver>,
    pub regions: RegionMap,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: None,
            zone: None,
            ttl_s: DEFAULT_TTL_S,
            answers: DEFAULT_ANSWERS,
            hostmaster: None,
            nameservers: Vec::new(),
            regions: RegionMap::default(),
        }
    }
}

impl Settings {
    /// Applies one layer (file, then flags); the error says which value is wrong and why.
    pub fn apply(&mut self, file: DnsFile) -> Result<(), String> {
        if let Some(listen) = file.listen {
            self.listen = Some(listen);
        }
        if let Some(zone) = file.zone {
            self.zone = Some(dns_name("zone", &zone)?);
        }
        if let Some(ttl) = file.ttl_s {
            if ttl > MAX_TTL_S {
                return Err(format!("ttl_s {ttl} is over {MAX_TTL_S} (a day)"));
            }
            self.ttl_s = ttl;
        }
        if let Some(answers) = file.answers {
            if !(1..=MAX_ANSWERS).contains(&answers) {
                return Err(format!(
                    "answers {answers} is not between 1 and {MAX_ANSWERS}"
                ));
            }
            self.answers = answers;
        }
        if let Some(hostmaster) = file.hostmaster {
            self.hostmaster = Some(dns_name("hostmaster", &hostmaster)?);
        }
        if !file.nameservers.is_empty() {
            if file.nameservers.len() > MAX_NAMESERVERS {
                return Err(format!(
                    "{} nameservers; at most {MAX_NAMESERVERS}",
                    file.nameservers.len()
                ));
            }
            let mut nameservers = Vec::new();
            for ns in file.nameservers {
                let name = dns_name("nameservers.name", &ns.name)?;
                if ns.addresses.len() > MAX_NAMESERVER_ADDRESSES {
                    return Err(format!(
                        "nameserver {}: at most {MAX_NAMESERVER_ADDRESSES} addresses",
                        ns.name
                    ));
                }
                if let Some(bad) = ns.addresses.iter().find(|a| a.is_unspecified()) {
                    return Err(format!("nameserver {}: {bad} is not an address", ns.name));
                }
                nameservers.push(Nameserver {
                    name,
                    addresses: ns.addresses,
                });
            }
            self.nameservers = nameservers;
        }
        if !file.regions.is_empty() {
            if file.regions.len() > MAX_REGION_RULES {
                return Err(format!(
                    "{} region rules; at most {MAX_REGION_RULES}",
                    file.regions.len()
                ));
            }
            let mut rules = Vec::new();
            for r in file.regions {
                let subnet: IpNet = r.subnet.parse().map_err(|_| {
                    format!(
                        "regions: {:?} is not a subnet such as 192.0.2.0/24",
                        r.subnet
                    )
                })?;
                if r.region.is_empty() || r.region.len() > MAX_REGION_LEN {
                    return Err(format!(
                        "regions: region {:?} must be 1 to {MAX_REGION_LEN} bytes",
                        r.region
                    ));
                }
                rules.push(Rule {
                    subnet: subnet.trunc(),
                    region: r.region,
                });
            }
            self.regions = RegionMap::new(rules);
        }
        Ok(())
    }
}

/// A host name as the zone's names must be: letters, digits, `-` and `_` in labels of 1 to
/// 63 bytes, at most 253 bytes in all, not the root; returned lower-case and fully qualified.
pub fn dns_name(field: &str, text: &str) -> Result<Name, String> {
    let bad = |why: &str| format!("{field}: {text:?} {why}");
    let trimmed = text.strip_suffix('.').unwrap_or(text);
    if trimmed.is_empty() {
        return Err(bad("is empty (the root zone is not ours to serve)"));
    }
    if trimmed.len() > 253 {
        return Err(bad("is longer than 253 bytes"));
    }
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("has an empty label or one over 63 bytes"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("is not a host name (letters, digits, '-' and '_')"));
        }
    }
    let mut name = Name::from_ascii(trimmed).map_err(|e| bad(&e.to_string()))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(text: &str) -> Result<Settings, String> {
        #[derive(Deserialize)]
        struct Wrap {
            dns: DnsFile,
        }
        let file: Wrap = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut s = Settings::default();
        s.apply(file.dns)?;
        Ok(s)
    }

    #[test]
    fn a_full_table_is_read() {
        let s = apply(
            r#"
            [dns]
            listen = "127.0.0.1:5353"
            zone = "CDN.Example."
            ttl_s = 5
            answers = 3
            hostmaster = "ops.cdn.example"
            [[dns.nameservers]]
            name = "ns1.cdn.example"
            addresses = ["192.0.2.53", "2001:db8::53"]
            [[dns.regions]]
            subnet = "192.0.2.7/24"
            region = "eu"
            "#,
        )
        .unwrap();
        assert_eq!(s.listen, Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(s.zone.as_ref().unwrap().to_ascii(), "cdn.example.");
        assert_eq!((s.ttl_s, s.answers), (5, 3));
        assert_eq!(s.nameservers[0].addresses.len(), 2);
        let placed = s.regions.region_of("192.0.2.200".parse().unwrap()).unwrap();
        assert_eq!((placed.region, placed.prefix_len), ("eu", 24));
        let d = Settings::default();
        assert_eq!((d.ttl_s, d.answers, d.listen), (20, 2, None));
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        for (text, want) in [
            ("[dns]\nzone = \"\"", "root"),
            ("[dns]\nzone = \"a b.example\"", "host name"),
            ("[dns]\nzone = \"a..example\"", "empty label"),
            ("[dns]\nttl_s = 100000", "ttl_s"),
            ("[dns]\nanswers = 0", "answers"),
            ("[dns]\nanswers = 17", "answers"),
            (
                "[[dns.regions]]\nsubnet = \"10.0.0.1\"\nregion = \"eu\"",
                "not a subnet",
            ),
            (
                "[[dns.regions]]\nsubnet = \"10.0.0.0/8\"\nregion = \"\"",
                "region",
            ),
            (
                "[[dns.nameservers]]\nname = \"ns1.x\"\naddresses = [\"0.0.0.0\"]",
                "not an address",
            ),
        ] {
            let e = apply(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert!(apply("[dns]\ncolour = 1").is_err());
    }
}
