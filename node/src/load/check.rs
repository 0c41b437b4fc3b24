//! Judging a load report that arrived over gossip: the verdict the overlay passes to
//! gossipsub (forward, or drop and penalise the relaying peer), and the reason it is counted
//! under in `/api/status`.
//!
//! Reject only what no honest relay could have sent, since a rejection costs the relay its
//! gossip score. An honest node forwards a report only while it is listable (under its
//! [`listing_ttl`](super::table::listing_ttl); a report's lifetime is twice that), so a report that arrives expired, or too old to list,
//! has taken a slow path: a node lagging under load, our own backlog, IWANT repair. Those are
//! ignored as `late`, and only reports that expired longer than [`LATE_GRACE_MS`] ago are
//! rejected as `expired`, since no honest path holds a report that long.

use reef_overlay::{Acceptance, PeerId};
use reef_proto::records::{LoadReport, Opened, RecordError, open, peer_id_bytes};

use super::table::{NotNewer, Now, Table, listing_ttl};

/// How long after it expired a report can still have been forwarded honestly: well above
/// what a loaded node's queues and gossipsub's repair add (a few seconds), so that honest
/// relays are not penalised for slowness.
pub const LATE_GRACE_MS: u64 = 30 * 1000;
/// The reason label for reports that took too long to arrive.
const LATE: &str = "late";

/// What became of one received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and newer than what we held: now in the table, and forwarded.
    Accept,
    /// Invalid: the reason label (e.g. `garbage`, `bad_signature`, `expired`, `wrong_signer`).
    /// Dropped, and held against the peer that relayed it.
    Reject(&'static str),
    /// Valid but not newer than the report we hold (a reordered or replayed copy): dropped,
    /// nobody's fault.
    Ignore(&'static str),
}

impl Verdict {
    pub fn acceptance(self) -> Acceptance {
        match self {
            Verdict::Accept => Acceptance::Accept,
            Verdict::Reject(_) => Acceptance::Reject,
            Verdict::Ignore(_) => Acceptance::Ignore,
        }
    }
}

/// [`verify`] then [`admit`].
#[cfg(test)]
pub fn judge(table: &mut Table, source: PeerId, data: &[u8], now: Now) -> Verdict {
    match verify(source, data, now.unix_ms) {
        Ok(report) => admit(table, source, report, now),
        Err(verdict) => verdict,
    }
}

/// Opens `data` as a [`LoadReport`] (signature, times, lifetime, fields, certificate) and
/// checks that its signer is the node gossipsub says published it, so that nobody passes off
/// another node's report as its own publication, nor reports for a node it is not; then that
/// it is recent enough to list (see the module docs). The error is the verdict. Needs no
/// table: callers run it outside their lock.
pub fn verify(source: PeerId, data: &[u8], now_ms: u64) -> Result<Opened<LoadReport>, Verdict> {
    let report = match open::<LoadReport>(data, now_ms) {
        Ok(report) => report,
        // `open` checks the signature before the expiry: this is a genuine report.
        Err(RecordError::Expired { expires_at, now })
            if now.saturating_sub(expires_at) < LATE_GRACE_MS =>
        {
            return Err(Verdict::Ignore(LATE));
        }
        Err(error) => return Err(Verdict::Reject(error.reason())),
    };
    if peer_id_bytes(report.signer()) != source.to_bytes() {
        let error = RecordError::WrongSigner("report signed by another node than its publisher");
        return Err(Verdict::Reject(error.reason()));
    }
    if u128::from(now_ms.saturating_sub(report.issued_at())) >= listing_ttl(&report).as_millis() {
        return Err(Verdict::Ignore(LATE));
    }
    Ok(report)
}

/// Takes a verified report of `source` into `table` if it is newer than the one held.
pub fn admit(table: &mut Table, source: PeerId, report: Opened<LoadReport>, now: Now) -> Verdict {
    match table.insert(source, report, now) {
        Ok(()) => Verdict::Accept,
        Err(NotNewer) => Verdict::Ignore(RecordError::Replay.reason()),
    }
}

#[cfg(test)]
mod tests {
    use reef_proto::records::{SigningKey, seal};

    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn keyed(seed: u8) -> (SigningKey, PeerId) {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let peer = PeerId::from_bytes(&peer_id_bytes(&key.verifying_key().to_bytes())).unwrap();
        (key, peer)
    }

    fn sealed(key: &SigningKey, seq: u64, issued_at: u64, lifetime: u64) -> Vec<u8> {
        let record = LoadReport {
            peer_id: peer_id_bytes(&key.verifying_key().to_bytes()),
            cert: None,
            seq,
            req_per_s: 1,
            egress_bytes_per_s: 2,
            utilisation_permille: 3,
            hit_ratio_permille: 4,
            demand_permille: 5,
        };
        seal(key, &record, issued_at, issued_at + lifetime).unwrap()
    }

    #[test]
    fn every_kind_of_bad_report_has_its_reason() {
        let (a, a_peer) = keyed(1);
        let (b, _) = keyed(2);
        let now = Now {
            mono: std::time::Instant::now(),
            unix_ms: T0,
        };
        let mut table = Table::default();
        let good = sealed(&a, 1, T0, 10_000);
        let mut tampered = good.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let cases: [(&[u8], Verdict); 9] = [
            (b"\x01garbage", Verdict::Reject("garbage")),
            (&tampered, Verdict::Reject("bad_signature")),
            // Expired long ago: a replay.
            (
                &sealed(&a, 1, T0 - 60_000, 10_000),
                Verdict::Reject("expired"),
            ),
            // Expired 10 s ago, or valid but 6 s old: a slow path, nobody's fault.
            (&sealed(&a, 1, T0 - 20_000, 10_000), Verdict::Ignore("late")),
            (&sealed(&a, 1, T0 - 6_000, 10_000), Verdict::Ignore("late")),
            (&sealed(&b, 1, T0, 10_000), Verdict::Reject("wrong_signer")),
            (
                &sealed(&a, 1, T0 + 120_000, 10_000),
                Verdict::Reject("future"),
            ),
            (&good, Verdict::Accept),
            (&good, Verdict::Ignore("replay")),
        ];
        for (data, want) in cases {
            assert_eq!(judge(&mut table, a_peer, data, now), want);
        }
        assert_eq!(
            judge(&mut table, a_peer, &sealed(&a, 2, T0 + 1, 10_000), now),
            Verdict::Accept
        );
        assert_eq!(Verdict::Reject("x").acceptance(), Acceptance::Reject);
        assert_eq!(Verdict::Ignore("x").acceptance(), Acceptance::Ignore);
        assert_eq!(Verdict::Accept.acceptance(), Acceptance::Accept);
    }
}
