//! The ledger (`ledger.redb` in the data dir, apart from `peering.redb` so accounting that
//! is owed to another provider never shares a schema with local counters): per arrangement
//! the latest accepted usage receipt of each serving node, and the settlements: the final one
//! of a short-term arrangement that ended, the latest statement of a long-term one.
//!
//! Receipts are cumulative, so the account of an arrangement is the sum over its serving nodes
//! of each one's receipt with the highest `seq`. The primary collects them from the peer's
//! nodes; at the end it hands the same signed receipts to the peer's agent, which checks that
//! its own nodes signed them, so both ledgers add up the same numbers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use reef_proto::peering::Settlement;
use reef_proto::records::{ArrangementId, Opened, ProviderId, UsageReceipt};
use serde::{Deserialize, Serialize};

use super::Arrangement;

/// (arrangement id ‖ node key) → JSON of [`Held`].
const RECEIPTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("receipts_v1");
/// Arrangement id → JSON of [`Entry`].
const SETTLEMENTS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("settlements_v1");

/// Latest receipts kept, one per (arrangement, serving node); receipts of settled
/// arrangements make room first.
pub const MAX_RECEIPTS: usize = 4096;
/// Settlements kept; the oldest make room.
pub const MAX_SETTLEMENTS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {0}")]
    Db(#[from] super::store::StoreError),
    #[error("ledger is full ({MAX_RECEIPTS} open receipts)")]
    Full,
}

super::store::from_db_errors!(LedgerError, |text| LedgerError::Db(
    super::store::StoreError(text)
));

/// Why a receipt does not count toward an arrangement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("no such arrangement")]
    Unknown,
    #[error("our provider is no party to the arrangement")]
    NotOurs,
    #[error("the signer is not a certified node of the arrangement's peer")]
    WrongProvider,
}

/// Whether `receipt` counts toward `arrangement` at a node of `own`: only a certified node of
/// the arrangement's peer serves under it, whichever side is checking.
pub fn check(
    arrangement: &Arrangement,
    own: ProviderId,
    receipt: &Opened<UsageReceipt>,
    now_ms: u64,
) -> Result<(), ReceiptError> {
    if receipt.record().arrangement != arrangement.id {
        return Err(ReceiptError::Unknown);
    }
    if own != arrangement.primary && own != arrangement.peer {
        return Err(ReceiptError::NotOurs);
    }
    let membership = receipt.membership(now_ms);
    if !membership.is_certified() || membership.provider() != arrangement.peer {
        return Err(ReceiptError::WrongProvider);
    }
    Ok(())
}

/// The latest receipt of one serving node, with its sealed form so it can be handed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub seq: u64,
    pub requests: u64,
    pub bytes: u64,
    pub sealed: Vec<u8>,
}

/// A final settlement as this ledger wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: [u8; 16],
    pub primary: [u8; 32],
    pub peer: [u8; 32],
    pub requests: u64,
    pub bytes: u64,
    pub amount_micros: u64,
    pub written_at_ms: u64,
    /// Whether the other party wrote the same: always on the peer's side (it writes only what
    /// it agrees with); on the primary's once the peer answered with the same figures.
    #[serde(default)]
    pub agreed: bool,
    /// A statement of a long-term arrangement that goes on (the figures so far, replaced by
    /// the next statement) rather than the final settlement of one that ended.
    #[serde(default)]
    pub statement: bool,
}

type Key = ([u8; 16], [u8; 32]);

#[derive(Default)]
struct State {
    receipts: BTreeMap<Key, Held>,
    settlements: BTreeMap<[u8; 16], Entry>,
}

pub struct Ledger {
    db: Option<Database>,
    state: Mutex<State>,
}

fn key_bytes((id, node): &Key) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..16].copy_from_slice(id);
    k[16..].copy_from_slice(node);
    k
}

impl Ledger {
    /// The ledger at `path` (created if missing), read into memory; rows that do not decode
    /// are skipped.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(RECEIPTS)?;
        txn.open_table(SETTLEMENTS)?;
        txn.commit()?;
        let mut state = State::default();
        let txn = db.begin_read()?;
        for row in txn.open_table(RECEIPTS)?.iter()? {
            let (k, v) = row?;
            let k = k.value();
            if let (Ok(id), Ok(node), Ok(held)) = (
                <[u8; 16]>::try_from(&k[..k.len().min(16)]),
                <[u8; 32]>::try_from(&k[k.len().min(16)..]),
                serde_json::from_slice::<Held>(v.value()),
            ) {
                state.receipts.insert((id, node), held);
            }
        }
        for row in txn.open_table(SETTLEMENTS)?.iter()? {
            let (k, v) = row?;
            if let Ok(entry) = serde_json::from_slice(v.value()) {
                state.settlements.insert(*k.value(), entry);
            }
        }
        drop(txn);
        Ok(Ledger {
            db: Some(db),
            state: Mutex::new(state),
        })
    }

    /// A ledger kept in memory only (tests, and a node whose ledger does not open).
    pub fn in_memory() -> Ledger {
        Ledger {
            db: None,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `receipt` if it is the node's newest for its arrangement; whether it was (an
    /// older or repeated one is ignored: the newer counts include it). Blocks on disk.
    pub fn record(&self, receipt: &UsageReceipt, sealed: &[u8]) -> Result<bool, LedgerError> {
        let key = (*receipt.arrangement.as_bytes(), receipt.node);
        let held = Held {
            seq: receipt.seq,
            requests: receipt.requests,
            bytes: receipt.bytes,
            sealed: sealed.to_vec(),
        };
        let mut state = self.state();
        match state.receipts.get(&key) {
            Some(old) if old.seq >= held.seq => return Ok(false),
            Some(_) => {}
            None if state.receipts.len() >= MAX_RECEIPTS => {
                let settled: Vec<Key> = state
                    .receipts
                    .keys()
                    .filter(|(id, _)| state.settlements.get(id).is_some_and(|e| !e.statement))
                    .copied()
                    .collect();
                if settled.is_empty() {
                    return Err(LedgerError::Full);
                }
                self.remove(&settled)?;
                for k in settled {
                    state.receipts.remove(&k);
                }
            }
            None => {}
        }
        if let Some(db) = &self.db {
            let txn = db.begin_write()?;
            txn.open_table(RECEIPTS)?.insert(
                key_bytes(&key).as_slice(),
                serde_json::to_vec(&held)?.as_slice(),
            )?;
            txn.commit()?;
        }
        state.receipts.insert(key, held);
        Ok(true)
    }

    fn remove(&self, keys: &[Key]) -> Result<(), LedgerError> {
        if let Some(db) = &self.db {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(RECEIPTS)?;
                for k in keys {
                    table.remove(key_bytes(k).as_slice())?;
                }
            }
            txn.commit()?;
        }
        Ok(())
    }

    /// The latest receipt of each serving node for `id`, by node key.
    pub fn receipts(&self, id: &ArrangementId) -> Vec<([u8; 32], Held)> {
        let id = *id.as_bytes();
        self.state()
            .receipts
            .range((id, [0; 32])..=(id, [0xff; 32]))
            .map(|((_, node), held)| (*node, held.clone()))
            .collect()
    }

    /// What the latest receipts for `id` add up to, at `price_micros_per_gb`.
    pub fn account(&self, id: ArrangementId, price_micros_per_gb: u64) -> Settlement {
        let (requests, bytes) = self
            .receipts(&id)
            .iter()
            .fold((0u64, 0u64), |(r, b), (_, h)| {
                (r.saturating_add(h.requests), b.saturating_add(h.bytes))
            });
        Settlement::compute(id, requests, bytes, price_micros_per_gb)
    }

    pub fn settlement(&self, id: &ArrangementId) -> Option<Entry> {
        self.state().settlements.get(id.as_bytes()).copied()
    }

    /// Our settlements the other party has not agreed to yet.
    pub fn unagreed(&self) -> Vec<Entry> {
        self.state()
            .settlements
            .values()
            .filter(|e| !e.agreed)
            .copied()
            .collect()
    }

    /// The other party agreed to our settlement of `id`. Blocks on disk.
    pub fn mark_agreed(&self, id: &ArrangementId) -> Result<(), LedgerError> {
        let entry = match self.state().settlements.get(id.as_bytes()) {
            Some(e) if !e.agreed => Entry { agreed: true, ..*e },
            _ => return Ok(()),
        };
        self.write_settlement(entry)
    }

    /// Writes the settlement of `arrangement` (final for a short-term one, the statement so
    /// far for a long-term one); `agreed`: the other party wrote the same. Blocks on disk.
    pub fn settle(
        &self,
        arrangement: &Arrangement,
        settlement: &Settlement,
        now_ms: u64,
        agreed: bool,
    ) -> Result<Entry, LedgerError> {
        let entry = Entry {
            id: *settlement.id.as_bytes(),
            primary: *arrangement.primary.as_bytes(),
            peer: *arrangement.peer.as_bytes(),
            requests: settlement.requests,
            bytes: settlement.bytes,
            amount_micros: settlement.amount_micros,
            written_at_ms: now_ms,
            agreed,
            statement: arrangement.basis == super::Basis::LongTerm,
        };
        self.write_settlement(entry)?;
        Ok(entry)
    }

    fn write_settlement(&self, entry: Entry) -> Result<(), LedgerError> {
        let mut state = self.state();
        let oldest = (state.settlements.len() >= MAX_SETTLEMENTS
            && !state.settlements.contains_key(&entry.id))
        .then(|| {
            state
                .settlements
                .values()
                .min_by_key(|e| e.written_at_ms)
                .map(|e| e.id)
        })
        .flatten();
        if let Some(db) = &self.db {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(SETTLEMENTS)?;
                if let Some(old) = &oldest {
                    table.remove(old)?;
                }
                table.insert(&entry.id, serde_json::to_vec(&entry)?.as_slice())?;
            }
            txn.commit()?;
        }
        if let Some(old) = oldest {
            state.settlements.remove(&old);
        }
        state.settlements.insert(entry.id, entry);
        Ok(())
    }

    /// What `GET /api/ledger` shows.
    pub fn view(&self) -> LedgerView {
        let state = self.state();
        let settlements = state
            .settlements
            .values()
            .map(|e| SettlementView {
                id: ArrangementId::from_bytes(e.id).to_string(),
                primary: ProviderId::from_bytes(e.primary).to_string(),
                peer: ProviderId::from_bytes(e.peer).to_string(),
                requests: e.requests,
                bytes: e.bytes,
                amount_micros: e.amount_micros,
                written_at: e.written_at_ms,
                agreed: e.agreed,
                kind: if e.statement { "statement" } else { "final" },
            })
            .collect();
        let mut open: BTreeMap<[u8; 16], AccountView> = BTreeMap::new();
        for ((id, _), held) in &state.receipts {
            if state.settlements.get(id).is_some_and(|e| !e.statement) {
                continue;
            }
            let account = open.entry(*id).or_insert_with(|| AccountView {
                id: ArrangementId::from_bytes(*id).to_string(),
                nodes: 0,
                requests: 0,
                bytes: 0,
            });
            account.nodes += 1;
            account.requests = account.requests.saturating_add(held.requests);
            account.bytes = account.bytes.saturating_add(held.bytes);
        }
        LedgerView {
            settlements,
            open: open.into_values().collect(),
        }
    }
}

/// [`Ledger::open`], falling back to memory when the file cannot be opened: accounting goes
/// on, and the operator sees why in the log.
pub fn open_or_memory(path: &Path) -> Arc<Ledger> {
    match Ledger::open(path) {
        Ok(l) => Arc::new(l),
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "ledger kept in memory only");
            Arc::new(Ledger::in_memory())
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LedgerView {
    pub settlements: Vec<SettlementView>,
    /// Arrangements without a final settlement: the sum of the latest receipts.
    pub open: Vec<AccountView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SettlementView {
    pub id: String,
    pub primary: String,
    pub peer: String,
    pub requests: u64,
    pub bytes: u64,
    pub amount_micros: u64,
    /// Unix ms.
    pub written_at: u64,
    /// Both parties hold the same settlement.
    pub agreed: bool,
    /// `final` (a short-term arrangement that ended) or `statement` (a long-term one so far).
    pub kind: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    pub id: String,
    pub nodes: usize,
    pub requests: u64,
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{ProviderIdentity, issue_cert, unix_ms};
    use reef_proto::records::{ProviderKey, open, seal};

    fn provider(seed: u8) -> ProviderIdentity {
        ProviderIdentity {
            name: format!("p{seed}"),
            key: ProviderKey::from_bytes(&[seed; 32]),
        }
    }

    /// A short-term-like arrangement of `primary` served by `peer`.
    fn arrangement(primary: &ProviderIdentity, peer: &ProviderIdentity) -> Arrangement {
        let lt = super::super::LongTerm {
            primary: primary.key.id(),
            peer: peer.key.id(),
            services: ["video.example".to_string()].into(),
            share_permille: 1000,
            price_micros_per_gb: 20_000,
        };
        Arrangement {
            basis: super::super::Basis::ShortTerm,
            ..Arrangement::long_term(&lt)
        }
    }

    /// A receipt sealed by a fresh node certified by `by`.
    fn receipt(
        by: &ProviderIdentity,
        id: ArrangementId,
        seq: u64,
        bytes: u64,
    ) -> (Opened<UsageReceipt>, Vec<u8>) {
        let keypair = reef_overlay::Keypair::generate_ed25519();
        let key = crate::identity::signing_key(&keypair).unwrap();
        let now = unix_ms();
        let receipt = UsageReceipt {
            arrangement: id,
            node: key.verifying_key().to_bytes(),
            seq,
            requests: 1,
            bytes,
            cert: Some(issue_cert(by, &keypair.public().to_peer_id(), now).unwrap()),
        };
        let sealed = seal(&key, &receipt, now, now + 60_000).unwrap();
        (open(&sealed, now).unwrap(), sealed)
    }

    #[test]
    fn only_certified_nodes_of_the_peer_count_on_either_side() {
        let (a, b, c) = (provider(1), provider(2), provider(3));
        let arr = arrangement(&a, &b);
        let now = unix_ms();
        let (good, _) = receipt(&b, arr.id, 1, 10);
        assert_eq!(check(&arr, a.key.id(), &good, now), Ok(()));
        assert_eq!(check(&arr, b.key.id(), &good, now), Ok(()));
        assert_eq!(
            check(&arr, c.key.id(), &good, now),
            Err(ReceiptError::NotOurs)
        );
        // A node of the primary, or of a third provider, does not serve under it.
        for wrong in [&a, &c] {
            let (bad, _) = receipt(wrong, arr.id, 1, 10);
            assert_eq!(
                check(&arr, a.key.id(), &bad, now),
                Err(ReceiptError::WrongProvider)
            );
        }
        let (other, _) = receipt(&b, ArrangementId::from_bytes([7; 16]), 1, 10);
        assert_eq!(
            check(&arr, a.key.id(), &other, now),
            Err(ReceiptError::Unknown)
        );
    }

    #[test]
    fn a_lower_or_repeated_seq_is_ignored() {
        let (a, b) = (provider(1), provider(2));
        let arr = arrangement(&a, &b);
        let ledger = Ledger::in_memory();
        let (first, sealed) = receipt(&b, arr.id, 5, 100);
        assert!(ledger.record(first.record(), &sealed).unwrap());
        let older = UsageReceipt {
            seq: 4,
            bytes: 50,
            ..first.record().clone()
        };
        assert!(!ledger.record(&older, &sealed).unwrap());
        assert!(!ledger.record(first.record(), &sealed).unwrap());
        let newer = UsageReceipt {
            seq: 6,
            bytes: 300,
            ..first.record().clone()
        };
        assert!(ledger.record(&newer, &sealed).unwrap());
        // A second node adds to the account; the first counts with its newest receipt only.
        let (second, sealed) = receipt(&b, arr.id, 1, 1_000_000_000);
        assert!(ledger.record(second.record(), &sealed).unwrap());
        let account = ledger.account(arr.id, arr.price_micros_per_gb);
        assert_eq!(
            account,
            Settlement::compute(arr.id, 2, 1_000_000_300, 20_000)
        );
        assert_eq!(account.amount_micros, 20_000);
    }

    #[test]
    fn receipts_and_settlements_survive_reopening() {
        let (a, b) = (provider(1), provider(2));
        let arr = arrangement(&a, &b);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.redb");
        let (r, sealed) = receipt(&b, arr.id, 9, 4000);
        let written = {
            let ledger = Ledger::open(&path).unwrap();
            assert!(ledger.view().settlements.is_empty());
            ledger.record(r.record(), &sealed).unwrap();
            let settlement = ledger.account(arr.id, arr.price_micros_per_gb);
            ledger.settle(&arr, &settlement, 1234, false).unwrap()
        };
        let ledger = Ledger::open(&path).unwrap();
        assert_eq!(ledger.settlement(&arr.id), Some(written));
        assert_eq!(ledger.unagreed(), vec![written]);
        ledger.mark_agreed(&arr.id).unwrap();
        assert!(ledger.unagreed().is_empty());
        drop(ledger);
        let ledger = Ledger::open(&path).unwrap();
        assert!(
            ledger.settlement(&arr.id).unwrap().agreed,
            "kept across reopening"
        );
        let held = ledger.receipts(&arr.id);
        assert_eq!(held.len(), 1);
        assert_eq!((held[0].1.seq, held[0].1.bytes), (9, 4000));
        assert_eq!(held[0].1.sealed, sealed);
        let view = ledger.view();
        assert_eq!(view.settlements[0].bytes, 4000);
        assert_eq!(view.settlements[0].written_at, 1234);
        assert!(view.open.is_empty(), "settled, so no longer open");
        assert_eq!(view.settlements[0].kind, "final");
    }

    #[test]
    fn a_statement_leaves_a_long_term_account_open() {
        let (a, b) = (provider(1), provider(2));
        let long_term = Arrangement {
            basis: super::super::Basis::LongTerm,
            ..arrangement(&a, &b)
        };
        let ledger = Ledger::in_memory();
        let (r, sealed) = receipt(&b, long_term.id, 1, 700);
        ledger.record(r.record(), &sealed).unwrap();
        let account = ledger.account(long_term.id, 0);
        ledger.settle(&long_term, &account, 1, true).unwrap();
        let view = ledger.view();
        assert_eq!(view.settlements[0].kind, "statement");
        assert_eq!(view.open[0].bytes, 700, "it goes on");
    }
}
