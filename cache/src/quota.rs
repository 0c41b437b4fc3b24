//! Per-tenant storage quotas: how many body bytes each tenant with a quota has stored, how many
//! bytes its fills in progress have claimed, and how many objects were refused.
//!
//! A tenant is an opaque label the caller puts in `Meta::tenant` (the node uses the URL's
//! host). Each entry counts its own `body_len` against its own tenant, even when an identical
//! body is stored once for several keys: a tenant's usage then does not depend on what other
//! tenants happen to store, and removing another tenant's copy never changes it.
//!
//! An object that would take its tenant past the quota is not stored (its bytes still reach
//! whoever is reading them); nothing of that tenant is evicted to make room. The global byte
//! budget and its eviction work as before, and whatever they remove stops counting.
//!
//! The ledger lives inside the catalog, under the same lock, so a tenant's usage always agrees
//! with the entries that exist.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use reef_proto::ContentKey;
use serde::Serialize;
use tracing::debug;

use crate::catalog::Catalog;
use crate::store::{Inner, lock};

/// One tenant's numbers, as `Store::quotas` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuotaStats {
    /// The configured quota in bytes.
    pub quota: u64,
    /// Body bytes of this tenant's stored entries.
    pub bytes: u64,
    pub objects: u64,
    /// Objects served but not stored because they would have exceeded the quota.
    pub rejected: u64,
}

/// Why a claim was refused.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused {
    pub quota: u64,
    /// Stored plus claimed by fills in progress, before this claim.
    pub used: u64,
}

#[derive(Debug, Default)]
struct Usage {
    quota: u64,
    stored: u64,
    objects: u64,
    /// Claimed by fills in progress; becomes `stored` at commit or is given back.
    reserved: u64,
    rejected: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Only tenants with a quota are tracked; the keys are shared with the catalog's entries.
    tenants: HashMap<Arc<str>, Usage>,
}

impl Ledger {
    pub fn new(quotas: &HashMap<String, u64>) -> Ledger {
        let tenants = quotas
            .iter()
            .map(|(name, &quota)| {
                let usage = Usage {
                    quota,
                    ..Usage::default()
                };
                (Arc::from(name.as_str()), usage)
            })
            .collect();
        Ledger { tenants }
    }

    /// The shared label of `name` if it has a quota; None for everyone else.
    pub fn tenant(&self, name: &str) -> Option<Arc<str>> {
        self.tenants.get_key_value(name).map(|(k, _)| k.clone())
    }

    pub fn add_stored(&mut self, tenant: &str, len: u64) {
        if let Some(u) = self.tenants.get_mut(tenant) {
            u.stored += len;
            u.objects += 1;
        }
    }

    pub fn sub_stored(&mut self, tenant: &str, len: u64) {
        if let Some(u) = self.tenants.get_mut(tenant) {
            u.stored = u.stored.saturating_sub(len);
            u.objects = u.objects.saturating_sub(1);
        }
    }

    /// Claims `extra` bytes for a fill, unless stored + claimed + `extra` would pass the quota.
    /// `credit` is what the fill frees when it commits (the entry it replaces), so refreshing
    /// an object never fails just because its old copy still counts.
    pub fn reserve(&mut self, tenant: &str, extra: u64, credit: u64) -> Result<(), Refused> {
        let Some(u) = self.tenants.get_mut(tenant) else {
            return Ok(());
        };
        let used = u.stored + u.reserved;
        if used.saturating_sub(credit).saturating_add(extra) > u.quota {
            u.rejected += 1;
            return Err(Refused {
                quota: u.quota,
                used,
            });
        }
        u.reserved += extra;
        Ok(())
    }

    pub fn release(&mut self, tenant: &str, bytes: u64) {
        if let Some(u) = self.tenants.get_mut(tenant) {
            u.reserved = u.reserved.saturating_sub(bytes);
        }
    }

    pub fn stats(&self) -> BTreeMap<String, QuotaStats> {
        self.tenants
            .iter()
            .map(|(name, u)| {
                let stats = QuotaStats {
                    quota: u.quota,
                    bytes: u.stored,
                    objects: u.objects,
                    rejected: u.rejected,
                };
                (name.to_string(), stats)
            })
            .collect()
    }

    #[cfg(test)]
    pub fn reserved(&self, tenant: &str) -> u64 {
        self.tenants.get(tenant).map_or(0, |u| u.reserved)
    }
}

/// The bytes of a tenant's quota that one fill in progress holds. Dropping the claim gives them
/// back; a commit settles it instead, in the same catalog update that stores the entry.
pub(crate) struct Claim {
    inner: Arc<Inner>,
    key: ContentKey,
    tenant: Arc<str>,
    bytes: u64,
}

impl Claim {
    /// An empty claim on `tenant`'s quota for a fill of `key`; None if the tenant has no quota.
    pub fn new(inner: &Arc<Inner>, key: ContentKey, tenant: &str) -> Option<Claim> {
        let tenant = lock(&inner.catalog).quota_tenant(tenant)?;
        Some(Claim {
            inner: inner.clone(),
            key,
            tenant,
            bytes: 0,
        })
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Grows the claim to `total` bytes. On refusal the claim keeps what it had, the refusal is
    /// counted for the tenant, and a line is logged.
    pub fn grow_to(&mut self, total: u64) -> Result<(), Refused> {
        if total <= self.bytes {
            return Ok(());
        }
        let extra = total - self.bytes;
        let res = lock(&self.inner.catalog).reserve(&self.key, &self.tenant, extra);
        match res {
            Ok(()) => self.bytes = total,
            Err(r) => debug!(
                key = %self.key.short(), tenant = %self.tenant, len = total, quota = r.quota,
                used = r.used, "over the tenant's storage quota; serving without storing"
            ),
        }
        res
    }

    /// Gives the claimed bytes back within the caller's catalog update (the commit then
    /// charges the stored entry) and returns the tenant to charge it to.
    pub fn settle(&mut self, catalog: &mut Catalog) -> Arc<str> {
        catalog.release(&self.tenant, self.bytes);
        self.bytes = 0;
        self.tenant.clone()
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Skipping the lock when there is nothing to give back keeps a settled claim safe to
        // drop while its catalog lock is still held.
        if self.bytes > 0 {
            lock(&self.inner.catalog).release(&self.tenant, self.bytes);
        }
    }
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("tenant", &self.tenant)
            .field("bytes", &self.bytes)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ledger() -> Ledger {
        Ledger::new(&HashMap::from([("a".to_string(), 100)]))
    }

    #[test]
    fn claims_count_until_released_and_refusals_are_counted() {
        let mut l = ledger();
        assert!(l.reserve("a", 60, 0).is_ok());
        let r = l.reserve("a", 41, 0).unwrap_err();
        assert_eq!((r.quota, r.used), (100, 60));
        l.release("a", 60);
        l.add_stored("a", 60);
        assert!(l.reserve("a", 40, 0).is_ok());
        assert!(l.reserve("a", 1, 0).is_err());
        let s = l.stats()["a"];
        assert_eq!((s.quota, s.bytes, s.objects, s.rejected), (100, 60, 1, 2));
    }

    #[test]
    fn a_replacement_is_credited_with_what_it_frees() {
        let mut l = ledger();
        l.add_stored("a", 80);
        assert!(l.reserve("a", 90, 0).is_err());
        assert!(l.reserve("a", 90, 80).is_ok());
    }

    #[test]
    fn tenants_without_a_quota_are_not_tracked() {
        let mut l = ledger();
        assert!(l.tenant("b").is_none());
        assert!(l.reserve("b", u64::MAX, 0).is_ok());
        l.add_stored("b", 5);
        assert_eq!(l.stats().len(), 1);
        assert_eq!(l.tenant("a").as_deref(), Some("a"));
    }
}
