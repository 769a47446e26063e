//! Bounded memories the nodes of one process share (the simulator's):
//! answers found by a key and then by the exact bytes they were given for,
//! so a memory never answers for bytes that differ in any way.
//!
//! Two generations: when the new one is full it becomes the old one and the
//! one before is dropped, so memory stays bounded however long a run lasts
//! while an entry is kept for at least a generation's worth of later ones.
//! A leaf module: the signature memory (`crypto`) and the proposal frame
//! memory (`consensus`) both use it.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Entries by key, then by their exact bytes: the same key with other bytes
/// is another entry (and almost never happens, so a list is one long).
type Entries<K, V> = BTreeMap<K, Vec<(Arc<[u8]>, V)>>;

pub(crate) struct Generations<K, V> {
    new: Entries<K, V>,
    old: Entries<K, V>,
    /// Entries in `new`, and the bytes they hold.
    held: usize,
    held_bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    /// Lookups answered, and not.
    hits: u64,
    misses: u64,
}

impl<K: Ord, V> Generations<K, V> {
    /// A generation holds at most `max_entries` entries and `max_bytes`
    /// bytes; a single entry over `max_bytes` is never kept.
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        Generations {
            new: BTreeMap::new(),
            old: BTreeMap::new(),
            held: 0,
            held_bytes: 0,
            max_entries,
            max_bytes,
            hits: 0,
            misses: 0,
        }
    }

    /// The entry for `key` and exactly `bytes`, newest generation first;
    /// counted as a hit or a miss.
    pub(crate) fn find(&mut self, key: &K, bytes: &[u8]) -> Option<(&Arc<[u8]>, &V)> {
        let found = find(&self.new, key, bytes).or_else(|| find(&self.old, key, bytes));
        match found {
            Some(_) => self.hits += 1,
            None => self.misses += 1,
        }
        found
    }

    /// Lookups `find` answered, and did not.
    pub(crate) fn hits(&self) -> u64 {
        self.hits
    }
    pub(crate) fn misses(&self) -> u64 {
        self.misses
    }

    /// Keeps `value` for `key` and `bytes`, unless the new generation has
    /// it already or the bytes alone overflow a generation. The bytes are
    /// copied (or the `Arc` taken) only when kept.
    pub(crate) fn put<B>(&mut self, key: K, bytes: B, value: V)
    where
        B: AsRef<[u8]> + Into<Arc<[u8]>>,
    {
        let len = bytes.as_ref().len();
        if len > self.max_bytes || find(&self.new, &key, bytes.as_ref()).is_some() {
            return;
        }
        let bytes: Arc<[u8]> = bytes.into();
        if self.held >= self.max_entries || self.held_bytes + bytes.len() > self.max_bytes {
            self.old = std::mem::take(&mut self.new);
            self.held = 0;
            self.held_bytes = 0;
        }
        self.held += 1;
        self.held_bytes += bytes.len();
        self.new.entry(key).or_default().push((bytes, value));
    }

    /// Entries held now (both generations).
    pub(crate) fn len(&self) -> usize {
        let count = |e: &Entries<K, V>| e.values().map(Vec::len).sum::<usize>();
        count(&self.new) + count(&self.old)
    }
}

fn find<'a, K: Ord, V>(
    entries: &'a Entries<K, V>,
    key: &K,
    bytes: &[u8],
) -> Option<(&'a Arc<[u8]>, &'a V)> {
    let list = entries.get(key)?;
    list.iter()
        .find(|(b, _)| **b == *bytes)
        .map(|(b, v)| (b, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exact_bytes_only() {
        let mut g = Generations::new(4, 1 << 10);
        g.put(1u8, Arc::from(&b"abc"[..]), 'a');
        assert_eq!(g.find(&1, b"abc").map(|(_, v)| *v), Some('a'));
        assert!(g.find(&1, b"abd").is_none());
        assert!(g.find(&1, b"ab").is_none());
        assert!(g.find(&2, b"abc").is_none());
        // The same key with other bytes is another entry.
        g.put(1, Arc::from(&b"xyz"[..]), 'x');
        assert_eq!(g.find(&1, b"xyz").map(|(_, v)| *v), Some('x'));
        assert_eq!(g.find(&1, b"abc").map(|(_, v)| *v), Some('a'));
        // A repeat is not a new entry.
        g.put(1, Arc::from(&b"abc"[..]), 'b');
        assert_eq!(g.len(), 2);
        // Every lookup above counted: three found, three not.
        assert_eq!((g.hits(), g.misses()), (3, 3));
        // Plain bytes are taken too, copied only when kept.
        g.put(2, &b"abc"[..], 'c');
        assert_eq!(g.find(&2, b"abc").map(|(_, v)| *v), Some('c'));
    }

    #[test]
    fn two_generations_bound_entries_and_bytes() {
        let mut g = Generations::new(3, 100);
        for i in 0..10u32 {
            g.put(i, Arc::from(&[0u8; 10][..]), i);
        }
        // Generations of 3: 9 started a new one, 6..8 the old one.
        assert_eq!(g.len(), 4);
        assert!(g.find(&5, &[0; 10]).is_none());
        assert!(g.find(&6, &[0; 10]).is_some());
        assert!(g.find(&9, &[0; 10]).is_some());
        // Bytes: 60 + 60 overflows 100, so each entry starts a generation.
        let mut g = Generations::new(100, 100);
        g.put(0u8, Arc::from(&[0u8; 60][..]), ());
        g.put(1u8, Arc::from(&[0u8; 60][..]), ());
        g.put(2u8, Arc::from(&[0u8; 60][..]), ());
        assert_eq!(g.len(), 2);
        assert!(g.find(&0, &[0; 60]).is_none());
        // One entry over a generation's bytes is never kept.
        g.put(3u8, Arc::from(&[0u8; 101][..]), ());
        assert!(g.find(&3, &[0; 101]).is_none());
    }
}
