//! Stable key routing: key -> hash -> key group -> worker.
//!
//! The hash must be identical on every process and in every run (a shuffle that hashes a
//! key differently on two processes silently splits its group), and across builds:
//! checkpoints keep state per key group, so a toolchain upgrade must not reroute keys.
//! `std`'s `Hash` impls are documented as not stable across compiler versions or
//! platforms (how a `str`, a tuple or a `usize` feeds the hasher may change), so Riffle
//! does not hash through them. A key is hashed as **XXH3-64 (seed 0) of its bincode
//! encoding**: bincode 1's `serialize` format, little-endian fixed-width integers and u64
//! length prefixes, which serde derives make a function of the key's value alone (a
//! `String` and a `&str` of the same text encode, and route, the same). Both are
//! specified formats, pinned by the test vectors below. Keys map to one of [`KEY_GROUPS`]
//! groups first and groups to workers by contiguous ranges (Flink's max-parallelism):
//! state snapshotted per key group restores at any worker count.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

/// How many key groups exist; the most workers a job's keyed state can be spread over.
pub const KEY_GROUPS: u32 = 4096;

/// A key group: the unit in which keyed state is routed, and later snapshotted.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct KeyGroup(pub u32);

thread_local! {
    /// The encoding buffer, reused: no allocation per key on the shuffle's hot path.
    static ENCODED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The stable 64-bit hash of a key: XXH3-64 of its bincode encoding (see the module doc).
///
/// # Panics
/// If the key cannot be encoded (a `Serialize` impl that fails): keys must encode to
/// cross processes anyway.
#[inline]
pub fn stable_hash<K: Serialize + ?Sized>(key: &K) -> u64 {
    // Most keys (integers, short strings, small tuples) encode into a buffer on the stack;
    // only a longer one takes the thread-local buffer, whose access and borrow cost more
    // than encoding and hashing a small key.
    let mut small = StackBuf { bytes: [0; ON_STACK], len: 0 };
    if bincode::serialize_into(&mut small, key).is_ok() {
        return xxhash_rust::xxh3::xxh3_64(&small.bytes[..small.len]);
    }
    let hash = |buf: &mut Vec<u8>| {
        buf.clear();
        bincode::serialize_into(&mut *buf, key)
            .unwrap_or_else(|e| panic!("a key of type {} cannot be encoded: {e}", std::any::type_name::<K>()));
        xxhash_rust::xxh3::xxh3_64(buf)
    };
    // A key whose encoding hashes another key (re-entrance) gets a buffer of its own.
    ENCODED.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => hash(&mut buf),
        Err(_) => hash(&mut Vec::new()),
    })
}

/// Bytes of a key's encoding that [`stable_hash`] keeps on the stack.
const ON_STACK: usize = 128;

/// A fixed buffer that refuses what does not fit (the key then takes the heap path).
struct StackBuf {
    bytes: [u8; ON_STACK],
    len: usize,
}

impl std::io::Write for StackBuf {
    #[inline]
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let end = self.len + data.len();
        if end > ON_STACK {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.bytes[self.len..end].copy_from_slice(data);
        self.len = end;
        Ok(data.len())
    }
    #[inline]
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.write(data).map(drop)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl KeyGroup {
    /// The key group of `key`.
    #[inline]
    pub fn of<K: Serialize + ?Sized>(key: &K) -> KeyGroup {
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

    const PINNED_U64: u64 = 15395265915043915720;
    const PINNED_STR: u64 = 13669649145851414495;
    const PINNED_GROUP: u32 = 2425;
    use xxhash_rust::xxh3::xxh3_64;

    #[derive(Serialize)]
    enum Shape {
        Dot,
        Square(u16),
    }

    #[derive(Serialize)]
    struct Account {
        region: u8,
        id: String,
    }

    #[test]
    fn the_hash_is_xxh3_of_the_documented_encoding() {
        // The encoding, written out by hand: little-endian fixed-width integers, u64
        // length prefixes, u32 enum variant indexes, fields in order.
        // XXH3-64 itself: the reference implementation's value for no input (seed 0).
        assert_eq!(xxh3_64(b""), 0x2D06_8005_38D3_94C2);
        let mut riffle = 6u64.to_le_bytes().to_vec();
        riffle.extend_from_slice(b"riffle");
        assert_eq!(stable_hash(&42u64), xxh3_64(&42u64.to_le_bytes()));
        assert_eq!(stable_hash(&-7i32), xxh3_64(&(-7i32).to_le_bytes()));
        assert_eq!(stable_hash("riffle"), xxh3_64(&riffle));
        assert_eq!(stable_hash(&"riffle".to_string()), xxh3_64(&riffle));
        let tuple = [riffle.clone(), 9u64.to_le_bytes().to_vec()].concat();
        assert_eq!(stable_hash(&("riffle".to_string(), 9u64)), xxh3_64(&tuple));
        assert_eq!(stable_hash(&Shape::Dot), xxh3_64(&0u32.to_le_bytes()));
        assert_eq!(stable_hash(&Shape::Square(3)), xxh3_64(&[1, 0, 0, 0, 3, 0]));
        let account = [vec![2u8], riffle].concat();
        assert_eq!(stable_hash(&Account { region: 2, id: "riffle".into() }), xxh3_64(&account));
    }

    #[test]
    fn the_hash_is_pinned() {
        // Fixed values: if these change, state routed by key group (checkpoints, and a
        // cluster running two builds) is routed differently. Change them only on purpose,
        // with a migration for existing checkpoints.
        assert_eq!(stable_hash(&42u64), PINNED_U64);
        assert_eq!(stable_hash("riffle"), PINNED_STR);
        assert_eq!(KeyGroup::of("riffle"), KeyGroup(PINNED_GROUP));
        assert_ne!(stable_hash(&("a", "b")), stable_hash(&("ab", "")));
    }

    #[test]
    fn keys_past_the_stack_buffer_hash_as_documented() {
        // Either side of the stack buffer's end: the heap path gives the same hash.
        for len in [ON_STACK - 9, ON_STACK - 8, ON_STACK - 7, ON_STACK, 5 * ON_STACK] {
            let text = "k".repeat(len);
            let encoded = [(len as u64).to_le_bytes().to_vec(), text.clone().into_bytes()].concat();
            assert_eq!(stable_hash(&text), xxh3_64(&encoded), "{len} bytes");
        }
    }

    #[test]
    fn a_string_and_a_str_route_alike() {
        for text in ["", "a", "the cat", "ünïcödé"] {
            assert_eq!(KeyGroup::of(text), KeyGroup::of(&text.to_string()));
        }
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
