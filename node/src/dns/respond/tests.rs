use std::net::IpAddr;
use std::time::Duration;

use hickory_server::proto::op::{Message, Query};
use hickory_server::proto::rr::RData;
use reef_overlay::PeerId;
use reef_proto::records::{ProviderKey, SigningKey, peer_id_bytes};

use super::*;
use crate::dns::nodes::Snapshot;
use crate::dns::regions::Rule;
use crate::dns::select::Candidate;
use crate::dns::settings::{Settings, dns_name};
use crate::peering::{LongTerm, Policy};

const CLIENT: &str = "192.0.2.1:5353";

fn provider(seed: u8) -> ProviderId {
    ProviderKey::from_bytes(&[seed; 32]).id()
}

fn candidate(seed: u8, ip: &str, region: &str, util: u16) -> Candidate {
    let key = SigningKey::from_bytes(&[seed; 32]);
    Candidate {
        peer: PeerId::from_bytes(&peer_id_bytes(&key.verifying_key().to_bytes())).unwrap(),
        addr: ip.parse().unwrap(),
        region: region.into(),
        utilisation_permille: util,
        until: Instant::now() + Duration::from_secs(60),
    }
}

/// A responder for `cdn.example` serving `video.example` of provider 1 with two nodes in
/// "eu" and one in "us"; with `share`, provider 2 (one node) serves it under a long-term
/// arrangement.
pub(crate) fn responder(share: Option<u16>) -> Responder {
    let (own, peer) = (provider(1), provider(2));
    let settings = Settings {
        zone: Some(dns_name("zone", "cdn.example").unwrap()),
        ..Settings::default()
    };
    let zone = Zone::new(
        &settings,
        ["video.example"],
        "127.0.0.10:53".parse().unwrap(),
        9,
    )
    .unwrap();
    let policy = Policy {
        long_term: share
            .map(|share_permille| LongTerm {
                primary: own,
                peer,
                services: ["video.example".to_string()].into(),
                share_permille,
                price_micros_per_gb: 0,
            })
            .into_iter()
            .collect(),
        ..Policy::default()
    };
    let nodes = Arc::new(Nodes::default());
    nodes.replace(Snapshot::new(HashMap::from([
        (
            own,
            vec![
                candidate(1, "10.0.0.1", "eu", 100),
                candidate(2, "10.0.0.2", "eu", 300),
                candidate(3, "10.0.0.3", "us", 0),
            ],
        ),
        (peer, vec![candidate(4, "10.9.0.4", "eu", 0)]),
    ])));
    Responder::new(Parts {
        zone,
        own,
        region: "eu".into(),
        regions: RegionMap::new(vec![Rule {
            subnet: "198.51.100.0/24".parse().unwrap(),
            region: "us".into(),
        }]),
        answers: 2,
        high_watermark_permille: 800,
        arrangements: Arc::new(Arrangements::new(own, &policy)),
        nodes,
    })
}

pub(crate) fn query(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::new(0x5eef, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m
}

fn ask_message(r: &Responder, m: &Message) -> Message {
    let out = r
        .respond(&m.to_vec().unwrap(), CLIENT.parse().unwrap(), Protocol::Udp)
        .expect("an answer");
    Message::from_vec(&out).unwrap()
}

fn ask(r: &Responder, name: &str, qtype: RecordType) -> Message {
    ask_message(r, &query(name, qtype))
}

pub(crate) fn addrs(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0).to_string()),
            RData::AAAA(a) => Some(IpAddr::V6(a.0).to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_service_gets_its_best_nodes() {
    let r = responder(None);
    let m = ask(&r, "Video.Example.cdn.example.", RecordType::A);
    assert_eq!(m.metadata.id, 0x5eef);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative && m.metadata.recursion_desired);
    assert!(!m.metadata.recursion_available);
    // The client is placed in our region (eu): eu nodes, least loaded first.
    assert_eq!(addrs(&m), ["10.0.0.1", "10.0.0.2"]);
    assert!(m.answers.iter().all(|r| r.ttl == 20));
    // The question is echoed as asked (resolvers check the case they randomised).
    assert_eq!(m.queries[0].name().to_ascii(), "Video.Example.cdn.example.");
    // No AAAA: NODATA with the SOA.
    let m = ask(&r, "video.example.cdn.example.", RecordType::AAAA);
    assert_eq!(
        (m.metadata.response_code, m.answers.len()),
        (ResponseCode::NoError, 0)
    );
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    let m = ask(&r, "video.example.cdn.example.", RecordType::TXT);
    assert_eq!(
        (m.metadata.response_code, m.answers.len()),
        (ResponseCode::NoError, 0)
    );
    let c = r.stats().counts();
    assert_eq!((c.queries, c.answered, c.nodata), (3, 1, 2));
}

#[test]
fn the_zone_answers_soa_ns_and_negatives() {
    let r = responder(None);
    let m = ask(&r, "cdn.example.", RecordType::SOA);
    match &m.answers[0].data {
        RData::SOA(soa) => {
            assert_eq!(soa.mname.to_ascii(), "ns1.cdn.example.");
            assert_eq!(soa.rname.to_ascii(), "hostmaster.cdn.example.");
            assert_eq!((soa.serial, soa.minimum), (9, 20));
        }
        other => panic!("{other:?}"),
    }
    let m = ask(&r, "cdn.example.", RecordType::NS);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.additionals.len(), 1, "glue for ns1");
    let m = ask(&r, "ns1.cdn.example.", RecordType::A);
    assert_eq!(addrs(&m), ["127.0.0.10"]);
    let m = ask(&r, "nobody.cdn.example.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    let m = ask(&r, "example.cdn.example.", RecordType::A);
    assert_eq!(
        (m.metadata.response_code, m.answers.len()),
        (ResponseCode::NoError, 0)
    );
    let m = ask(&r, "video.example.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.authoritative);
    let m = ask(&r, "cdn.example.", RecordType::AXFR);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let c = r.stats().counts();
    assert_eq!((c.answered, c.nxdomain, c.nodata, c.refused), (3, 1, 1, 2));
}

#[test]
fn malformed_and_odd_messages_never_crash_the_responder() {
    let r = responder(None);
    let src: SocketAddr = CLIENT.parse().unwrap();
    // A header promising a question that is not there.
    let mut garbage = vec![0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0x3f, b'x', b'y']);
    let out = r.respond(&garbage, src, Protocol::Udp).expect("FORMERR");
    let m = Message::from_vec(&out).unwrap();
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (0xbeef, ResponseCode::FormErr)
    );
    // Too short for a header, or a response: silence.
    assert!(r.respond(&[1, 2, 3], src, Protocol::Udp).is_none());
    let mut response = query("video.example.cdn.example.", RecordType::A);
    response.metadata.message_type = MessageType::Response;
    assert!(
        r.respond(&response.to_vec().unwrap(), src, Protocol::Udp)
            .is_none()
    );
    // Every byte string of a few lengths: an answer or silence, never a panic.
    for len in 0..64u8 {
        let bytes: Vec<u8> = (0..len)
            .map(|i| i.wrapping_mul(37).wrapping_add(len))
            .collect();
        let _ = r.respond(&bytes, src, Protocol::Tcp);
    }
    // Two questions: FORMERR.
    let mut two = query("video.example.cdn.example.", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("cdn.example.").unwrap(),
        RecordType::SOA,
    ));
    assert_eq!(
        ask_message(&r, &two).metadata.response_code,
        ResponseCode::FormErr
    );
    // NOTIFY: not implemented.
    let mut notify = query("cdn.example.", RecordType::SOA);
    notify.metadata.op_code = OpCode::Notify;
    assert_eq!(
        ask_message(&r, &notify).metadata.response_code,
        ResponseCode::NotImp
    );
    // EDNS version 1: BADVERS, carried in the OPT record.
    let mut v1 = query("cdn.example.", RecordType::SOA);
    let mut edns = Edns::new();
    edns.set_version(1);
    v1.set_edns(edns);
    let m = ask_message(&r, &v1);
    // 16 is both BADVERS and BADSIG; the decoder names it the latter.
    assert_eq!(u16::from(m.metadata.response_code), 16);
    // The responder still answers.
    let m = ask(&r, "video.example.cdn.example.", RecordType::A);
    assert_eq!(addrs(&m).len(), 2);
    let c = r.stats().counts();
    assert!(
        c.formerr >= 2 && c.dropped >= 2 && c.notimp == 1 && c.badvers == 1,
        "{c:?}"
    );
}

#[test]
fn client_subnet_picks_the_region_and_is_echoed_with_its_scope() {
    let r = responder(None);
    let mut m = query("video.example.cdn.example.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    edns.options_mut()
        .insert(EdnsOption::Subnet("198.51.100.0/24".parse().unwrap()));
    m.set_edns(edns);
    let got = ask_message(&r, &m);
    // us first: the us node, then the least loaded eu one.
    assert_eq!(addrs(&got), ["10.0.0.3", "10.0.0.1"]);
    let edns = got.edns.expect("EDNS answered with EDNS");
    assert_eq!(edns.max_payload(), UDP_PAYLOAD);
    match edns.option(EdnsCode::Subnet) {
        Some(EdnsOption::Subnet(s)) => assert_eq!((s.source_prefix(), s.scope_prefix()), (24, 24)),
        other => panic!("{other:?}"),
    }
    // Without EDNS, no OPT comes back.
    assert!(
        ask(&r, "video.example.cdn.example.", RecordType::A)
            .edns
            .is_none()
    );
}

#[test]
fn the_peer_leads_its_share_of_answers() {
    let r = responder(Some(500));
    let mut by_peer = 0;
    for _ in 0..20 {
        let m = ask(&r, "video.example.cdn.example.", RecordType::A);
        let got = addrs(&m);
        if got == ["10.9.0.4"] {
            by_peer += 1;
        } else {
            assert!(got.iter().all(|a| a.starts_with("10.0.0.")), "{got:?}");
        }
    }
    assert_eq!(by_peer, 10);
    assert_eq!(r.stats().counts().peer_answers, 10);
}

#[test]
fn no_node_listed_is_servfail() {
    let r = responder(None);
    r.parts.nodes.replace(Snapshot::default());
    let m = ask(&r, "video.example.cdn.example.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(r.stats().counts().servfail, 1);
}
