//! Bookkeeping of the KV pool's blocks: which are free, which sequences hold, and which hold a computed
//! prefix kept for reuse (the prefix cache). A full block is registered under a key that chains the
//! keys of the blocks before it with its own tokens, seeded by the request's cache scope (adapter and
//! caller), so two sequences share a block only when everything before and in it is the same and
//! they are in the same scope. Registered blocks no sequence holds stay cached until the space is
//! needed, least recently used first.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

pub(crate) struct BlockManager {
    refs: Vec<u32>,
    /// The key a block is registered under in `cached`.
    key: Vec<Option<u64>>,
    /// When a cached block was last released, as a position in `evictable`.
    released_at: Vec<u64>,
    free: Vec<u32>,
    cached: HashMap<u64, u32>,
    /// Cached blocks that no sequence holds, oldest release first.
    evictable: BTreeMap<u64, u32>,
    tick: u64,
}

impl BlockManager {
    pub(crate) fn new(blocks: usize) -> Self {
        BlockManager {
            refs: vec![0; blocks],
            key: vec![None; blocks],
            released_at: vec![0; blocks],
            free: (0..blocks as u32).rev().collect(),
            cached: HashMap::new(),
            evictable: BTreeMap::new(),
            tick: 0,
        }
    }

    pub(crate) fn total(&self) -> usize {
        self.refs.len()
    }

    /// Blocks a sequence could get now: free ones and cached ones nobody holds.
    pub(crate) fn available(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// Blocks holding a cached prefix (held or not).
    pub(crate) fn cached(&self) -> usize {
        self.cached.len()
    }

    /// A block for one holder: a free one, else the least recently used cached block, forgotten.
    pub(crate) fn allocate(&mut self) -> Option<u32> {
        let block = match self.free.pop() {
            Some(b) => b,
            None => {
                let (_, b) = self.evictable.pop_first()?;
                if let Some(k) = self.key[b as usize].take() {
                    self.cached.remove(&k);
                }
                b
            }
        };
        self.refs[block as usize] = 1;
        Some(block)
    }

    pub(crate) fn release(&mut self, block: u32) {
        let b = block as usize;
        debug_assert!(self.refs[b] > 0, "block {block} released more often than held");
        self.refs[b] = self.refs[b].saturating_sub(1);
        if self.refs[b] == 0 {
            if self.key[b].is_some() {
                self.tick += 1;
                self.released_at[b] = self.tick;
                self.evictable.insert(self.tick, block);
            } else {
                self.free.push(block);
            }
        }
    }

    /// The cached block registered under `key`, now also held by the caller.
    pub(crate) fn lookup(&mut self, key: u64) -> Option<u32> {
        let block = *self.cached.get(&key)?;
        let b = block as usize;
        if self.refs[b] == 0 {
            self.evictable.remove(&self.released_at[b]);
        }
        self.refs[b] += 1;
        Some(block)
    }

    /// Offers a just-completed full block to the prefix cache. The first block computed for a key
    /// stays the one cached; a later duplicate is freed normally when released.
    pub(crate) fn register(&mut self, block: u32, key: u64) {
        if self.key[block as usize].is_none() && !self.cached.contains_key(&key) {
            self.cached.insert(key, block);
            self.key[block as usize] = Some(key);
        }
    }
}

/// The key of a full block: the previous block's key (or the scope for the first block) and its tokens.
pub(crate) fn chain_key(previous: u64, tokens: &[u32]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    previous.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// The seed of a request's chain: requests share cached blocks only within one scope.
pub(crate) fn scope_key(adapter: Option<&str>, scope: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    adapter.hash(&mut h);
    scope.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_prefix_blocks_are_reused_until_space_is_needed() {
        let mut m = BlockManager::new(2);
        let a = m.allocate().unwrap();
        let key = chain_key(scope_key(None, "s1"), &[1, 2, 3]);
        m.register(a, key);
        m.release(a);
        assert_eq!(m.available(), 2);
        assert_eq!(m.lookup(key), Some(a), "a released, registered block is found again");
        assert_eq!(m.available(), 1);
        m.release(a);
        let b = m.allocate().unwrap();
        assert_ne!(a, b, "free blocks go before cached ones");
        assert_eq!(m.allocate(), Some(a), "then the least recently used cached block");
        assert_eq!(m.lookup(key), None, "and its entry is gone");
        assert_eq!(m.allocate(), None);
    }

    #[test]
    fn scopes_and_adapters_seed_different_chains() {
        let t = [5u32; 16];
        assert_ne!(chain_key(scope_key(None, "a"), &t), chain_key(scope_key(None, "b"), &t));
        assert_ne!(chain_key(scope_key(Some("x"), "a"), &t), chain_key(scope_key(None, "a"), &t));
        assert_eq!(chain_key(scope_key(None, "a"), &t), chain_key(scope_key(None, "a"), &t));
    }
}
