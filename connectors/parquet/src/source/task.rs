//! The read task: one worker's splits, opened ahead, decoded into typed rows.

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Int32Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, FieldRef, Schema, TimeUnit};
use futures::StreamExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::async_reader::{ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder};
use riffle_engine::{Batch, Data, Elements, EventTime, PaneInfo, Window};
use tokio::sync::mpsc;

use crate::columns::ArrowRecords;
use crate::dataset::{DataFile, Dataset, ObjectReader, Split, millis_scale};
use crate::error::{Error, Result};

use super::*;

pub(super) enum Msg {
    /// Rows of the current split, and how many rows of its row group are behind them
    /// (those the filters dropped included): where the split resumes once they are
    /// returned.
    Rows(Batch, u64),
    SplitDone,
    Failed(Error),
    End,
}

/// A row group being read: its stream and the batch decoded next.
pub(super) struct OpenSplit {
    file: usize,
    row_group: usize,
    /// Rows of the row group skipped at the start (returned before a checkpoint).
    skip: usize,
    stream: ParquetRecordBatchStream<ObjectReader>,
    next: Option<RecordBatch>,
}

/// Reads one worker's splits in order, `prefetch` row groups at a time, and sends their
/// rows; runs on the I/O runtime.
pub(super) struct ReadTask<T> {
    pub(super) dataset: Arc<Dataset>,
    pub(super) store: Arc<dyn object_store::ObjectStore>,
    pub(super) config: Arc<ReadConfig>,
    pub(super) fields: Option<Arc<Vec<FieldRef>>>,
    pub(super) step: String,
    pub(super) _row: PhantomData<fn() -> T>,
}

impl<T: Data> ReadTask<T> {
    /// Reads `splits` in order, each past the rows of its row group given with it.
    pub(super) async fn run(self, splits: Vec<(Split, usize)>, tx: mpsc::Sender<Msg>) {
        let this = Arc::new(self);
        // Up to `prefetch` splits are opened ahead, each in a task of its own so its I/O
        // goes on while the current split is decoded; a split is decoded 1024 rows at a
        // time as the reader takes them, so what is held is the compressed row groups
        // in flight and a few decoded batches, not whole decoded row groups.
        let mut opened = futures::stream::iter(splits)
            .map(|(s, skip)| tokio::spawn(this.clone().open_split(s, skip)))
            .buffered(this.config.prefetch);
        while let Some(joined) = opened.next().await {
            let result = joined.unwrap_or_else(|e| Err(Error::Config(format!("a Parquet read task failed: {e}"))));
            if let Err(e) = this.drain(result, &tx).await {
                if let Some(e) = e {
                    let _ = tx.send(Msg::Failed(e)).await;
                }
                return; // the reader is gone (the job failed), or this split failed
            }
        }
        let _ = tx.send(Msg::End).await;
        tracing::debug!("{}: read task done", this.step);
    }

    /// Sends the rows of one opened split, then `SplitDone`. `Err(None)`: the reader is gone.
    async fn drain(&self, opened: Result<OpenSplit>, tx: &mpsc::Sender<Msg>) -> Result<(), Option<Error>> {
        let OpenSplit { file, row_group, skip, mut stream, mut next } = opened.map_err(Some)?;
        let file = &self.dataset.files[file];
        // Rows of the row group before this batch, for messages that name a row and for
        // the reader's position.
        let mut row = skip;
        while let Some(rb) = next {
            let read = rb.num_rows();
            let (rb, kept) = self.filter(file, rb).map_err(Some)?;
            // Where the batch's rows are in the row group.
            let place = |i: usize| row + kept.as_ref().map_or(i, |k| k[i]);
            if rb.num_rows() > 0 {
                let batch = match self.config.dead_letters {
                    true => self.to_decoded(file, rb, row_group, &place),
                    false => self.to_elements(file, rb, row_group, &place),
                }
                .map_err(Some)?;
                tx.send(Msg::Rows(batch, (row + read) as u64)).await.map_err(|_| None)?;
            }
            row += read;
            next = stream.next().await.transpose().map_err(|e| Some(Error::parquet(&file.url, e)))?;
        }
        tx.send(Msg::SplitDone).await.map_err(|_| None)
    }

    /// Starts reading one row group past its first `skip` rows: fetches its column chunks
    /// and decodes the first batch.
    async fn open_split(self: Arc<Self>, split: Split, skip: usize) -> Result<OpenSplit> {
        let file = &self.dataset.files[split.file];
        let schema = file.meta.schema();
        let mut wanted: BTreeSet<&str> = BTreeSet::new();
        match &self.fields {
            Some(fields) => wanted.extend(fields.iter().map(|f| f.name().as_str())),
            None => wanted.extend(schema.fields().iter().map(|f| f.name().as_str())),
        }
        wanted.extend(self.config.time_column.as_deref());
        wanted.extend(self.config.predicates.iter().map(|p| p.column()));
        let roots: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| wanted.contains(f.name().as_str()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(file.meta.parquet_schema(), roots);
        let reader = ObjectReader { store: self.store.clone(), path: file.path.clone(), size: file.size };
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, file.meta.clone())
            .with_row_groups(vec![split.row_group])
            .with_projection(mask)
            .with_batch_size(ROWS_PER_BATCH);
        if skip > 0 {
            // No row filter is pushed into the reader, so the offset counts the row
            // group's rows, as the position does.
            builder = builder.with_offset(skip);
        }
        let mut stream = builder.build().map_err(|e| Error::parquet(&file.url, e))?;
        let next = stream.next().await.transpose().map_err(|e| Error::parquet(&file.url, e))?;
        Ok(OpenSplit { file: split.file, row_group: split.row_group, skip, stream, next })
    }

    /// Drops rows outside the time range or failing a predicate.
    /// The rows that pass the read's filters and time range, and where each was in `rb`
    /// (`None`: no filter, every row).
    fn filter(&self, file: &DataFile, rb: RecordBatch) -> Result<(RecordBatch, Option<Vec<usize>>)> {
        let mut masks = Vec::new();
        if let Some((start, end)) = self.config.range {
            let ts = self.timestamps(file, &rb)?;
            masks.push(ts.iter().map(|t| Some(*t >= start && *t < end)).collect::<arrow_array::BooleanArray>());
        }
        for p in &self.config.predicates {
            let col = rb.column_by_name(p.column()).expect("projected predicate column");
            masks.push(p.mask(col.as_ref()).map_err(|m| Error::Config(format!("{}: {m}", file.url)))?);
        }
        let Some(mut mask) = masks.pop() else { return Ok((rb, None)) };
        for m in masks {
            mask = arrow_and(&mask, &m);
        }
        let kept = (0..mask.len()).filter(|&i| mask.is_valid(i) && mask.value(i)).collect();
        let rb = arrow_select::filter::filter_record_batch(&rb, &mask)
            .map_err(|e| Error::Convert { url: file.url.clone(), message: e.to_string() })?;
        Ok((rb, Some(kept)))
    }

    /// The event time of each row, from the timestamp column.
    fn timestamps(&self, file: &DataFile, rb: &RecordBatch) -> Result<Vec<EventTime>> {
        let Some(name) = &self.config.time_column else {
            return Ok(vec![EventTime::MIN; rb.num_rows()]);
        };
        let col = rb.column_by_name(name).expect("projected timestamp column");
        let (mul, div) = millis_scale(col.data_type()).expect("checked at start");
        if col.null_count() > 0 {
            return Err(Error::Convert {
                url: file.url.clone(),
                message: format!("timestamp column {name:?} has a null; every row needs an event time"),
            });
        }
        let ms = |v: i64| EventTime::from_millis(v.saturating_mul(mul).div_euclid(div));
        Ok(match col.data_type() {
            DataType::Timestamp(TimeUnit::Second, _) => {
                col.as_primitive::<TimestampSecondType>().values().iter().map(|v| ms(*v)).collect()
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                col.as_primitive::<TimestampMillisecondType>().values().iter().map(|v| ms(*v)).collect()
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                col.as_primitive::<TimestampMicrosecondType>().values().iter().map(|v| ms(*v)).collect()
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                col.as_primitive::<TimestampNanosecondType>().values().iter().map(|v| ms(*v)).collect()
            }
            DataType::Int64 => col.as_primitive::<Int64Type>().values().iter().map(|v| ms(*v)).collect(),
            DataType::Date64 => {
                col.as_primitive::<arrow_array::types::Date64Type>().values().iter().map(|v| ms(*v)).collect()
            }
            DataType::Date32 => col.as_primitive::<Date32Type>().values().iter().map(|v| ms(i64::from(*v))).collect(),
            DataType::Int32 => col.as_primitive::<Int32Type>().values().iter().map(|v| ms(i64::from(*v))).collect(),
            other => unreachable!("timestamp type {other} passed the check"),
        })
    }

    /// Converts a record batch into a Riffle batch of rows, each at its event time.
    /// The rows of `rb`, decoded into `T`; `place` says where row `i` of `rb` is in row
    /// group `row_group`, for the message when a row does not decode.
    fn to_elements(
        &self,
        file: &DataFile,
        rb: RecordBatch,
        row_group: usize,
        place: &dyn Fn(usize) -> usize,
    ) -> Result<Batch> {
        let times = self.timestamps(file, &rb)?;
        let rb = self.with_partitions(file, rb)?;
        if std::any::TypeId::of::<T>() == std::any::TypeId::of::<ArrowRecords>() {
            // Columns wanted: the batch is one element, at its earliest event time (no
            // earlier than the watermark, which is at most the split's minimum).
            let t = times.iter().min().copied().unwrap_or(EventTime::MIN);
            return Ok(Batch::new(Elements::uniform(vec![ArrowRecords(rb)], t, Window::Global, PaneInfo::NO_FIRING)));
        }
        let rows: Vec<T> = serde_arrow::from_record_batch(&rb).map_err(|e| {
            let message = match self.first_null_in_required_column(&rb) {
                Some((column, i)) => format!(
                    "reading rows: row group {row_group}, row {} has a null in column {column:?}, which the row \
                     type {} requires (make that field an Option to read nulls) ({e})",
                    place(i),
                    std::any::type_name::<T>()
                ),
                None => format!("reading rows: row group {row_group}: {e}"),
            };
            Error::Convert { url: file.url.clone(), message }
        })?;
        Ok(Batch::new(Elements::with_timestamps(rows, times, Window::Global, PaneInfo::NO_FIRING)))
    }

    /// Like `to_elements`, for a read with a dead-letter output: rows that do not decode
    /// become [`BadRow`]s (the batch is decoded whole, and row by row only when that fails).
    fn to_decoded(
        &self,
        file: &DataFile,
        rb: RecordBatch,
        row_group: usize,
        place: &dyn Fn(usize) -> usize,
    ) -> Result<Batch> {
        let times = self.timestamps(file, &rb)?;
        let rb = self.with_partitions(file, rb)?;
        let mut out = Elements::<Decoded<T>>::with_capacity(rb.num_rows());
        if let Ok(rows) = serde_arrow::from_record_batch::<Vec<T>>(&rb) {
            for (r, t) in rows.into_iter().zip(times) {
                out.push(Decoded::Row(r), t, Window::Global, PaneInfo::NO_FIRING);
            }
            return Ok(Batch::new(out));
        }
        for (i, t) in times.into_iter().enumerate() {
            let one = rb.slice(i, 1);
            let d = match serde_arrow::from_record_batch::<Vec<T>>(&one).map(|mut v| v.pop()) {
                Ok(Some(r)) => Decoded::Row(r),
                Ok(None) | Err(_) => {
                    let why = match self.first_null_in_required_column(&one) {
                        Some((column, _)) => format!(
                            "a null in column {column:?}, which the row type {} requires",
                            std::any::type_name::<T>()
                        ),
                        None => match serde_arrow::from_record_batch::<Vec<T>>(&one) {
                            Err(e) => e.to_string(),
                            Ok(_) => "no row".into(),
                        },
                    };
                    Decoded::Bad(BadRow { file: file.url.clone(), row_group, row: place(i), reason: why })
                }
            };
            out.push(d, t, Window::Global, PaneInfo::NO_FIRING);
        }
        Ok(Batch::new(out))
    }

    /// The first row of `rb` with a null where the row type's field cannot hold one:
    /// the column, and the row's index in the batch.
    fn first_null_in_required_column(&self, rb: &RecordBatch) -> Option<(String, usize)> {
        let fields = self.fields.as_ref()?;
        fields
            .iter()
            .filter(|f| !f.is_nullable())
            .filter_map(|f| {
                let column = rb.column_by_name(f.name())?;
                let nulls = column.logical_nulls()?;
                let i = (0..column.len()).find(|&i| nulls.is_null(i))?;
                Some((f.name().clone(), i))
            })
            .min_by_key(|(_, i)| *i)
    }

    /// Adds the partition values the row type asks for as constant columns.
    fn with_partitions(&self, file: &DataFile, rb: RecordBatch) -> Result<RecordBatch> {
        if file.partitions.is_empty() {
            return Ok(rb);
        }
        let n = rb.num_rows();
        let (mut fields, mut columns): (Vec<FieldRef>, Vec<ArrayRef>) =
            (rb.schema().fields().iter().cloned().collect(), rb.columns().to_vec());
        for (k, v) in &file.partitions {
            if rb.column_by_name(k).is_some() {
                continue;
            }
            let wanted = match &self.fields {
                Some(fs) => fs.iter().find(|f| f.name() == k).map(|f| f.data_type().clone()),
                None => Some(DataType::Utf8),
            };
            let array: ArrayRef = match wanted {
                None => continue,
                Some(t) if matches!(t, DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64) => {
                    let x: i64 = v.parse().map_err(|_| Error::SchemaMismatch {
                        url: file.url.clone(),
                        column: k.clone(),
                        file_type: format!("partition value {v:?}"),
                        field_type: t.to_string(),
                        row_type: std::any::type_name::<T>().into(),
                    })?;
                    Arc::new(Int64Array::from(vec![x; n]))
                }
                Some(_) => Arc::new(StringArray::from(vec![v.as_str(); n])),
            };
            fields.push(Arc::new(Field::new(k, array.data_type().clone(), false)));
            columns.push(array);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| Error::Convert { url: file.url.clone(), message: e.to_string() })
    }
}

fn arrow_and(a: &arrow_array::BooleanArray, b: &arrow_array::BooleanArray) -> arrow_array::BooleanArray {
    a.iter().zip(b.iter()).map(|(x, y)| Some(x.unwrap_or(false) && y.unwrap_or(false))).collect()
}
