//! One channel's presence: who is subscribed, each entry expiring unless
//! refreshed. Pure: time is passed in (milliseconds).

use super::{ClientId, ClientInfo};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The members of one channel.
#[derive(Debug, Default)]
pub struct Presence {
    members: HashMap<ClientId, (Arc<ClientInfo>, u64)>,
}

impl Presence {
    /// Adds or refreshes `info` until `now_ms + ttl_ms`. Returns whether it
    /// is new.
    pub fn add(&mut self, info: Arc<ClientInfo>, now_ms: u64, ttl_ms: u64) -> bool {
        self.members
            .insert(info.client, (info, now_ms.saturating_add(ttl_ms)))
            .is_none()
    }

    /// Removes a client; returns its entry if it was there.
    pub fn remove(&mut self, client: ClientId) -> Option<Arc<ClientInfo>> {
        self.members.remove(&client).map(|(i, _)| i)
    }

    /// Drops expired entries; returns them (their leave is not announced:
    /// their connection is gone).
    pub fn expire(&mut self, now_ms: u64) -> Vec<Arc<ClientInfo>> {
        let mut gone = Vec::new();
        self.members.retain(|_, (info, until)| {
            let keep = *until > now_ms;
            if !keep {
                gone.push(info.clone());
            }
            keep
        });
        gone
    }

    /// Live members, at most `limit`.
    pub fn list(&self, now_ms: u64, limit: usize) -> Vec<Arc<ClientInfo>> {
        self.members
            .values()
            .filter(|(_, until)| *until > now_ms)
            .take(limit)
            .map(|(i, _)| i.clone())
            .collect()
    }

    /// (clients, distinct users) that are live.
    pub fn stats(&self, now_ms: u64) -> (usize, usize) {
        let mut users = HashSet::new();
        let mut clients = 0;
        for (info, until) in self.members.values() {
            if *until > now_ms {
                clients += 1;
                users.insert(info.user.clone());
            }
        }
        (clients, users.len())
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(client: &str, user: &str) -> Arc<ClientInfo> {
        Arc::new(ClientInfo {
            client: client.into(),
            user: user.into(),
            conn_info: None,
            chan_info: None,
        })
    }

    #[test]
    fn entries_expire_unless_refreshed() {
        let mut p = Presence::default();
        assert!(p.add(info("c1", "alice"), 0, 1_000));
        assert!(p.add(info("c2", "alice"), 0, 1_000));
        assert!(p.add(info("c3", "bob"), 0, 1_000));
        assert_eq!(p.stats(0), (3, 2));
        assert!(
            !p.add(info("c1", "alice"), 900, 1_000),
            "a refresh is not new"
        );
        assert_eq!(p.stats(1_000), (1, 1));
        assert_eq!(p.list(1_000, 10).len(), 1);
        let gone = p.expire(1_000);
        assert_eq!(gone.len(), 2);
        assert_eq!(p.stats(1_899), (1, 1));
        assert!(p.remove("c1".into()).is_some());
        assert!(p.is_empty());
    }

    #[test]
    fn list_is_bounded() {
        let mut p = Presence::default();
        for i in 0..50 {
            p.add(info(&format!("c{i}"), "u"), 0, 10);
        }
        assert_eq!(p.list(0, 20).len(), 20);
    }
}
