//! TestStream: an unbounded source scripted with elements, watermark advances and
//! processing-time advances (Beam's `TestStream`), for tests of streaming semantics.

use std::sync::Arc;

use crate::batch::Batch;
use crate::clock::ProcessingTime;
use crate::element::{Data, Elements};
use crate::error::Result;
use crate::graph::{NodeKind, OutputInfo, PortRef, Windowing};
use crate::pane::PaneInfo;
use crate::pipeline::{PCollection, Pipeline};
use crate::runtime::{SourceFn, SourcePoll, SourceReader, StepContext};
use crate::time::{EventTime, Watermark};
use crate::window::Window;

/// One step of a [`TestStream`]'s script.
#[derive(Clone, Debug)]
pub enum TestEvent<T> {
    /// Elements arrive, with their timestamps, at the current watermark.
    Elements(Vec<(T, EventTime)>),
    /// The watermark advances.
    Watermark(EventTime),
    /// Processing time advances by this many milliseconds.
    ProcessingTime(i64),
}

/// A script of elements, watermark advances and processing-time advances.
///
/// Elements arrive while the watermark is where the script has put it, so an element
/// whose timestamp is behind the watermark arrives late. The script ends with the
/// watermark at +infinity (Beam's `advanceWatermarkToInfinity`), so a test always ends.
///
/// At any number of workers and processes the stream is the same: worker 0 emits the
/// elements, and every worker advances its watermark as the script says, so the
/// watermark downstream is the script's.
///
/// A job with a script that advances processing time runs on a manual
/// [`crate::clock::ManualClock`] starting at 0, and processing time moves only when the
/// script says: after every element before the advance has been processed, and before
/// any element after it is. Processing-time triggers are then deterministic:
///
/// ```
/// use riffle_engine::prelude::*;
/// let ms = EventTime::from_millis;
/// // Early panes one minute of processing time after each pane's first element.
/// let script = TestStream::new()
///     .add_elements(vec![((1u8, 1i64), ms(1)), ((1u8, 2i64), ms(2))])
///     .advance_processing_time(60_000)
///     .add_elements(vec![((1u8, 4i64), ms(3))])
///     .advance_watermark_to(ms(100));
/// let out = riffle_timely::testing::run_bounded(|p| {
///     p.test_stream(script)
///         .window_into(FixedWindows::of_millis(100))
///         .triggering(Trigger::after_watermark().with_early_firings(Trigger::after_processing_time(60_000)))
///         .combine_per_key(Sum::new())
/// });
/// assert_eq!(out, [(1, 3), (1, 4)]); // the early pane, then the on-time pane
/// ```
///
/// ```
/// use riffle_engine::prelude::*;
/// let ms = EventTime::from_millis;
/// let script = TestStream::new()
///     .add_elements(vec![("a".to_string(), ms(1)), ("b".to_string(), ms(12))])
///     .advance_watermark_to(ms(20))
///     .add_elements(vec![("c".to_string(), ms(25))]);
/// let mut out = riffle_timely::testing::run_bounded(|p| {
///     p.test_stream(script).map(|s| (0u8, s)).window_into(FixedWindows::of_millis(10)).combine_per_key(Count::new())
/// });
/// out.sort();
/// assert_eq!(out, [(0, 1), (0, 1), (0, 1)]);
/// ```
#[derive(Clone, Debug)]
pub struct TestStream<T> {
    events: Vec<TestEvent<T>>,
    watermark: EventTime,
}

impl<T: Data> Default for TestStream<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Data> TestStream<T> {
    /// An empty script, with the watermark at -infinity.
    pub fn new() -> Self {
        TestStream { events: Vec::new(), watermark: EventTime::MIN }
    }

    /// Elements arrive now.
    pub fn add_elements(mut self, elements: Vec<(T, EventTime)>) -> Self {
        self.events.push(TestEvent::Elements(elements));
        self
    }

    /// The watermark advances to `t`.
    ///
    /// # Panics
    /// If `t` is behind the script's watermark: a watermark never goes back.
    pub fn advance_watermark_to(mut self, t: EventTime) -> Self {
        assert!(t >= self.watermark, "the watermark cannot go back from {} to {t}", self.watermark);
        self.watermark = t;
        self.events.push(TestEvent::Watermark(t));
        self
    }

    /// Processing time advances by `millis` (Beam's `advanceProcessingTime`).
    pub fn advance_processing_time(mut self, millis: i64) -> Self {
        assert!(millis >= 0, "processing time cannot go back ({millis} ms)");
        self.events.push(TestEvent::ProcessingTime(millis));
        self
    }

    /// The watermark advances to +infinity and the stream ends (also implied at the end of
    /// the script).
    pub fn advance_to_infinity(self) -> Self {
        self
    }

    /// The script.
    pub fn events(&self) -> &[TestEvent<T>] {
        &self.events
    }
}

impl Pipeline {
    /// An unbounded collection played from a [`TestStream`] script.
    pub fn test_stream<T: Data>(&self, stream: TestStream<T>) -> PCollection<T> {
        let info = OutputInfo {
            type_name: std::any::type_name::<T>(),
            bounded: false,
            windowing: Windowing::default(),
            tag: None,
        };
        let scripts_time = stream.events.iter().any(|e| matches!(e, TestEvent::ProcessingTime(_)));
        let source = TestStreamSource { events: Arc::new(stream.events), scripts_time };
        let node = self.add_step("TestStream", NodeKind::Source(Arc::new(source)), vec![], vec![info]);
        PCollection::from_port(self, PortRef { node, port: 0 })
    }
}

struct TestStreamSource<T> {
    events: Arc<Vec<TestEvent<T>>>,
    scripts_time: bool,
}

impl<T: Data> SourceFn for TestStreamSource<T> {
    fn is_bounded(&self) -> bool {
        false
    }
    fn scripts_processing_time(&self) -> bool {
        self.scripts_time
    }
    fn open(&self, ctx: &StepContext) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(TestStreamReader {
            now: ProcessingTime::from_millis(0),
            events: self.events.clone(),
            next: 0,
            offset: 0,
            emits: ctx.worker.index == 0,
            watermark: EventTime::MIN,
        }))
    }
}

struct TestStreamReader<T> {
    events: Arc<Vec<TestEvent<T>>>,
    next: usize,
    /// How far into the current Elements event (batches are at most `max_elements`).
    offset: usize,
    emits: bool,
    watermark: EventTime,
    /// The script's processing time so far.
    now: ProcessingTime,
}

impl<T: Data> SourceReader for TestStreamReader<T> {
    fn poll(&mut self, max_elements: usize) -> Result<SourcePoll> {
        while let Some(event) = self.events.get(self.next) {
            match event {
                TestEvent::Watermark(t) => {
                    self.next += 1;
                    if *t > self.watermark {
                        self.watermark = *t;
                        return Ok(SourcePoll::Advanced);
                    }
                }
                TestEvent::ProcessingTime(millis) => {
                    self.next += 1;
                    self.now = self.now.plus_millis(*millis);
                    return Ok(SourcePoll::AdvanceProcessingTime(self.now));
                }
                TestEvent::Elements(elements) => {
                    if !self.emits || self.offset >= elements.len() {
                        self.next += 1;
                        self.offset = 0;
                        continue;
                    }
                    let end = (self.offset + max_elements.max(1)).min(elements.len());
                    let mut batch = Elements::with_capacity(end - self.offset);
                    for (v, t) in &elements[self.offset..end] {
                        batch.push(v.clone(), *t, Window::Global, PaneInfo::NO_FIRING);
                    }
                    self.offset = end;
                    return Ok(SourcePoll::Batch(Batch::new(batch)));
                }
            }
        }
        Ok(SourcePoll::Done)
    }

    fn watermark(&self) -> Watermark {
        Watermark(self.watermark)
    }
}
