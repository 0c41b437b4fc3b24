//! Sealing this node's own load report.

use reef_proto::records::{LoadReport, RecordError, SigningKey, peer_id_bytes, seal};
use tracing::warn;

use super::meter::{Busy, Rates};

use std::time::Duration;

/// Makes this node's reports: signed with the node key, `seq` always growing.
pub struct Reporter {
    key: SigningKey,
    peer_id: Vec<u8>,
    cert: Option<Vec<u8>>,
    seq: u64,
    /// Whether the certificate was refused at the last report (logged once per change).
    cert_refused: bool,
}

impl Reporter {
    /// `cert` is the node's sealed provider certificate, if it has one.
    pub fn new(key: SigningKey, cert: Option<Vec<u8>>) -> Reporter {
        let peer_id = peer_id_bytes(&key.verifying_key().to_bytes());
        Reporter {
            key,
            peer_id,
            cert,
            seq: 0,
            cert_refused: false,
        }
    }

    /// The next report, issued at `now_ms`, asking to be listed for `listing` (see
    /// `table::listing_ttl`). Its lifetime is twice that: tables drop a silent node after the
    /// listing anyway, and the longer lifetime only lets a copy that took a slow gossip path
    /// (the IHAVE/IWANT repair takes a few heartbeats) still be accepted, and covers small
    /// clock differences between nodes. `seq` is at least `now_ms`, so that it keeps growing
    /// across restarts and a restarted node is not taken for a replay of its former self.
    ///
    /// A certificate that no longer opens (expired, say) is left out, with a warning: the node
    /// keeps reporting, as its own provider, rather than going silent.
    pub fn seal(
        &mut self,
        rates: Rates,
        busy: Busy,
        now_ms: u64,
        listing: Duration,
    ) -> Result<Vec<u8>, RecordError> {
        let (utilisation_permille, demand_permille) = busy.capped();
        self.seq = self.seq.saturating_add(1).max(now_ms);
        let mut report = LoadReport {
            peer_id: self.peer_id.clone(),
            cert: self.cert.clone(),
            seq: self.seq,
            req_per_s: rates.req_per_s,
            egress_bytes_per_s: rates.egress_bytes_per_s,
            utilisation_permille,
            hit_ratio_permille: rates.hit_ratio_permille,
            demand_permille,
        };
        let lifetime = u64::try_from(listing.as_millis().saturating_mul(2)).unwrap_or(u64::MAX);
        let expires = now_ms.saturating_add(lifetime);
        match seal(&self.key, &report, now_ms, expires) {
            Err(RecordError::Cert(why)) => {
                if !self.cert_refused {
                    warn!(reason = %why, "provider certificate refused; reporting load without it");
                    self.cert_refused = true;
                }
                report.cert = None;
                seal(&self.key, &report, now_ms, expires)
            }
            sealed => {
                self.cert_refused = false;
                sealed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use reef_proto::records::open;

    use super::*;
    use crate::load::table::ENTRY_TTL;

    #[test]
    fn reports_are_valid_and_seq_keeps_growing() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let signer = key.verifying_key().to_bytes();
        let mut r = Reporter::new(key, None);
        let now = 1_700_000_000_000;
        let rates = Rates {
            req_per_s: 12,
            egress_bytes_per_s: 3456,
            hit_ratio_permille: 789,
            ..Rates::default()
        };
        let busy = Busy {
            utilisation_permille: 10,
            demand_permille: 20_000,
        };
        let first = open::<LoadReport>(&r.seal(rates, busy, now, ENTRY_TTL).unwrap(), now).unwrap();
        assert_eq!(first.signer(), &signer);
        assert_eq!(
            first.expires_at() - first.issued_at(),
            2 * ENTRY_TTL.as_millis() as u64
        );
        let record = first.record();
        assert_eq!(record.seq, now);
        assert_eq!(
            (
                record.req_per_s,
                record.egress_bytes_per_s,
                record.hit_ratio_permille
            ),
            (12, 3456, 789)
        );
        assert_eq!(record.utilisation_permille, 10);
        // Capped as reports must be.
        assert_eq!(record.demand_permille, 10_000);
        // Within the same millisecond, or with the clock stepping back, seq still grows.
        let second =
            open::<LoadReport>(&r.seal(rates, busy, now, ENTRY_TTL).unwrap(), now).unwrap();
        assert_eq!(second.record().seq, now + 1);
        let third =
            open::<LoadReport>(&r.seal(rates, busy, now - 500, ENTRY_TTL).unwrap(), now).unwrap();
        assert_eq!(third.record().seq, now + 2);
        // A restarted reporter starts from the clock, above anything it sent before.
        let mut again = Reporter::new(SigningKey::from_bytes(&[3; 32]), None);
        let later = now + 3000;
        let fourth =
            open::<LoadReport>(&again.seal(rates, busy, later, ENTRY_TTL).unwrap(), later).unwrap();
        assert!(fourth.record().seq > third.record().seq);
    }

    #[test]
    fn a_refused_certificate_is_left_out() {
        let mut r = Reporter::new(
            SigningKey::from_bytes(&[3; 32]),
            Some(b"not a cert".to_vec()),
        );
        let now = 1_700_000_000_000;
        let sealed = r
            .seal(Rates::default(), Busy::default(), now, ENTRY_TTL)
            .unwrap();
        let opened = open::<LoadReport>(&sealed, now).unwrap();
        assert_eq!(opened.record().cert, None);
        assert!(!opened.membership(now).is_certified());
    }
}
