//! What a runner drives: the type-erased faces of each step.
//!
//! Every step of a [`crate::Graph`] carries one of these trait objects, built when the
//! user called the transform (so the code behind them is monomorphized for the step's
//! element types). A runner instantiates them once per worker and feeds them [`Batch`]es;
//! it decides *when* (bundles, watermarks, exchange), they decide *what*.

use std::sync::Arc;

use crate::batch::Batch;
use crate::clock::{Clock, ProcessingTime};
use crate::error::Result;
use crate::time::{EventTime, Watermark};

/// Where an instance of a step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    /// This worker's index among all workers of all processes.
    pub index: usize,
    /// How many workers the job has in all.
    pub peers: usize,
}

/// What every per-worker instance of a step is told: its name (for errors and metrics)
/// and where it runs.
#[derive(Clone, Debug)]
pub struct StepContext {
    /// The step's unique name.
    pub name: Arc<str>,
    /// The worker the instance runs on.
    pub worker: WorkerInfo,
    /// Processing time: read it here, never from the system directly, so tests can script it.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for dyn Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({:?})", self.now())
    }
}

/// A source: makes one reader per worker.
pub trait SourceFn: Send + Sync {
    /// Whether the source ends by itself.
    fn is_bounded(&self) -> bool;
    /// Checks, before anything runs, that the source can be read (files exist, URLs
    /// parse), so a bad location stops the job at start with a message naming it.
    fn check(&self) -> Result<()> {
        Ok(())
    }
    /// Whether the source scripts processing time ([`SourcePoll::AdvanceProcessingTime`]):
    /// the job then runs on a manual clock instead of the system clock.
    fn scripts_processing_time(&self) -> bool {
        false
    }
    /// The reader for one worker; it reads that worker's share of the input.
    fn open(&self, ctx: &StepContext) -> Result<Box<dyn SourceReader>>;
    /// Whether its readers say where they are ([`SourceReader::position`]) and can start
    /// again from there ([`SourceFn::open_from`]): a job with checkpoints needs every
    /// source to.
    fn checkpoints(&self) -> bool {
        false
    }
    /// The reader for one worker, starting where a checkpoint left off. `saved` holds the
    /// position of every reader of the run that took the checkpoint, as
    /// [`SourceReader::position`] wrote them, whatever its worker count: the reader takes
    /// its share of the input at `ctx.worker` (as [`SourceFn::open`] deals it) and, for
    /// each split of that share, starts after what the saved positions say was read, with
    /// the split's watermark state as it was. A split no saved position names (a
    /// partition added since) starts as `open` would start it.
    fn open_from(&self, ctx: &StepContext, saved: &[Vec<u8>]) -> Result<Box<dyn SourceReader>> {
        let _ = saved;
        Err(crate::Error::Config(format!("source '{}' cannot resume from a checkpoint", ctx.name)))
    }
}

/// What a source reader did when asked for more.
pub enum SourcePoll {
    /// Some elements, stamped with the reader's watermark.
    Batch(Batch),
    /// Some elements of one split (a row group, a partition), stamped with that split's
    /// own watermark as it was before they were read, which is never behind the reader's
    /// (the least over its splits). Judged against their own split's watermark, an
    /// element is on time or late whichever worker reads its split and whatever else that
    /// worker reads: how splits are dealt cannot change the panes (`docs/semantics.md`).
    SplitBatch(Batch, Watermark),
    /// Nothing now; ask again later.
    Pending,
    /// No elements, but the watermark moved: ask again now. The elements a reader returns
    /// next are stamped with the new watermark.
    Advanced,
    /// A scripted source ([`crate::TestStream`]) moves processing time to this instant.
    /// The runner moves the clock once everything read before has been processed by
    /// every worker, and reads on after every worker's clock has moved, so processing
    /// time is the same for every element wherever it is processed.
    AdvanceProcessingTime(ProcessingTime),
    /// Nothing more, ever.
    Done,
}

/// One worker's share of a source.
pub trait SourceReader {
    /// The next elements, at most about `max_elements` of them.
    fn poll(&mut self, max_elements: usize) -> Result<SourcePoll>;
    /// No element with a timestamp before this will come from this reader (late ones
    /// aside). A bounded reader keeps it at the minimum until it is done. A batch is
    /// stamped with the watermark as it was *before* the poll that returned it.
    fn watermark(&self) -> Watermark {
        Watermark::MIN
    }
    /// How far past the sinks' watermark (the least event time any sink may still
    /// receive) this reader's own watermark may be before the runner stops polling it,
    /// in milliseconds of event time; `None`: no limit. A backfill reader sets it so that
    /// a worker that runs ahead in event time waits for the others instead of filling
    /// downstream state with windows that cannot fire yet (DESIGN.md section 3).
    fn read_ahead_millis(&self) -> Option<i64> {
        None
    }
    /// Per-split figures for monitoring, `(metric, split, value)`: a Kafka reader reports
    /// each partition's lag (`"lag"`, in records). The runner publishes them as gauges.
    fn split_gauges(&self) -> Vec<(&'static str, String, i64)> {
        Vec::new()
    }
    /// How far a bounded reader has come through what it was dealt, for progress bars
    /// and the job's web view; `None` for a reader that cannot say (an unbounded one).
    fn progress(&self) -> Option<SourceProgress> {
        None
    }
    /// Where the reader is, for a checkpoint: per split, what it has returned so far (and
    /// nothing after), and the split's watermark state. Called between polls; what
    /// [`SourceFn::open_from`] reads back, at any worker count. Only for a source whose
    /// [`SourceFn::checkpoints`] is true.
    fn position(&self) -> Result<Vec<u8>> {
        Err(crate::Error::Internal("this source does not save its position".into()))
    }
    /// The checkpoint cut at `position` (what [`SourceReader::position`] returned then) has
    /// passed every sink: the job resumes from it, or a later one, after a crash. A reader
    /// may publish it for monitoring (a Kafka reader commits its offsets to its consumer
    /// group); the checkpoint, not this, is what a resume reads.
    fn checkpoint_passed(&mut self, position: &[u8]) -> Result<()> {
        let _ = position;
        Ok(())
    }
}

/// How far one reader of a bounded source has come (see [`SourceReader::progress`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceProgress {
    /// Units of work done (Parquet: row groups read).
    pub units_done: u64,
    /// Units of work dealt to this reader.
    pub units_total: u64,
    /// Bytes read (Parquet: the compressed size of the row groups read).
    pub bytes_done: u64,
    /// Bytes dealt to this reader.
    pub bytes_total: u64,
    /// The latest event time (ms) in what this reader was dealt, when the source knows
    /// it (Parquet's column statistics): where a backfill's watermark is heading.
    pub event_time_end: Option<i64>,
    /// For a source of history then live input ([`crate::transforms::hybrid`]): which it
    /// is reading now. The other figures are the history's.
    pub phase: Option<Phase>,
}

/// What a hybrid source is reading ([`SourceProgress::phase`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Its history (files), before the switch.
    History,
    /// Its live source, having read all its history.
    Live,
}

/// A step that transforms each bundle of elements: every ParDo-like transform.
pub trait ParDoFn: Send + Sync {
    /// How many outputs the step has (the main one plus tagged ones).
    fn outputs(&self) -> usize;
    /// A fresh instance for one worker (Beam deserializes a DoFn per worker).
    fn instantiate(&self, ctx: &StepContext) -> Box<dyn ParDoInstance>;
    /// Whether the step hands every element on unchanged and only says something new
    /// about its collection's windowing (`triggering`, `accumulating_fired_panes`): a
    /// runner may then run nothing for it.
    fn is_passthrough(&self) -> bool {
        false
    }
}

/// Outputs of one call into a ParDo, one slot per output port; `None` where empty.
pub type PortBatches = Vec<Option<Batch>>;

/// One worker's instance of a ParDo step.
pub trait ParDoInstance {
    /// Called once before the first bundle.
    fn setup(&mut self) -> Result<()> {
        Ok(())
    }
    /// Called at the start of each bundle.
    fn start_bundle(&mut self) -> Result<()> {
        Ok(())
    }
    /// Processes one batch of the current bundle.
    fn process(&mut self, input: Batch) -> Result<()>;
    /// Called at the end of each bundle.
    fn finish_bundle(&mut self) -> Result<()> {
        Ok(())
    }
    /// Takes what was output since the last call.
    fn take_outputs(&mut self) -> PortBatches;
    /// Called once after the last bundle.
    fn teardown(&mut self) {}
}

/// [`ParDoInstance::take_outputs`] of a step with one output, buffered in `out`.
pub fn take_main<T: crate::Data>(out: &mut crate::Elements<T>) -> PortBatches {
    let out = std::mem::take(out);
    vec![(!out.is_empty()).then(|| Batch::new(out))]
}

/// Splits batches by destination worker before an exchange.
pub trait Shuffle {
    /// Routes `input`, which arrived at watermark `arrival`, or folds it into partial
    /// aggregates (a lifted combine).
    fn route(&mut self, input: Batch, peers: usize, arrival: Watermark, out: &mut Vec<Batch>) -> Result<()>;
    /// Emits anything held back (partial aggregates) at the end of a bundle.
    fn flush(&mut self, peers: usize, out: &mut Vec<Batch>) -> Result<()> {
        let _ = (peers, out);
        Ok(())
    }
    /// How many elements it dropped as too late, since the start: a lifted combine drops
    /// them before folding, so that they are counted one by one, not as partials whose
    /// makeup depends on bundling.
    fn late_dropped(&self) -> u64 {
        0
    }
}

/// Makes shuffles; the graph holds one per exchange step.
pub trait ShuffleFn: Send + Sync {
    /// A fresh shuffle for one worker.
    fn instantiate(&self, ctx: &StepContext) -> Box<dyn Shuffle>;
    /// Splits a batch as it left the shuffle (after [`Shuffle::route`]: keyed elements,
    /// or a lifted combine's partial accumulators) by key group, for a checkpoint of what
    /// a grouping holds but has not applied yet; restored on whichever worker owns each
    /// group. `Err` for a shuffle whose output is not keyed.
    fn split_by_key_group(&self, exchanged: Batch) -> Result<Vec<(crate::keys::KeyGroup, Batch)>> {
        let _ = exchanged;
        Err(crate::Error::Internal("this shuffle's output is not keyed".into()))
    }
}

/// A grouping step (GroupByKey, Combine): a shuffle, then keyed state fired by watermark.
pub trait GroupFn: Send + Sync {
    /// The per-worker routing (and, for a combine, pre-aggregation) before the exchange.
    fn shuffle(&self) -> &dyn ShuffleFn;
    /// Fresh keyed state for one worker.
    fn instantiate(&self, ctx: &StepContext) -> Box<dyn GroupState>;
    /// Whether the step has a second output for the elements it drops as too late.
    fn late_output(&self) -> bool {
        false
    }
    /// Whether it outputs before its windows end by itself (a stateful DoFn outputs as
    /// elements and timers come), so it runs in the global window of an unbounded input.
    fn outputs_before_window_end(&self) -> bool {
        false
    }
}

/// How a grouping takes elements sent at the same watermark, which come from many senders
/// in any order ([`crate::arrival`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameWatermark {
    /// As they come, even while more can still be sent at that watermark: the panes do
    /// not depend on their order (sums under the default trigger).
    AsTheyCome,
    /// All at once, when nothing more can be sent at that watermark, to be put in a
    /// canonical order: the panes depend on the order (count triggers, a late pane per
    /// element).
    Whole,
    /// As `Whole`, and also what was sent in each epoch once that epoch is complete: a
    /// processing-time trigger must see what arrived before the clock moved, and a
    /// scripted clock moves between epochs.
    WholePerEpoch,
}

/// One worker's keyed, windowed state of a grouping step.
pub trait GroupState {
    /// Adds shuffled elements that arrived at watermark `arrival` (the event-time part of
    /// the timely time they were sent at). Elements later than their window's end plus the
    /// allowed lateness are dropped and counted.
    fn insert(&mut self, input: Batch, arrival: Watermark) -> Result<()>;
    /// Adds every batch sent at watermark `arrival` that the runner hands over at once
    /// (after [`GroupState::fire`] at that watermark), as [`GroupState::same_watermark`]
    /// asks.
    fn insert_all(&mut self, input: Vec<Batch>, arrival: Watermark) -> Result<()> {
        input.into_iter().try_for_each(|b| self.insert(b, arrival))
    }
    /// How the runner must hand over elements sent at the same watermark
    /// ([`crate::arrival`]).
    fn same_watermark(&self) -> SameWatermark {
        SameWatermark::AsTheyCome
    }
    /// How many elements were dropped as too late, since the start.
    fn late_dropped(&self) -> u64 {
        0
    }
    /// The elements dropped since the last call, with their timestamps and windows, when
    /// the step routes them to a late output.
    fn take_late(&mut self) -> Option<Batch> {
        None
    }
    /// The earliest output timestamp among panes not yet emitted: the runner holds the
    /// downstream watermark there (Beam's watermark hold).
    fn earliest_pending(&self) -> Option<EventTime>;
    /// The earliest processing time at which a trigger waits to fire, if any: the runner
    /// wakes the state then (on the system clock).
    fn next_timer(&self) -> Option<ProcessingTime> {
        None
    }
    /// Emits every pane the watermark (or the clock) makes ready, each batch with its output timestamp.
    fn fire(&mut self, watermark: Watermark, out: &mut Vec<(EventTime, Batch)>) -> Result<()>;
    /// What the state holds now, for monitoring.
    fn size(&self) -> StateSize {
        StateSize::default()
    }
    /// Appends the keyed state to `out`, by key group (DESIGN.md 4 and 5), so that it can
    /// be restored on whichever worker owns each group at any worker count. Called after
    /// [`GroupState::fire`], when no output waits to go (late elements included). `Err`
    /// for a step whose state does not save; every grouping's does.
    fn snapshot(&self, out: &mut std::collections::BTreeMap<crate::keys::KeyGroup, Vec<u8>>) -> Result<()> {
        let _ = out;
        Err(crate::Error::Config("this grouping's state cannot be saved in a snapshot yet".into()))
    }
    /// Adds the state of one key group, as [`GroupState::snapshot`] wrote it, to what this
    /// instance holds.
    fn restore(&mut self, group: crate::keys::KeyGroup, bytes: &[u8]) -> Result<()> {
        let _ = (group, bytes);
        Err(crate::Error::Config("this grouping's state cannot be restored from a snapshot yet".into()))
    }
}

/// What a grouping's state holds (see [`GroupState::size`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateSize {
    /// Panes not yet emitted (windows with state, under a trigger).
    pub panes: u64,
    /// Entries held: an accumulator per key and pane (or window, or session).
    pub entries: u64,
    /// An estimate of their bytes: the entries times the size of a key and an
    /// accumulator, without what those point to on the heap (a `String` key's bytes).
    pub bytes: u64,
}

/// A step that reads a side input beside its main input ([`crate::transforms::side_input`]).
pub trait SideParDoFn: Send + Sync {
    /// A fresh instance for one worker.
    fn instantiate(&self, ctx: &StepContext) -> Box<dyn SideParDoInstance>;
}

/// One worker's instance of a side-input step. The runner hands it every element of the
/// side input (on every worker), and a main batch once every side window it reads
/// ([`SideParDoInstance::needs`]) is [`SideParDoInstance::ready`] (or the side input has
/// ended).
pub trait SideParDoInstance {
    /// Takes elements of the side input.
    fn add_side(&mut self, batch: Batch) -> Result<()>;
    /// Fills `windows` with the side windows `main`'s elements read; gives the batch back.
    fn needs(&mut self, main: Batch, windows: &mut Vec<crate::window::Window>) -> Result<Batch>;
    /// Whether side window `window` can be read, given whether the side input's watermark
    /// has passed its end.
    fn ready(&self, window: crate::window::Window, side_watermark_past_end: bool) -> bool;
    /// Processes a main batch whose side windows are ready.
    fn process(&mut self, main: Batch) -> Result<Option<Batch>>;
    /// The side view as it stands, for a checkpoint: every side element taken so far by
    /// window (and, for a triggered side input, the firing each window holds), in an order
    /// that does not depend on arrival, so that every worker saves the same bytes.
    fn save_view(&self) -> Result<Vec<u8>>;
    /// Replaces the side view with one [`SideParDoInstance::save_view`] wrote.
    fn restore_view(&mut self, saved: &[u8]) -> Result<()>;
}

/// A sink: makes one writer per worker.
pub trait SinkFn: Send + Sync {
    /// Whether all elements go to worker 0 (a single output file, stdout).
    fn gathers(&self) -> bool;
    /// Checks, before anything runs, that the sink can be written.
    fn check(&self) -> Result<()> {
        Ok(())
    }
    /// The writer for one worker.
    fn open(&self, ctx: &StepContext) -> Result<Box<dyn SinkWriter>>;
    /// Whether the output becomes visible in one job-wide commit ([`SinkFn::commit`])
    /// rather than writer by writer.
    fn commits(&self) -> bool {
        false
    }
    /// Makes the whole job's output visible, once every writer of every process has
    /// finished: called once per job (on worker 0), with what each writer staged
    /// ([`SinkWriter::staged`]), and never when the job failed.
    fn commit(&self, staged: Vec<Vec<u8>>) -> Result<()> {
        let _ = staged;
        Ok(())
    }
    /// Whether a sink that [`SinkFn::commits`] can also commit at every checkpoint (two-phase
    /// commit): its writers stage their output per checkpoint ([`SinkWriter::precommit`]),
    /// and what was staged before a checkpoint becomes visible once that checkpoint is
    /// complete ([`SinkFn::commit_checkpoint`]). A sink that commits but cannot do this is
    /// refused in a job that takes checkpoints.
    fn commits_at_checkpoints(&self) -> bool {
        false
    }
    /// Makes visible what every writer staged for one completed checkpoint, `checkpoint`
    /// (each writer's [`SinkWriter::precommit`] bytes). Called once per checkpoint, on
    /// worker 0, after its manifest is written; again with the same bytes when a run
    /// resumes from that checkpoint (it may have stopped half-way), so it must be
    /// idempotent.
    ///
    /// Checkpoint ids only grow, across resumed runs too, and checkpoints are committed in
    /// order: when checkpoint `n` is handed over, every checkpoint before it was committed,
    /// so a sink can record the newest id it committed and skip what is not newer. A
    /// writer that finished before this checkpoint staged nothing for it: its last bytes
    /// were handed to the checkpoint it finished in, and are not handed again.
    fn commit_checkpoint(&self, checkpoint: u64, staged: Vec<Vec<u8>>) -> Result<()> {
        let _ = (checkpoint, staged);
        Ok(())
    }
    /// Before a run resumes from a checkpoint, once per job (on process 0), after
    /// [`SinkFn::commit_checkpoint`] with that checkpoint's bytes: removes whatever was
    /// staged and never committed (a crashed run's output after the checkpoint).
    fn recover(&self) -> Result<()> {
        Ok(())
    }
    /// [`SinkFn::check`] for a job that resumes from a checkpoint: the output already
    /// there is the job's own (committed at earlier checkpoints), not existing output.
    fn check_resuming(&self) -> Result<()> {
        self.check()
    }
}

/// One worker's part of a sink.
pub trait SinkWriter {
    /// Writes (or buffers) elements.
    fn write(&mut self, input: Batch) -> Result<()>;
    /// The sink's input watermark moved to `watermark`: on-time panes of windows that end
    /// at or before it have all arrived, so a writer can seal what it buffers for them
    /// (and free the memory) before the input is complete. Elements of those windows may
    /// still come later as late panes.
    fn advance(&mut self, watermark: Watermark) -> Result<()> {
        let _ = watermark;
        Ok(())
    }
    /// A checkpoint: everything written so far must be durable before it completes. A
    /// sink that writes as it goes (stdout, a Kafka producer) writes out what it buffers;
    /// its output is then at-least-once across a restart (what came after the checkpoint
    /// is written again). Called only in a job that takes checkpoints.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// The input is complete: make the output visible, or (a sink that
    /// [`SinkFn::commits`]) ready for the job's commit.
    fn finish(&mut self) -> Result<()>;
    /// A checkpoint, for a sink that [`SinkFn::commits_at_checkpoints`]: seal what is
    /// open and return what was staged since the last checkpoint (saved in the
    /// checkpoint, handed to [`SinkFn::commit_checkpoint`] once it is complete). What
    /// comes after goes into new files.
    fn precommit(&mut self) -> Result<Vec<u8>> {
        Err(crate::Error::Internal("this sink does not commit at checkpoints".into()))
    }
    /// After [`SinkWriter::finish`], for a sink that commits as a job: what this writer
    /// staged, handed to [`SinkFn::commit`].
    fn staged(&mut self) -> Vec<u8> {
        Vec::new()
    }
    /// Files written out so far (sealed, visible once the input is complete), for
    /// progress; 0 for a sink that writes no files.
    fn files_written(&self) -> u64 {
        0
    }
}
