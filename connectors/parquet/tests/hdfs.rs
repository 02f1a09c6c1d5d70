//! HDFS without a NameNode: what can be tested here (see docs/connectors.md). With the
//! `hdfs` feature, an hdfs:// location builds a store and an unreachable NameNode is a
//! clear error at start naming the location, within the start timeout (the HDFS client
//! itself retries a refused connection for minutes); without it, the location is refused at
//! start, naming the feature.

use riffle_engine::Pipeline;
use riffle_parquet::{ReadParquet, StoreOptions};
use riffle_timely::RunOptions;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Row {
    x: i64,
}

#[test]
fn an_hdfs_location_without_a_namenode_fails_at_start_naming_it() {
    // Port 9 on loopback: nothing listens there, so the connection is refused at once.
    let url = "hdfs://127.0.0.1:9/data/events";
    let p = Pipeline::new();
    let opts = StoreOptions::new().start_timeout(std::time::Duration::from_secs(3));
    riffle_connectors::memory::collect(&ReadParquet::<Row>::from(url).options(opts).read(&p));
    let started = std::time::Instant::now();
    let e = riffle_timely::run(&p, &RunOptions::threads(1)).unwrap_err().to_string();
    assert!(e.contains(url), "{e}");
    if cfg!(feature = "hdfs") {
        assert!(!e.contains("cargo feature"), "{e}");
    } else {
        assert!(e.contains("`hdfs` cargo feature"), "{e}");
    }
    assert!(started.elapsed().as_secs() < 60, "took {:?}", started.elapsed());
}
