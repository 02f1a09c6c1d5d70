//! The reader a worker polls: batches from its read task, its watermark and progress.

use riffle_engine::Watermark;
use riffle_engine::runtime::{SourcePoll, SourceProgress, SourceReader};
use tokio::sync::mpsc;

use super::*;

/// One worker's reader: takes what its I/O task decoded.
pub(super) struct ParquetReader {
    /// In backfill mode, how far (ms) this reader may run ahead of the sinks' watermark.
    pub(super) read_ahead: Option<i64>,
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) rx: mpsc::Receiver<Msg>,
    /// The earliest event time of each of this worker's splits, in reading order.
    pub(super) starts: Vec<Watermark>,
    /// The first split not yet completely emitted.
    pub(super) next: usize,
    /// The compressed size of each of this worker's splits, in reading order.
    pub(super) sizes: Vec<u64>,
    /// Splits and bytes read, of this worker's.
    pub(super) progress: SourceProgress,
    pub(super) backfill: bool,
    pub(super) ended: bool,
    /// Each of this worker's splits not finished, in reading order.
    pub(super) ids: Vec<SplitId>,
    /// Per split of `ids`, the rows of its row group behind the rows returned by `poll`
    /// (not those the read task has sent ahead).
    pub(super) returned: Vec<u64>,
    /// Splits finished before the checkpoint this reader was restored from, by any worker.
    pub(super) finished: Arc<std::collections::BTreeSet<SplitId>>,
}

impl SourceReader for ParquetReader {
    fn poll(&mut self, _max_elements: usize) -> riffle_engine::Result<SourcePoll> {
        if self.ended {
            return Ok(SourcePoll::Done);
        }
        let msg = match self.rx.try_recv() {
            Ok(m) => m,
            Err(mpsc::error::TryRecvError::Empty) => {
                match self.rt.block_on(async { tokio::time::timeout(WAIT_FOR_DATA, self.rx.recv()).await }) {
                    Ok(Some(m)) => m,
                    Ok(None) => return Err(task_lost()),
                    Err(_) => return Ok(SourcePoll::Pending),
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => return Err(task_lost()),
        };
        Ok(match msg {
            // A reader reads one split at a time, and in backfill mode its watermark is
            // that split's earliest event time: the rows go out at their own split's
            // watermark, whichever worker was dealt it (docs/semantics.md).
            Msg::Rows(b, rows) => {
                if let Some(r) = self.returned.get_mut(self.next) {
                    *r = rows;
                }
                SourcePoll::SplitBatch(b, self.watermark())
            }
            Msg::SplitDone => {
                self.progress.units_done += 1;
                self.progress.bytes_done += self.sizes.get(self.next).copied().unwrap_or(0);
                self.next += 1;
                SourcePoll::Advanced
            }
            Msg::Failed(e) => return Err(e.into()),
            Msg::End => {
                self.ended = true;
                SourcePoll::Done
            }
        })
    }

    fn read_ahead_millis(&self) -> Option<i64> {
        self.read_ahead
    }

    fn progress(&self) -> Option<SourceProgress> {
        Some(self.progress)
    }

    /// This worker's position: row groups read and left of those it was dealt.
    fn split_gauges(&self) -> Vec<(&'static str, String, i64)> {
        let p = self.progress;
        let left = p.units_total.saturating_sub(p.units_done);
        vec![("row_groups_read", "dealt".into(), p.units_done as i64), ("row_groups_left", "dealt".into(), left as i64)]
    }

    fn position(&self) -> riffle_engine::Result<Vec<u8>> {
        let done = self.ids.iter().take(self.next);
        let finished = self.finished.iter().chain(done).cloned().collect();
        let begun = self.ids.iter().zip(&self.returned).skip(self.next).filter(|(_, rows)| **rows > 0);
        let returned = begun.map(|(id, rows)| (id.clone(), *rows)).collect();
        riffle_engine::position::encode(POSITION_VERSION, &ParquetPosition { finished, returned })
    }

    fn watermark(&self) -> Watermark {
        if self.backfill {
            // Splits are read in order of their earliest event time, so the earliest
            // event time still unread is that of the first split not yet done. A reader
            // with no split to read (none dealt, or all finished before the checkpoint it
            // resumed from) holds nothing back.
            self.starts.get(self.next).or(self.starts.last()).copied().unwrap_or(Watermark::MAX)
        } else {
            Watermark::MIN
        }
    }
}

fn task_lost() -> riffle_engine::Error {
    riffle_engine::Error::Internal("the Parquet read task ended without finishing (it panicked?)".into())
}
