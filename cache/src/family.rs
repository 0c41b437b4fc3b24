//! Which stored entries are variants of which URL, so that removing a URL (invalidation,
//! purge) also removes every variant of it. Only URLs whose responses vary have an entry here.

use std::collections::{HashMap, HashSet};

use reef_proto::ContentKey;

#[derive(Debug, Default)]
pub(crate) struct Families {
    variants: HashMap<ContentKey, HashSet<ContentKey>>,
    parent: HashMap<ContentKey, ContentKey>,
}

impl Families {
    /// Records that `variant` is stored as one variant of `primary`.
    pub fn add(&mut self, primary: ContentKey, variant: ContentKey) {
        if let Some(old) = self.parent.insert(variant, primary)
            && old != primary
        {
            self.detach(&old, &variant);
        }
        self.variants.entry(primary).or_default().insert(variant);
    }

    /// Forgets a removed entry, whether it was a variant or not.
    pub fn forget(&mut self, key: &ContentKey) {
        if let Some(primary) = self.parent.remove(key) {
            self.detach(&primary, key);
        }
    }

    /// The stored variants of `primary`.
    pub fn variants_of(&self, primary: &ContentKey) -> Vec<ContentKey> {
        self.variants
            .get(primary)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default()
    }

    fn detach(&mut self, primary: &ContentKey, variant: &ContentKey) {
        if let Some(set) = self.variants.get_mut(primary) {
            set.remove(variant);
            if set.is_empty() {
                self.variants.remove(primary);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(b: u8) -> ContentKey {
        ContentKey::from_bytes([b; 32])
    }

    #[test]
    fn tracks_and_forgets_variants() {
        let mut f = Families::default();
        f.add(k(1), k(10));
        f.add(k(1), k(11));
        f.add(k(2), k(20));
        let mut v = f.variants_of(&k(1));
        v.sort();
        assert_eq!(v, vec![k(10), k(11)]);
        f.forget(&k(10));
        assert_eq!(f.variants_of(&k(1)), vec![k(11)]);
        f.forget(&k(11));
        assert!(f.variants_of(&k(1)).is_empty());
        assert!(!f.variants.contains_key(&k(1)));
        // Forgetting a key that is no variant is harmless.
        f.forget(&k(1));
        assert_eq!(f.variants_of(&k(2)), vec![k(20)]);
    }
}
