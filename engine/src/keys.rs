//! Stable key routing: key -> hash -> key group -> worker.
//!
//! The hash must be identical on every process and in every run (a shuffle that hashes a
//! key differently on two processes silently splits its group), so it is Riffle's own
//! [`StableHasher`], never `std`'s randomly seeded `RandomState`: an algorithm we own
//! cannot change under us with a dependency's version, which checkpoints (keyed by key
//! group) rely on. It is a multiply-fold hash over 64-bit words with a final avalanche,
//! cheap to start per key (xxh3's streaming state is 600 bytes). Keys map to one of
//! [`KEY_GROUPS`] groups first and groups to workers by contiguous ranges (Flink's
//! max-parallelism): state snapshotted per key group restores at any worker count.

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

/// How many key groups exist; the most workers a job's keyed state can be spread over.
pub const KEY_GROUPS: u32 = 4096;

/// A key group: the unit in which keyed state is routed, and later snapshotted.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct KeyGroup(pub u32);

/// A hasher whose output depends only on the bytes and words written: the same on every
/// machine, process and run of the same binary.
#[derive(Clone, Copy, Debug)]
pub struct StableHasher {
    state: u64,
}

const SEED: u64 = 0x243f_6a88_85a3_08d3;
const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher { state: SEED }
    }
}

impl StableHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        // Folded multiply: the high and low halves of a 128-bit product, xored.
        let m = u128::from(self.state ^ word) * u128::from(MUL);
        self.state = (m as u64) ^ ((m >> 64) as u64);
    }
}

impl Hasher for StableHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.mix(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        // The length keeps "ab" + "" apart from "a" + "b".
        self.mix(u64::from_le_bytes(last) ^ ((bytes.len() as u64) << 56));
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.mix(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // splitmix64's finalizer: every input bit reaches every output bit.
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The stable 64-bit hash of a key.
#[inline]
pub fn stable_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = StableHasher::default();
    key.hash(&mut h);
    h.finish()
}

impl KeyGroup {
    /// The key group of `key`.
    #[inline]
    pub fn of<K: Hash + ?Sized>(key: &K) -> KeyGroup {
        KeyGroup(((stable_hash(key) >> 32) % KEY_GROUPS as u64) as u32)
    }

    /// The worker (of `peers`) that owns this key group: contiguous ranges, so that moving
    /// from `n` to `m` workers moves whole ranges of groups.
    #[inline]
    pub fn worker(self, peers: usize) -> usize {
        (self.0 as u64 * peers as u64 / KEY_GROUPS as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED_U64: u64 = 6810052534467633580;
    const PINNED_STR: u64 = 9065427007788630108;

    #[test]
    fn hash_is_pinned() {
        // Fixed values: if these change, state routed by key group (checkpoints, and a
        // cluster running two builds) is routed differently. Change them only on purpose.
        assert_eq!(stable_hash(&42u64), PINNED_U64);
        assert_eq!(stable_hash("riffle"), PINNED_STR);
        assert_ne!(stable_hash(&("a", "b")), stable_hash(&("ab", "")));
    }

    #[test]
    fn groups_spread_over_workers_evenly() {
        let peers = 4;
        let mut counts = vec![0usize; peers];
        for k in 0..40_000u64 {
            counts[KeyGroup::of(&k).worker(peers)] += 1;
        }
        for c in counts {
            assert!((8_000..12_000).contains(&c), "uneven spread: {c}");
        }
    }

    #[test]
    fn every_group_has_a_worker_in_range() {
        for peers in [1, 2, 3, 7, 16] {
            for g in 0..KEY_GROUPS {
                assert!(KeyGroup(g).worker(peers) < peers);
            }
        }
    }
}
