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

impl<H: Data, L: Data> SourceFn for HybridSource<H, L> {
    fn is_bounded(&self) -> bool {
        self.live.is_bounded()
    }

    fn check(&self) -> Result<()> {
        self.history.check()?;
        self.live.check()
    }

    fn open(&self, ctx: &StepContext) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(HybridReader::<H, L> {
            history: Some(self.history.open(ctx)?),
            live_source: self.live.clone(),
            live: None,
            ctx: ctx.clone(),
            switch_at: self.switch_at,
            convert: self.convert.clone(),
            history_progress: None,
        }))
    }
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
                self.history = None;
                let live = self.live_source.open(&self.ctx)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pane::PaneInfo;
    use crate::runtime::WorkerInfo;
    use crate::window::Window;
    use std::collections::VecDeque;
    use std::sync::Mutex;

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
}
