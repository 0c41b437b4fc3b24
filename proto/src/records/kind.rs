/// What an envelope holds. The numeric codes are part of the wire format and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    ProviderCert,
    NodeRecord,
    ContentRecord,
    CapacityOffer,
    LoadReport,
    PurgeNotice,
    ServiceRecord,
    /// Peering [`Terms`](super::Terms).
    Arrangement,
    UsageReceipt,
    /// An [`ArrangementEnd`](super::ArrangementEnd).
    ArrangementEnd,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::ProviderCert,
        Kind::NodeRecord,
        Kind::ContentRecord,
        Kind::CapacityOffer,
        Kind::LoadReport,
        Kind::PurgeNotice,
        Kind::ServiceRecord,
        Kind::Arrangement,
        Kind::UsageReceipt,
        Kind::ArrangementEnd,
    ];

    /// The byte on the wire. Explicit rather than the enum's position, so reordering or adding
    /// variants can never change what an existing signature covers. 0 is never a kind.
    pub const fn code(self) -> u8 {
        match self {
            Kind::ProviderCert => 1,
            Kind::NodeRecord => 2,
            Kind::ContentRecord => 3,
            Kind::CapacityOffer => 4,
            Kind::LoadReport => 5,
            Kind::PurgeNotice => 6,
            Kind::ServiceRecord => 7,
            Kind::Arrangement => 8,
            Kind::UsageReceipt => 9,
            Kind::ArrangementEnd => 10,
        }
    }

    pub fn from_code(code: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The `kind` label of `reef_records_rejected_total` and friends.
    pub const fn label(self) -> &'static str {
        match self {
            Kind::ProviderCert => "provider_cert",
            Kind::NodeRecord => "node_record",
            Kind::ContentRecord => "content_record",
            Kind::CapacityOffer => "capacity_offer",
            Kind::LoadReport => "load_report",
            Kind::PurgeNotice => "purge_notice",
            Kind::ServiceRecord => "service_record",
            Kind::Arrangement => "arrangement",
            Kind::UsageReceipt => "usage_receipt",
            Kind::ArrangementEnd => "arrangement_end",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_pinned_and_round_trip() {
        // Changing a code would invalidate every record already signed under it.
        let codes: Vec<u8> = Kind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(codes, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        for kind in Kind::ALL {
            assert_eq!(Kind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(Kind::from_code(0), None);
        assert_eq!(Kind::from_code(11), None);
    }

    #[test]
    fn labels_are_distinct_snake_case() {
        let mut labels: Vec<&str> = Kind::ALL.iter().map(|k| k.label()).collect();
        assert!(
            labels
                .iter()
                .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Kind::ALL.len());
    }
}
