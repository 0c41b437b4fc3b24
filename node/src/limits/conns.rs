//! Open connections per client address, so that one address cannot take every slot of the
//! node's connection limit. Entries exist only while a connection is open, so the map is
//! bounded by that limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use super::clients::ClientKey;

#[derive(Debug)]
pub struct Connections {
    per_client: usize,
    open: Mutex<HashMap<ClientKey, usize>>,
}

/// One open connection; closing it (dropping this) frees the client's slot.
#[derive(Debug)]
pub struct Slot {
    table: Arc<Connections>,
    key: ClientKey,
}

impl Connections {
    pub fn new(per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            per_client,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a new connection from `ip`, or None if it has `per_client` open already.
    pub fn open(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let key = ClientKey::of(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(key).or_insert(0);
        if *n >= self.per_client {
            return None;
        }
        *n += 1;
        Some(Slot {
            table: self.clone(),
            key,
        })
    }

    /// Clients with a connection open.
    pub fn clients(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_share_and_closing_frees_it() {
        let conns = Connections::new(2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = conns.open(a).unwrap();
        let _a2 = conns.open(a).unwrap();
        assert!(conns.open(a).is_none());
        let _b1 = conns.open(b).unwrap();
        drop(a1);
        assert!(conns.open(a).is_some());
        assert_eq!(conns.clients(), 2);
    }
}
