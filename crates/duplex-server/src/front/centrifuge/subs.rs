//! A connection's subscriptions: a small vector searched linearly. A
//! connection holds a handful of channels (at most `max_subscriptions`),
//! and a publication is matched against them once per receiver, so a scan
//! of short strings beats hashing the channel name — and an idle
//! connection with one subscription holds one small allocation instead of
//! a hash table's.

use std::sync::Arc;

/// Subscriptions by channel name.
#[derive(Debug)]
pub(crate) struct Subs<T> {
    entries: Vec<(Arc<str>, T)>,
}

impl<T> Default for Subs<T> {
    fn default() -> Self {
        Subs {
            entries: Vec::new(),
        }
    }
}

impl<T> Subs<T> {
    fn position(&self, channel: &str) -> Option<usize> {
        // Events carry the hub's copy of the name, which is the one kept
        // here too: equal pointers usually settle it without a compare.
        self.entries
            .iter()
            .position(|(c, _)| std::ptr::eq(&**c, channel) || &**c == channel)
    }

    pub(crate) fn get(&self, channel: &str) -> Option<&T> {
        self.position(channel).map(|i| &self.entries[i].1)
    }

    pub(crate) fn get_mut(&mut self, channel: &str) -> Option<&mut T> {
        self.position(channel).map(|i| &mut self.entries[i].1)
    }

    pub(crate) fn contains_key(&self, channel: &str) -> bool {
        self.position(channel).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds a subscription (the caller checked it is not there).
    pub(crate) fn insert(&mut self, channel: Arc<str>, value: T) {
        // Room for exactly one at first (a vector's first growth makes
        // room for four): most connections hold one channel.
        if self.entries.capacity() == 0 {
            self.entries.reserve_exact(1);
        }
        self.entries.push((channel, value));
    }

    pub(crate) fn remove(&mut self, channel: &str) -> Option<T> {
        let i = self.position(channel)?;
        let (_, v) = self.entries.swap_remove(i);
        if self.entries.is_empty() {
            self.entries = Vec::new();
        }
        Some(v)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|(_, v)| v)
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (Arc<str>, T)> {
        std::mem::take(&mut self.entries).into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove() {
        let mut s = Subs::default();
        s.insert("a".into(), 1);
        assert_eq!(s.entries.capacity(), 1, "one channel, room for one");
        s.insert("b".into(), 2);
        assert_eq!(s.entries.capacity(), 4, "grown as usual past one");
        assert_eq!(s.get("b"), Some(&2));
        *s.get_mut("a").unwrap() = 3;
        assert_eq!(s.remove("a"), Some(3));
        assert!(!s.contains_key("a"));
        assert_eq!(s.len(), 1);
        assert_eq!(s.drain().count(), 1);
        assert_eq!(s.len(), 0);
    }
}
