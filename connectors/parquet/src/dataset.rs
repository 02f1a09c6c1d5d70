//! A dataset: the files a location names, their footers, and their row groups as splits.

use std::sync::Arc;

use arrow_schema::{DataType, TimeUnit};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader, RowGroupMetaData};
use parquet::file::statistics::Statistics;

use crate::error::{Error, Result};
use crate::location::Location;

/// Footers read at once while listing a dataset.
const FOOTERS_IN_FLIGHT: usize = 8;

/// One Parquet file of a dataset.
pub(crate) struct DataFile {
    pub path: Path,
    pub url: String,
    pub size: u64,
    /// Hive-style partition values from the directories above it.
    pub partitions: Vec<(String, String)>,
    pub meta: ArrowReaderMetadata,
}

/// The files a location names, sorted by path, with their footers.
pub(crate) struct Dataset {
    pub files: Vec<DataFile>,
}

/// One row group: the unit of parallelism.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Split {
    /// Index into [`Dataset::files`].
    pub file: usize,
    pub row_group: usize,
    /// Compressed bytes, what balancing is by.
    pub bytes: u64,
    pub rows: u64,
    /// Event-time bounds in ms from the timestamp column's statistics.
    pub time: Option<(i64, i64)>,
}

impl Dataset {
    /// Lists the location and reads every footer.
    pub async fn load(location: &Location, store: Arc<dyn ObjectStore>) -> Result<Dataset> {
        let objects = location.list(store.as_ref()).await?;
        if objects.is_empty() {
            return Err(Error::NotFound { url: location.url.clone() });
        }
        let files = futures::stream::iter(objects)
            .map(|o| {
                let store = store.clone();
                async move {
                    let url = location.url_of(&o.location);
                    let mut reader = ObjectReader { store, path: o.location.clone(), size: o.size };
                    let meta = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
                        .await
                        .map_err(|e| Error::parquet(&url, e))?;
                    Ok::<_, Error>(DataFile {
                        partitions: location.partitions(&o.location),
                        path: o.location,
                        url,
                        size: o.size,
                        meta,
                    })
                }
            })
            .buffered(FOOTERS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(Dataset { files })
    }

    /// Every row group of every file, in (file, row group) order, with the event-time
    /// bounds of `time_column` where its statistics give them.
    pub fn splits(&self, time_column: Option<&str>) -> Vec<Split> {
        let mut out = Vec::new();
        for (f, file) in self.files.iter().enumerate() {
            let md = file.meta.metadata();
            let time = time_column.and_then(|c| leaf_index(file, c).map(|i| (i, arrow_type(file, c))));
            for (g, rg) in md.row_groups().iter().enumerate() {
                out.push(Split {
                    file: f,
                    row_group: g,
                    bytes: rg.compressed_size().max(0) as u64,
                    rows: rg.num_rows().max(0) as u64,
                    time: time.as_ref().and_then(|(i, t)| time_bounds(rg, *i, t.as_ref()?)),
                });
            }
        }
        out
    }
}

/// The leaf column index of the top-level column `name`, when it is a primitive.
pub(crate) fn leaf_index(file: &DataFile, name: &str) -> Option<usize> {
    file.meta.parquet_schema().columns().iter().position(|c| c.path().parts() == [name])
}

/// The Arrow type of the top-level column `name`.
pub(crate) fn arrow_type(file: &DataFile, name: &str) -> Option<DataType> {
    file.meta.schema().field_with_name(name).ok().map(|f| f.data_type().clone())
}

/// The statistics of `leaf` in row group `rg`.
pub(crate) fn stats(rg: &RowGroupMetaData, leaf: usize) -> Option<&Statistics> {
    rg.column(leaf).statistics()
}

/// Milliseconds per unit of a timestamp column: how event time is read from it.
/// `None` for a type that cannot be an event time.
pub(crate) fn millis_scale(t: &DataType) -> Option<(i64, i64)> {
    // (multiply, divide)
    Some(match t {
        DataType::Timestamp(TimeUnit::Second, _) => (1000, 1),
        DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Int64 | DataType::Date64 => (1, 1),
        DataType::Timestamp(TimeUnit::Microsecond, _) => (1, 1000),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => (1, 1_000_000),
        DataType::Date32 | DataType::Int32 => (86_400_000, 1),
        _ => return None,
    })
}

fn time_bounds(rg: &RowGroupMetaData, leaf: usize, t: &DataType) -> Option<(i64, i64)> {
    let (mul, div) = millis_scale(t)?;
    let (min, max) = match stats(rg, leaf)? {
        Statistics::Int64(s) => (*s.min_opt()?, *s.max_opt()?),
        Statistics::Int32(s) => (i64::from(*s.min_opt()?), i64::from(*s.max_opt()?)),
        _ => return None,
    };
    let lo = min.saturating_mul(mul).div_euclid(div);
    let hi = max.saturating_mul(mul).saturating_add(div - 1).div_euclid(div);
    Some((lo, hi))
}

/// This worker's share of `splits`, dealt the same way on every process.
///
/// Batch order: largest first, each to the least-loaded worker (ties to the lower
/// index), so workers get about the same bytes; then each worker reads its share in
/// (file, row group) order. Time order (backfill): splits are dealt in order of their
/// earliest event time, each to the least-loaded worker, so every worker's share spans
/// the whole time range evenly and all workers move through event time together; each
/// reads its share in that order.
pub(crate) fn deal(mut splits: Vec<Split>, peers: usize, worker: usize, by_time: bool) -> Vec<Split> {
    let key = |s: &Split| (s.file, s.row_group);
    if by_time {
        splits.sort_by_key(|s| (s.time.map_or(i64::MIN, |t| t.0), key(s)));
    } else {
        splits.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| key(a).cmp(&key(b))));
    }
    let mut load = vec![0u64; peers.max(1)];
    let mut mine = Vec::new();
    for s in splits {
        let w = (0..load.len()).min_by_key(|w| (load[*w], *w)).expect("at least one worker");
        load[w] += s.bytes.max(1);
        if w == worker {
            mine.push(s);
        }
    }
    if !by_time {
        mine.sort_by_key(key);
    }
    mine
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(file: usize, bytes: u64, t: i64) -> Split {
        Split { file, row_group: 0, bytes, rows: 1, time: Some((t, t + 10)) }
    }

    #[test]
    fn dealing_covers_every_split_once_and_balances_bytes() {
        let splits: Vec<Split> = (0..23).map(|i| split(i, 100 + (i as u64 * 37) % 300, (i as i64 * 7) % 50)).collect();
        for by_time in [false, true] {
            for peers in [1, 2, 3, 4] {
                let shares: Vec<Vec<Split>> = (0..peers).map(|w| deal(splits.clone(), peers, w, by_time)).collect();
                let mut all: Vec<usize> = shares.iter().flatten().map(|s| s.file).collect();
                all.sort();
                assert_eq!(all, (0..23).collect::<Vec<_>>(), "peers {peers}");
                let bytes: Vec<u64> = shares.iter().map(|s| s.iter().map(|x| x.bytes).sum()).collect();
                let (lo, hi) = (bytes.iter().min().unwrap(), bytes.iter().max().unwrap());
                assert!(hi - lo <= 400, "unbalanced {bytes:?}");
                if by_time {
                    for share in &shares {
                        assert!(share.windows(2).all(|w| w[0].time <= w[1].time), "time order");
                    }
                }
            }
        }
    }
}

/// Parquet's async reader over one object: ranged GETs through object_store.
#[derive(Clone)]
pub(crate) struct ObjectReader {
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
    pub size: u64,
}

fn external(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl parquet::arrow::async_reader::AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { self.store.get_range(&self.path, range).await.map_err(external) }.boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move { self.store.get_ranges(&self.path, &ranges).await.map_err(external) }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata =
                ParquetMetaDataReader::new().with_arrow_reader_options(options).load_and_finish(self, size).await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}
