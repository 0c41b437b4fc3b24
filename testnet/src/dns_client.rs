//! Just enough DNS wire format to ask a node's DNS server for A records and read the answer
//! (RFC 1035 §4): for the DNS benchmark's load generator, which must not pull a node crate or
//! spawn `dig` per query.

use std::net::Ipv4Addr;

/// Header flags of a standard query with recursion desired.
const QUERY_FLAGS: u16 = 0x0100;
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;

/// A query for the A records of `name` (dotted, no trailing dot needed); `None` if a label is
/// empty or over 63 bytes, or the name over 253.
pub fn a_query(id: u16, name: &str) -> Option<Vec<u8>> {
    let name = name.trim_end_matches('.');
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let mut out = Vec::with_capacity(18 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&QUERY_FLAGS.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))?;
        out.push(len);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&TYPE_A.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Some(out)
}

/// What the benchmark needs from an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub id: u16,
    /// The header's RCODE (0 = NOERROR, 3 = NXDOMAIN, …).
    pub rcode: u8,
    pub truncated: bool,
    /// The A records of the answer section.
    pub addrs: Vec<Ipv4Addr>,
}

/// Reads a response; `None` if it is not one or is cut short.
pub fn parse(msg: &[u8]) -> Option<Answer> {
    let u16_at = |i: usize| Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]));
    let id = u16_at(0)?;
    let flags = u16_at(2)?;
    if flags & 0x8000 == 0 {
        return None;
    }
    let questions = u16_at(4)?;
    let answers = u16_at(6)?;
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at)? + 4;
    }
    let mut addrs = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let rtype = u16_at(at)?;
        let rdlen = usize::from(u16_at(at + 8)?);
        let data = msg.get(at + 10..at + 10 + rdlen)?;
        if rtype == TYPE_A && rdlen == 4 {
            addrs.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + rdlen;
    }
    Some(Answer {
        id,
        rcode: u8::try_from(flags & 0x000f).unwrap_or(0),
        truncated: flags & 0x0200 != 0,
        addrs,
    })
}

/// The offset just past the (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_query_and_its_answer_round_trip() {
        let q = a_query(0x1234, "video.example.cdn.test.").unwrap();
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert!(a_query(1, "").is_none());
        assert!(a_query(1, "a..b").is_none());
        // The answer: the query with QR and AA set, one A record with a pointer name.
        let mut r = q.clone();
        r[2] = 0x85;
        r[3] = 0x00;
        r[7] = 1;
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 20, 0, 4, 127, 0, 0, 10]);
        let a = parse(&r).unwrap();
        assert_eq!((a.id, a.rcode, a.truncated), (0x1234, 0, false));
        assert_eq!(a.addrs, [Ipv4Addr::new(127, 0, 0, 10)]);
        assert!(parse(&q).is_none(), "a query is not an answer");
        assert!(parse(&r[..r.len() - 2]).is_none());
    }
}
