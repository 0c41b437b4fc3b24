//! One DNS message in, at most one out: parse (hickory-server's `Request`), decide, encode
//! (`MessageResponseBuilder`, truncated to the client's UDP size). Synchronous and quick: it
//! reads the current node snapshot and the arrangements, never the network.
//!
//! - not a query (QR set), or shorter than a header: no answer;
//! - unparsable: FORMERR (header only, the question could not be read);
//! - opcode other than QUERY: NOTIMP; EDNS version above 0: BADVERS; not one question: FORMERR;
//! - class other than IN, zone transfers, names outside the zone: REFUSED (we are only
//!   authoritative, never recursive);
//! - the apex: SOA, NS (with glue for in-zone nameservers), ANY (both);
//! - an in-zone nameserver: its A/AAAA;
//! - a service: A/AAAA of the nodes [`select::pick`] chooses; SERVFAIL if no node is listed;
//! - a name between others: NODATA; anything else in the zone: NXDOMAIN.
//!
//! Negative answers carry the SOA. A query with EDNS gets EDNS back (payload
//! [`UDP_PAYLOAD`]), with its Client Subnet option echoed and its scope set to the prefix of
//! the region rule that decided the answer (0 when none did).

use std::collections::HashMap;
use std::iter;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_server::proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};
use hickory_server::server::Request;
use hickory_server::zone_handler::MessageResponseBuilder;
use reef_proto::records::ProviderId;

use super::nodes::Nodes;
use super::regions::RegionMap;
use super::select::{self, Family, Want};
use super::stats::Stats;
use super::zone::{Place, Zone, address_record};
use crate::peering::Arrangements;

/// The UDP payload we offer and answer within: the size the DNS Flag Day 2020 settled on,
/// which passes every common path MTU unfragmented.
pub const UDP_PAYLOAD: u16 = 1232;

/// What the responder is made of.
pub struct Parts {
    pub zone: Zone,
    /// Our provider: its nodes answer for our services.
    pub own: ProviderId,
    /// This node's region: taken as the client's when no region rule places it (resolvers
    /// tend to ask the nameserver that answers them fastest, which is a near one).
    pub region: String,
    pub regions: RegionMap,
    /// Addresses per answer.
    pub answers: usize,
    pub high_watermark_permille: u16,
    pub arrangements: Arc<Arrangements>,
    pub nodes: Arc<Nodes>,
}

/// Answers DNS messages for one zone.
pub struct Responder {
    parts: Parts,
    /// Per service: answers counted for an arrangement's share.
    turns: HashMap<String, AtomicU64>,
    /// Turns the order of equally good nodes, query by query.
    spin: AtomicU64,
    stats: Arc<Stats>,
}

/// The decision for one question.
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authority: Vec<Record>,
    additionals: Vec<Record>,
    /// ECS scope prefix to report: how much of the client's address decided the answer.
    scope: u8,
    by_peer: bool,
}

impl Reply {
    fn code(code: ResponseCode, authoritative: bool) -> Reply {
        Reply {
            code,
            authoritative,
            answers: Vec::new(),
            authority: Vec::new(),
            additionals: Vec::new(),
            scope: 0,
            by_peer: false,
        }
    }

    fn records(answers: Vec<Record>) -> Reply {
        Reply {
            answers,
            ..Reply::code(ResponseCode::NoError, true)
        }
    }
}

impl Responder {
    pub fn new(parts: Parts) -> Self {
        let turns = parts
            .zone
            .services()
            .map(|s| (s.to_string(), AtomicU64::new(0)))
            .collect();
        Self {
            parts,
            turns,
            spin: AtomicU64::new(0),
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// The answer to `message` from `src`, encoded for `protocol`; `None` when it gets none.
    pub fn respond(&self, message: &[u8], src: SocketAddr, protocol: Protocol) -> Option<Vec<u8>> {
        Stats::bump(&self.stats.queries);
        let request = match Request::from_bytes(message.to_vec(), src, protocol) {
            Ok(request) => request,
            Err(_) => return self.malformed(message),
        };
        if request.metadata.message_type != MessageType::Query {
            // Answering responses would let anyone bounce traffic off us.
            Stats::bump(&self.stats.dropped);
            return None;
        }
        let reply = self.reply(&request, src);
        self.count(&reply);
        Some(self.encode(&request, reply, protocol))
    }

    /// FORMERR for a message whose header reads but whose body does not; nothing for one too
    /// short to have a header, or that claims to be a response.
    fn malformed(&self, message: &[u8]) -> Option<Vec<u8>> {
        let header = match Header::read(&mut BinDecoder::new(message)) {
            Ok(header) if header.metadata.message_type == MessageType::Query => header,
            _ => {
                Stats::bump(&self.stats.dropped);
                return None;
            }
        };
        Stats::bump(&self.stats.formerr);
        let mut metadata = Metadata::response_from_request(&header.metadata);
        metadata.response_code = ResponseCode::FormErr;
        Some(header_only(metadata))
    }

    fn reply(&self, request: &Request, src: SocketAddr) -> Reply {
        if request.metadata.op_code != OpCode::Query {
            return Reply::code(ResponseCode::NotImp, false);
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return Reply::code(ResponseCode::BADVERS, false);
        }
        let [query] = request.queries.queries() else {
            return Reply::code(ResponseCode::FormErr, false);
        };
        let qtype = query.query_type();
        if query.query_class() != DNSClass::IN
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            return Reply::code(ResponseCode::Refused, false);
        }
        let zone = &self.parts.zone;
        let owner = query.original().name().clone();
        match zone.place(query.name()) {
            Place::Outside => Reply::code(ResponseCode::Refused, false),
            Place::Nothing => self.negative(ResponseCode::NXDomain),
            Place::Between => self.negative(ResponseCode::NoError),
            Place::Apex => match qtype {
                RecordType::SOA => Reply::records(vec![zone.soa().clone()]),
                RecordType::NS => Reply {
                    additionals: zone.glue().to_vec(),
                    ..Reply::records(zone.ns().to_vec())
                },
                RecordType::ANY => {
                    let mut records = vec![zone.soa().clone()];
                    records.extend_from_slice(zone.ns());
                    Reply::records(records)
                }
                _ => self.negative(ResponseCode::NoError),
            },
            Place::Nameserver(addrs) => {
                let Some(family) = family(qtype) else {
                    return self.negative(ResponseCode::NoError);
                };
                let records: Vec<Record> = addrs
                    .iter()
                    .filter(|a| family.admits(**a))
                    .map(|a| address_record(owner.clone(), super::zone::NS_TTL_S, *a))
                    .collect();
                if records.is_empty() {
                    self.negative(ResponseCode::NoError)
                } else {
                    Reply::records(records)
                }
            }
            Place::Service(host) => self.service(host, qtype, owner, request, src),
        }
    }

    /// The nodes for our service `host`.
    fn service(
        &self,
        host: &str,
        qtype: RecordType,
        owner: Name,
        request: &Request,
        src: SocketAddr,
    ) -> Reply {
        let Some(family) = family(qtype) else {
            return self.negative(ResponseCode::NoError);
        };
        let (region, scope) = self.client_region(request, src);
        let arrangement = self.parts.arrangements.primary_for(host);
        let peer_turn = arrangement
            .as_ref()
            .is_some_and(|a| self.takes_turn(host, a.share_permille));
        let snapshot = self.parts.nodes.current();
        let own = snapshot.of(&self.parts.own);
        let peer = arrangement
            .as_ref()
            .map_or(&[][..], |a| snapshot.of(&a.peer));
        let now = Instant::now();
        let want = Want {
            count: self.parts.answers,
            family,
            region: Some(region),
            high_watermark_permille: self.parts.high_watermark_permille,
            now,
            spin: self.spin.fetch_add(1, Ordering::Relaxed),
        };
        let picked = select::pick(own, peer, peer_turn, &want);
        if picked.addrs.is_empty() {
            return if select::any_listed(own, now) || select::any_listed(peer, now) {
                self.negative(ResponseCode::NoError)
            } else {
                Reply::code(ResponseCode::ServFail, true)
            };
        }
        let ttl = self.parts.zone.ttl_s;
        let records = picked
            .addrs
            .iter()
            .map(|a| address_record(owner.clone(), ttl, *a))
            .collect();
        Reply {
            scope,
            by_peer: picked.by_peer,
            ..Reply::records(records)
        }
    }

    /// The client's region and the ECS scope that says how it was found: the subnet a
    /// resolver forwarded (ECS, unless its source prefix is 0, which asks us not to use it),
    /// else the resolver's own address, through the region rules; our own region if none
    /// matches.
    fn client_region(&self, request: &Request, src: SocketAddr) -> (&str, u8) {
        let ecs = client_subnet(request).filter(|s| s.source_prefix() > 0);
        let addr = ecs.map_or(src.ip(), ClientSubnet::addr);
        match self.parts.regions.region_of(addr) {
            Some(placed) => (
                placed.region,
                if ecs.is_some() { placed.prefix_len } else { 0 },
            ),
            None => (self.parts.region.as_str(), 0),
        }
    }

    /// Whether this answer for `host` falls in the arrangement's share: answer n does when the
    /// running share crosses a whole answer, so the share is spread evenly.
    fn takes_turn(&self, host: &str, share_permille: u16) -> bool {
        let Some(counter) = self.turns.get(host) else {
            return false;
        };
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let share = u64::from(share_permille);
        (n + 1) * share / 1000 != n * share / 1000
    }

    /// NXDOMAIN or NODATA: authoritative, with the SOA so resolvers know how long to cache it.
    fn negative(&self, code: ResponseCode) -> Reply {
        Reply {
            authority: vec![self.parts.zone.soa().clone()],
            ..Reply::code(code, true)
        }
    }

    fn count(&self, reply: &Reply) {
        let s = &self.stats;
        let counter = match reply.code {
            ResponseCode::NoError if reply.answers.is_empty() => &s.nodata,
            ResponseCode::NoError => &s.answered,
            ResponseCode::NXDomain => &s.nxdomain,
            ResponseCode::Refused => &s.refused,
            ResponseCode::FormErr => &s.formerr,
            ResponseCode::NotImp => &s.notimp,
            ResponseCode::BADVERS => &s.badvers,
            _ => &s.servfail,
        };
        Stats::bump(counter);
        if reply.by_peer {
            Stats::bump(&s.peer_answers);
        }
    }

    fn encode(&self, request: &Request, reply: Reply, protocol: Protocol) -> Vec<u8> {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = reply.authoritative;
        metadata.response_code = reply.code;
        let edns = request.edns.as_ref().map(|_| {
            let mut edns = Edns::new();
            edns.set_max_payload(UDP_PAYLOAD);
            if let Some(subnet) = client_subnet(request) {
                let mut subnet = *subnet;
                subnet.set_scope_prefix(reply.scope);
                edns.options_mut().insert(EdnsOption::Subnet(subnet));
            }
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authority.iter(),
            iter::empty(),
            reply.additionals.iter(),
        );
        let limit = match protocol {
            Protocol::Udp => request.max_payload().min(UDP_PAYLOAD),
            _ => u16::MAX,
        };
        let mut out = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut out);
        encoder.set_max_size(limit);
        match response.destructive_emit(&mut encoder) {
            Ok(info) => {
                if info.truncation {
                    Stats::bump(&self.stats.truncated);
                }
                out
            }
            Err(error) => {
                tracing::warn!(%error, "cannot encode a DNS answer");
                Stats::bump(&self.stats.servfail);
                metadata.response_code = ResponseCode::ServFail;
                header_only(metadata)
            }
        }
    }
}

/// The address family a query type asks for; `None` for types a service has no records of.
fn family(qtype: RecordType) -> Option<Family> {
    match qtype {
        RecordType::A => Some(Family::V4),
        RecordType::AAAA => Some(Family::V6),
        RecordType::ANY => Some(Family::Both),
        _ => None,
    }
}

fn client_subnet(request: &Request) -> Option<&ClientSubnet> {
    match request.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(subnet) => Some(subnet),
        _ => None,
    }
}

/// A response of a header alone (12 bytes).
fn header_only(metadata: Metadata) -> Vec<u8> {
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    let mut out = Vec::with_capacity(12);
    // Twelve bytes into a growable buffer without a size limit cannot fail.
    let _ = header.emit(&mut BinEncoder::new(&mut out));
    out
}

#[cfg(test)]
pub(crate) mod tests;
