//! The benchmark's records: a key and a payload, one type per size, and their keys.

use std::sync::Arc;

use rand::SeedableRng;
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};

/// What every benchmark record offers the pipelines.
pub trait Record: riffle_engine::Data + bytemuck::Pod {
    /// Its size in bytes.
    const SIZE: usize;
    /// A record with this key, its payload derived from `i`.
    fn make(key: u64, i: u64) -> Self;
    /// Its key.
    fn key(&self) -> u64;
    /// A value to aggregate.
    fn value(&self) -> u64;
}

macro_rules! record {
    ($name:ident, $bytes:literal) => {
        #[doc = concat!("A ", stringify!($bytes), "-byte record.")]
        #[derive(Clone, Copy, Debug, Serialize, Deserialize, bytemuck::Pod, bytemuck::Zeroable)]
        #[repr(C)]
        pub struct $name {
            key: u64,
            #[serde(with = "serde_big_array::BigArray")]
            payload: [u64; ($bytes - 8) / 8],
        }

        impl Record for $name {
            const SIZE: usize = $bytes;
            #[inline]
            fn make(key: u64, i: u64) -> Self {
                // High-entropy words, so no codec can win by compressing the benchmark's
                // data (bitcode bit-packs small integers); rotations keep it cheap.
                let x = splitmix(i);
                let mut payload = [0u64; ($bytes - 8) / 8];
                for (j, p) in payload.iter_mut().enumerate() {
                    *p = x.rotate_left(j as u32);
                }
                payload[0] = i;
                $name { key, payload }
            }
            #[inline]
            fn key(&self) -> u64 {
                self.key
            }
            #[inline]
            fn value(&self) -> u64 {
                self.payload[0]
            }
        }
    };
}

record!(Rec16, 16);
record!(Rec64, 64);
record!(Rec72, 72);
record!(Rec256, 256);
record!(Rec1K, 1024);
record!(Rec4K, 4096);

/// The record sizes the benchmark knows.
pub const SIZES: [usize; 6] = [16, 64, 72, 256, 1024, 4096];

/// splitmix64: a cheap, well-mixed function of the record index.
#[inline]
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// How keys are distributed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Keys {
    /// Every key equally likely.
    Uniform,
    /// Key `k` (1-based rank) with probability proportional to `1 / k^s`.
    Zipf(f64),
}

impl std::fmt::Display for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keys::Uniform => write!(f, "uniform"),
            Keys::Zipf(s) => write!(f, "zipf{s}"),
        }
    }
}

impl std::str::FromStr for Keys {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "uniform" {
            return Ok(Keys::Uniform);
        }
        s.strip_prefix("zipf")
            .and_then(|x| x.parse::<f64>().ok())
            .filter(|x| *x > 0.0)
            .map(Keys::Zipf)
            .ok_or_else(|| format!("unknown key distribution {s:?}: use uniform or zipfS (e.g. zipf1.2)"))
    }
}

/// Gives record `i` its key: uniform by hashing, Zipf by a table sampled once with a
/// fixed seed, so every process and engine sees the same keys.
#[derive(Clone)]
pub struct KeyGen {
    count: u64,
    table: Option<Arc<Vec<u64>>>,
}

const TABLE: usize = 1 << 16;

impl KeyGen {
    /// Keys from `0..count` distributed as `keys`.
    pub fn new(keys: Keys, count: u64) -> Self {
        let table = match keys {
            Keys::Uniform => None,
            Keys::Zipf(s) => {
                let zipf = Zipf::new(count as f64, s).expect("valid zipf parameters");
                let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
                Some(Arc::new((0..TABLE).map(|_| zipf.sample(&mut rng) as u64 - 1).collect()))
            }
        };
        KeyGen { count, table }
    }

    /// The key of record `i`.
    #[inline]
    pub fn key(&self, i: u64) -> u64 {
        let h = splitmix(i);
        match &self.table {
            None => h % self.count,
            Some(t) => t[(h as usize) & (TABLE - 1)],
        }
    }
}
