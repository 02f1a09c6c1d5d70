//! A hybrid source: bounded history, then a live source, as one source (Flink's
//! `HybridSource`), with the watermark and the open windows carried across the seam.
//!
//! The seam is a timestamp `T`, and the rule is exact: the history contributes its
//! elements before `T`, the live source its elements at or after `T`, so an overlap between
//! the two (the files and the topic both holding a day) is never counted twice.
//!
//! Each worker reads its share of the history first. While it does, its watermark is the
//! history reader's, but never past `T` (the history may hold elements after `T`, which
//! it drops, and the live elements from `T` on must not arrive late). When its history
//! ends, the worker opens its share of the live source and its watermark becomes the live
//! reader's, but never below `T`: nothing before `T` comes from the live source. Workers
//! switch at their own pace; the job's watermark (the least over workers) passes `T` only
//! once every worker has read all its history, so a window that contains `T` gets both
//! parts and fires once, as if everything had come from one stream.

use std::sync::Arc;

use crate::batch::Batch;
use crate::element::{Data, Elements};
use crate::error::Result;
use crate::runtime::{Phase, SourceFn, SourcePoll, SourceProgress, SourceReader, StepContext};
use crate::time::{EventTime, Watermark};

/// Turns a history element into the live source's element type.
type Convert<H, L> = Arc<dyn Fn(H) -> L + Send + Sync>;

/// History of `H` elements, then a live source of `L` elements, switching at a
/// timestamp (see the module's documentation).
pub struct HybridSource<H, L> {
    history: Arc<dyn SourceFn>,
    live: Arc<dyn SourceFn>,
    switch_at: EventTime,
    convert: Convert<H, L>,
}

impl<H: Data, L: Data> HybridSource<H, L> {
    /// `history`'s elements before `switch_at` (as `convert` makes them), then `live`'s
    /// from `switch_at` on. `live` is opened on each worker when its history ends: where it
    /// starts reading is its own affair (a Kafka source starts at the offsets for a time
    /// safely before `switch_at`).
    pub fn new(
        history: Arc<dyn SourceFn>,
        live: Arc<dyn SourceFn>,
        switch_at: EventTime,
        convert: impl Fn(H) -> L + Send + Sync + 'static,
    ) -> Self {
        HybridSource { history, live, switch_at, convert: Arc::new(convert) }
    }
}

impl<H: Data, L: Data> HybridSource<H, L> {
    /// A reader at `ctx` over `history` (none: not opened yet), whose live reader opens
    /// from `saved_live`.
    fn reader(
        &self,
        ctx: &StepContext,
        history: Option<Box<dyn SourceReader>>,
        saved_live: Vec<Vec<u8>>,
    ) -> HybridReader<H, L> {
        HybridReader {
            history,
            live_source: self.live.clone(),
            live: None,
            ctx: ctx.clone(),
            switch_at: self.switch_at,
            convert: self.convert.clone(),
            history_progress: None,
            history_done: None,
            saved_live,
        }
    }
}

impl<H: Data, L: Data> SourceFn for HybridSource<H, L> {
    fn is_bounded(&self) -> bool {
        self.live.is_bounded()
    }

    fn check(&self) -> Result<()> {
        self.history.check()?;
        self.live.check()
    }

    fn open(&self, ctx: &StepContext) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(self.reader(ctx, Some(self.history.open(ctx)?), Vec::new())))
    }

    fn checkpoints(&self) -> bool {
        self.history.checkpoints() && self.live.checkpoints()
    }

    /// A worker goes straight to the live phase when its history share is known to be
    /// read: every old reader was live, or at the same worker count its own was. Any
    /// other worker reads what is left of its history share first (nothing, perhaps),
    /// with the watermark capped at the switch as before; so the job's watermark, the
    /// least over workers, is past the switch after the restore only if it was before.
    /// Either way the live reader opens from every saved live position, so that
    /// partitions an old worker had read live are not read again from the switch.
    fn open_from(&self, ctx: &StepContext, saved: &[Vec<u8>]) -> Result<Box<dyn SourceReader>> {
        let saved: Vec<HybridPosition> = crate::position::decode_all(&ctx.name, HYBRID_POSITION_VERSION, saved)?;
        let same_count = saved.len() == ctx.worker.peers;
        let live_here = |i: usize| saved.get(i).is_some_and(|p| p.phase == Phase::Live);
        let history_read = saved.iter().all(|p| p.phase == Phase::Live) || (same_count && live_here(ctx.worker.index));
        let history_saved: Vec<Vec<u8>> = saved.iter().map(|p| p.history.clone()).collect();
        let saved_live: Vec<Vec<u8>> = saved.iter().filter_map(|p| p.live.clone()).collect();
        let mut reader = self.reader(ctx, None, saved_live);
        if history_read {
            // What is left of the history here is nothing: its position, for the next
            // checkpoint, is the one it was restored from.
            let history = self.history.open_from(ctx, &history_saved)?;
            reader.history_progress = history.progress();
            reader.history_done = Some(history.position()?);
            reader.live = Some(reader.open_live()?);
        } else {
            reader.history = Some(self.history.open_from(ctx, &history_saved)?);
        }
        Ok(Box::new(reader))
    }
}

/// Format version of [`HybridPosition`].
const HYBRID_POSITION_VERSION: u8 = 1;

/// Where a hybrid reader was: its phase, its history reader's position (the final one,
/// once read: a restored worker must not read again a share another worker finished),
/// and its live reader's, once opened.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct HybridPosition {
    phase: Phase,
    history: Vec<u8>,
    live: Option<Vec<u8>>,
}

struct HybridReader<H, L> {
    /// The history reader, until it is done.
    history: Option<Box<dyn SourceReader>>,
    live_source: Arc<dyn SourceFn>,
    /// The live reader, once the history is done.
    live: Option<Box<dyn SourceReader>>,
    ctx: StepContext,
    switch_at: EventTime,
    convert: Convert<H, L>,
    /// What the history reader last said of its progress: the replay's figures stay on
    /// show once it is done.
    history_progress: Option<SourceProgress>,
    /// The history reader's last position, once it is done and dropped.
    history_done: Option<Vec<u8>>,
    /// The live readers' positions this reader was restored with: the live reader opens
    /// from them.
    saved_live: Vec<Vec<u8>>,
}

impl<H: Data, L: Data> HybridReader<H, L> {
    /// The history's elements before the switch, converted.
    fn before(&self, batch: Batch) -> Result<Batch> {
        let mut out = Elements::<L>::new();
        for wv in batch.try_into_elements::<H>()?.into_iter_windowed() {
            if wv.timestamp < self.switch_at {
                out.push((self.convert)(wv.value), wv.timestamp, wv.window, wv.pane);
            }
        }
        Ok(Batch::new(out))
    }

    /// The live source's elements at or after the switch.
    fn after(&self, batch: Batch) -> Result<Batch> {
        let elements = batch.try_into_elements::<L>()?;
        if (0..elements.len()).all(|i| elements.timestamp(i) >= self.switch_at) {
            return Ok(Batch::new(elements));
        }
        let mut out = Elements::<L>::with_capacity(elements.len());
        for wv in elements.into_iter_windowed() {
            if wv.timestamp >= self.switch_at {
                out.push_windowed(wv);
            }
        }
        Ok(Batch::new(out))
    }

    fn poll_history(&mut self, max_elements: usize) -> Result<SourcePoll> {
        let history = self.history.as_mut().expect("in the history phase");
        let cap = Watermark(self.switch_at);
        let polled = history.poll(max_elements)?;
        self.history_progress = history.progress().or(self.history_progress);
        Ok(match polled {
            SourcePoll::Batch(b) => keep(self.before(b)?, None),
            SourcePoll::SplitBatch(b, w) => keep(self.before(b)?, Some(w.min(cap))),
            SourcePoll::Done => {
                // Kept for a checkpoint in the live phase; `None` from a history that does
                // not save its position (the job then takes no checkpoints).
                self.history_done = history.position().ok();
                self.history = None;
                let live = self.open_live()?;
                tracing::info!(
                    worker = self.ctx.worker.index,
                    switch_at = self.switch_at.millis(),
                    "history read: switching to the live source"
                );
                self.live = Some(live);
                SourcePoll::Advanced
            }
            other => other,
        })
    }
}

impl<H, L> HybridReader<H, L> {
    /// This worker's live reader: as `open` makes it, or from the saved live positions.
    fn open_live(&self) -> Result<Box<dyn SourceReader>> {
        match self.saved_live.is_empty() {
            true => self.live_source.open(&self.ctx),
            false => self.live_source.open_from(&self.ctx, &self.saved_live),
        }
    }
}

/// A batch the filter left empty is no batch: the watermark may have moved, ask again.
fn keep(batch: Batch, split_watermark: Option<Watermark>) -> SourcePoll {
    match (batch.len(), split_watermark) {
        (0, _) => SourcePoll::Advanced,
        (_, Some(w)) => SourcePoll::SplitBatch(batch, w),
        (_, None) => SourcePoll::Batch(batch),
    }
}

impl<H: Data, L: Data> SourceReader for HybridReader<H, L> {
    fn poll(&mut self, max_elements: usize) -> Result<SourcePoll> {
        if self.history.is_some() {
            return self.poll_history(max_elements);
        }
        let floor = Watermark(self.switch_at);
        let live = self.live.as_mut().expect("in the live phase");
        Ok(match live.poll(max_elements)? {
            SourcePoll::Batch(b) => keep(self.after(b)?, None),
            SourcePoll::SplitBatch(b, w) => keep(self.after(b)?, Some(w.max(floor))),
            other => other,
        })
    }

    fn watermark(&self) -> Watermark {
        let seam = Watermark(self.switch_at);
        match (&self.history, &self.live) {
            (Some(h), _) => h.watermark().min(seam),
            (None, Some(l)) => l.watermark().max(seam),
            (None, None) => seam,
        }
    }

    fn read_ahead_millis(&self) -> Option<i64> {
        match (&self.history, &self.live) {
            (Some(h), _) => h.read_ahead_millis(),
            (None, Some(l)) => l.read_ahead_millis(),
            (None, None) => None,
        }
    }

    fn split_gauges(&self) -> Vec<(&'static str, String, i64)> {
        self.live.as_ref().map(|l| l.split_gauges()).unwrap_or_default()
    }

    fn progress(&self) -> Option<SourceProgress> {
        let phase = if self.history.is_some() { Phase::History } else { Phase::Live };
        Some(SourceProgress { phase: Some(phase), ..self.history_progress.unwrap_or_default() })
    }

    fn position(&self) -> Result<Vec<u8>> {
        let (phase, history) = match (&self.history, &self.history_done) {
            (Some(h), _) => (Phase::History, h.position()?),
            (None, Some(done)) => (Phase::Live, done.clone()),
            (None, None) => {
                return Err(crate::Error::Internal("the history of a hybrid source does not save its position".into()));
            }
        };
        let live = self.live.as_ref().map(|l| l.position()).transpose()?;
        crate::position::encode(HYBRID_POSITION_VERSION, &HybridPosition { phase, history, live })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pane::PaneInfo;
    use crate::runtime::WorkerInfo;
    use crate::window::Window;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A scripted reader: each poll hands out the next batch (with a split watermark), and
    /// its watermark is the last one handed out.
    struct Script {
        polls: Mutex<VecDeque<(Vec<i64>, i64)>>,
        bounded: bool,
    }

    struct ScriptReader {
        polls: VecDeque<(Vec<i64>, i64)>,
        watermark: Watermark,
        bounded: bool,
    }

    impl SourceFn for Script {
        fn is_bounded(&self) -> bool {
            self.bounded
        }
        fn open(&self, _: &StepContext) -> Result<Box<dyn SourceReader>> {
            let polls = std::mem::take(&mut *self.polls.lock().unwrap());
            Ok(Box::new(ScriptReader { polls, watermark: Watermark::MIN, bounded: self.bounded }))
        }
    }

    impl SourceReader for ScriptReader {
        fn poll(&mut self, _: usize) -> Result<SourcePoll> {
            let Some((times, w)) = self.polls.pop_front() else {
                return Ok(if self.bounded { SourcePoll::Done } else { SourcePoll::Pending });
            };
            let mut e = Elements::new();
            for t in times {
                e.push(t, EventTime::from_millis(t), Window::Global, PaneInfo::NO_FIRING);
            }
            self.watermark = Watermark(EventTime::from_millis(w));
            Ok(SourcePoll::SplitBatch(Batch::new(e), self.watermark))
        }
        fn watermark(&self) -> Watermark {
            self.watermark
        }
    }

    fn script(polls: Vec<(Vec<i64>, i64)>, bounded: bool) -> Arc<dyn SourceFn> {
        Arc::new(Script { polls: Mutex::new(polls.into()), bounded })
    }

    fn drain(r: &mut dyn SourceReader) -> Vec<(Vec<i64>, i64, i64)> {
        let mut seen = Vec::new();
        for _ in 0..20 {
            match r.poll(100).unwrap() {
                SourcePoll::SplitBatch(b, w) => {
                    let e = b.try_into_elements::<i64>().unwrap();
                    let values = e.into_iter_windowed().map(|wv| wv.value).collect();
                    seen.push((values, w.0.millis(), r.watermark().0.millis()));
                }
                SourcePoll::Pending => break,
                _ => {}
            }
        }
        seen
    }

    #[test]
    fn history_before_the_switch_then_live_from_it_with_the_watermark_held_at_the_seam() {
        // History holds 1..=12 (an overlap past the switch at 10); live holds 8..=14.
        let history = script(vec![(vec![1, 2, 3], 0), (vec![9, 11, 12], 5), (vec![], 12)], true);
        let live = script(vec![(vec![8, 9, 10], 3), (vec![13, 14], 12)], false);
        let source = HybridSource::<i64, i64>::new(history, live, EventTime::from_millis(10), |x| x);
        let ctx = StepContext {
            name: "Hybrid".into(),
            worker: WorkerInfo { index: 0, peers: 1 },
            clock: Arc::new(crate::ManualClock::new()),
        };
        let mut r = source.open(&ctx).unwrap();
        assert!(!source.is_bounded(), "as bounded as the live source");
        let seen = drain(r.as_mut());
        assert_eq!(
            seen,
            [
                // history, before the switch only; its watermark capped at the switch
                (vec![1, 2, 3], 0, 0),
                (vec![9], 5, 5),
                // live, from the switch on; its watermark raised to the switch
                (vec![10], 10, 10),
                (vec![13, 14], 12, 12),
            ]
        );
    }

    /// History: values 0..100 at their own times, by Create, 0..50 at even indexes and
    /// 50..100 at odd ones (so that at two workers one has 50 values before the switch,
    /// the other 30, and a checkpoint after 35 finds them in different phases); live:
    /// values 60..200 in four splits, by SplitStream; the switch at 80. Every value below 80 comes from the
    /// history and every other from the live source, once each, wherever the checkpoint
    /// falls (`first` elements per reader before it: in the history, or past it on some
    /// workers) and whatever the worker counts.
    #[test]
    fn a_hybrid_source_resumes_in_its_phase_with_each_element_once() {
        use crate::position::testing::across_checkpoint;
        use crate::transforms::create::CreateSource;
        use crate::transforms::split_stream::{SplitEvent, SplitSource, SplitStream};
        use crate::{ManualClock, WatermarkStrategy};
        let t = EventTime::from_millis;
        let switch = t(80);
        let history: Vec<(i64, EventTime)> =
            (0..100).map(|i| if i % 2 == 0 { i / 2 } else { 50 + i / 2 }).map(|v| (v, t(v))).collect();
        let mut live = SplitStream::new(WatermarkStrategy::bounded_out_of_orderness(0));
        for s in 0..4 {
            live = live.split((60..200).filter(|v| v % 4 == s).map(|v| SplitEvent::Chunk(vec![(v, t(v))])).collect());
        }
        let source = HybridSource::<i64, i64>::new(
            Arc::new(CreateSource { values: Arc::new(history) }),
            Arc::new(SplitSource(Arc::new(live))),
            switch,
            |x| x,
        );
        assert!(source.checkpoints());
        for first in [5, 35, 40, 60, 200] {
            for (before, after) in [(2, 1), (2, 3), (1, 4), (3, 3)] {
                let clock = Arc::new(ManualClock::new());
                let run = across_checkpoint::<i64>(&source, clock, (before, after), first, Duration::ZERO).unwrap();
                let mut got = run.union();
                got.sort();
                assert_eq!(got, (0..200).collect::<Vec<_>>(), "first {first}, {before} -> {after}");
                let least = |w: &[Watermark]| w.iter().min().copied().unwrap();
                assert!(
                    least(&run.restored_watermarks) >= least(&run.saved_watermarks),
                    "first {first}, {before} -> {after}: the job's watermark went back"
                );
                // Live elements are never sent below the switch; history ones never above.
                for (v, _, w) in run.before.iter().chain(&run.after).flatten() {
                    assert!(if *v < 80 { w.0 <= switch } else { w.0 >= switch }, "{v} at {w:?}");
                }
            }
        }
    }
}
