//! The cross-process codec in isolation: one batch of 1024 records of 72 bytes, through
//! the path timely takes (length, bytes, then decode on the other side), for Riffle's
//! serde codec (bitcode), its pod codec, and timely's own `Vec<T>` bincode path.
//!
//! ```text
//! cargo bench -p riffle-benches --bench codec
//! ```

use criterion::{Criterion, Throughput, criterion_main};
use riffle_engine::{Batch, Elements, EventTime, PaneInfo, Window};

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Serde72 {
    key: u64,
    payload: [u64; 8],
}

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Pod72 {
    key: u64,
    payload: [u64; 8],
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn words(i: u64) -> (u64, [u64; 8]) {
    let mut p = [0u64; 8];
    for (j, w) in p.iter_mut().enumerate() {
        *w = splitmix(i * 8 + j as u64);
    }
    (splitmix(i) % 100_000, p)
}

const N: u64 = 1024;

fn round_trip<T: riffle_engine::Data>(values: Vec<T>) -> usize {
    let batch = Batch::new(Elements::uniform(values, EventTime::MIN, Window::Global, PaneInfo::NO_FIRING));
    // What timely does with a `Vec<Batch>` container: size, then bytes, then decode.
    let container = vec![batch];
    let len = bincode::serialized_size(&container).unwrap() as usize;
    let mut bytes = Vec::with_capacity(len);
    bincode::serialize_into(&mut bytes, &container).unwrap();
    let back: Vec<Batch> = bincode::deserialize(&bytes).unwrap();
    back.into_iter().map(|b| b.into_elements::<T>().len()).sum()
}

fn codecs(c: &mut Criterion) {
    riffle_engine::codec::register_pod::<Pod72>();
    let serde: Vec<Serde72> = (0..N).map(words).map(|(key, payload)| Serde72 { key, payload }).collect();
    let pod: Vec<Pod72> = (0..N).map(words).map(|(key, payload)| Pod72 { key, payload }).collect();
    let mut g = c.benchmark_group("codec/72B x 1024");
    g.throughput(Throughput::Elements(N));
    g.bench_function("timely Vec<T> bincode", |b| {
        b.iter(|| {
            let len = bincode::serialized_size(&serde).unwrap() as usize;
            let mut bytes = Vec::with_capacity(len);
            bincode::serialize_into(&mut bytes, &serde).unwrap();
            bincode::deserialize::<Vec<Serde72>>(&bytes).unwrap().len()
        })
    });
    g.bench_function("riffle serde (bitcode)", |b| b.iter(|| round_trip(serde.clone())));
    g.bench_function("riffle pod", |b| b.iter(|| round_trip(pod.clone())));
    g.bench_function("clone only (floor)", |b| b.iter(|| pod.clone().len()));
    g.finish();
}

// criterion's macros generate undocumented items.
#[allow(missing_docs)]
mod harness {
    criterion::criterion_group!(benches, super::codecs);
}
criterion_main!(harness::benches);
