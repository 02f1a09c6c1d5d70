//! Checkpoints: consistent snapshots of a running job, aligned to epochs, and resuming
//! from them (DESIGN.md section 5; docs/checkpoints.md describes the protocol).
//!
//! The epoch coordinate of Riffle's timely time carries a *generation* in its high 32
//! bits: checkpoint `n` is the cut between generation `n - 1` and generation `n`.
//!
//! - A **source** cuts checkpoint `n` every `--checkpoint-interval`, on its own clock:
//!   it writes its reader's position (everything it emitted so far, all of it stamped in
//!   generations before `n`), then moves its capability to generation `n`.
//! - A **grouping** holds what arrives stamped in generation `n` or later aside, unapplied,
//!   until its input frontier has passed generation `n - 1`; then every element of the
//!   generations before `n` has arrived, and nothing after: it writes its state (by key
//!   group, with what it holds waiting to be applied) as its part of checkpoint `n`, then
//!   applies what it held aside. Until it has written its part it holds a capability in
//!   generation `n - 1` on each output, so nothing downstream passes `n - 1` before it.
//! - A **side-input step** does the same with its two inputs: side input stamped in
//!   generation `n` or later waits aside, and once both inputs have passed generation
//!   `n - 1` it writes its side view (worker 0's; every worker holds the same) and the main
//!   batches waiting for their side windows, holding a capability in `n - 1` until then.
//! - Process 0's **coordinator**, downstream of every sink, sees generation `n - 1` pass
//!   once every source, grouping and side-input step of every worker has written its
//!   part of `n`; it checks the parts and writes the manifest, last: a checkpoint without its manifest
//!   does not exist.
//!
//! A source or grouping that has finished writes a *final* part, good for every later
//! checkpoint; the coordinator copies it into each.
//!
//! Resuming: every process reads the newest manifest (or `--from-checkpoint`), sources
//! open from their saved positions (`SourceFn::open_from`, at any worker count), and each
//! worker restores the key groups it owns at the new worker count from every part of
//! each grouping. The new run numbers its generations after every checkpoint id the
//! directory holds, so nothing it writes mixes with a crashed run's partial checkpoint,
//! which the coordinator deletes once the new run has completed one of its own.

pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use riffle_engine::keys::KeyGroup;
use riffle_engine::{Batch, Error, Graph, NodeKind, Result};
use serde::{Deserialize, Serialize};

pub use store::Store;

use crate::time::Time;

/// The version of the manifest and part formats this build writes and reads.
pub const FORMAT: u32 = 1;
/// The manifest's name inside a checkpoint's directory, written last.
pub const MANIFEST: &str = "_MANIFEST.json";
/// Bits of the epoch below the generation.
const GENERATION_SHIFT: u32 = 32;

/// The generation an epoch is in.
pub fn generation(epoch: u64) -> u64 {
    epoch >> GENERATION_SHIFT
}

/// The first epoch of generation `g`.
pub fn first_epoch(g: u64) -> u64 {
    g << GENERATION_SHIFT
}

/// The last epoch of generation `g`.
pub fn last_epoch(g: u64) -> u64 {
    first_epoch(g + 1) - 1
}

/// Whether a frontier has passed every time of generation `g` (an empty one has passed all).
pub fn passed_generation(frontier: &[Time], g: u64) -> bool {
    frontier.iter().all(|t| generation(t.epoch) > g)
}

/// A checkpoint's directory name.
pub fn dir_of(id: u64) -> String {
    format!("chk-{id:010}")
}

fn id_of_dir(name: &str) -> Option<u64> {
    name.strip_prefix("chk-")?.parse().ok()
}

/// What a part says beyond its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    /// A cut while running.
    Cut,
    /// A source's cut after a stop was asked for: it read nothing after it.
    Stop,
    /// The step has finished: the part holds for every later checkpoint.
    Final,
}

impl PartKind {
    const ALL: [PartKind; 3] = [PartKind::Cut, PartKind::Stop, PartKind::Final];

    fn suffix(self) -> &'static str {
        match self {
            PartKind::Cut => "",
            PartKind::Stop => ".stop",
            PartKind::Final => ".final",
        }
    }
}

/// The name of a part: `chk-ID/sSTEP-wWORKER[.stop|.final]`, where STEP is the step's
/// index in the graph (names may hold any character).
pub fn part_name(id: u64, step: usize, worker: usize, kind: PartKind) -> String {
    format!("{}/s{step:04}-w{worker:05}{}", dir_of(id), kind.suffix())
}

/// Whether part `name` is of `kind`.
pub fn is_kind(name: &str, kind: PartKind) -> bool {
    match kind {
        PartKind::Cut => !is_kind(name, PartKind::Stop) && !is_kind(name, PartKind::Final),
        _ => name.ends_with(kind.suffix()),
    }
}

/// What a checkpoint holds, written last.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// [`FORMAT`] of the build that wrote it.
    pub format: u32,
    /// The checkpoint's id: the generation it begins.
    pub id: u64,
    /// When it was written, ms since the epoch.
    pub written_ms: i64,
    /// Workers of the run that took it, in all processes.
    pub workers: usize,
    /// The steps that saved something, in graph order: what a resumed pipeline must match.
    pub steps: Vec<StepEntry>,
    /// Every part, by step and worker.
    pub parts: Vec<PartEntry>,
}

/// A step of the pipeline that took a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepEntry {
    /// Its index in the graph.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// `source`, `grouping`, `side input` (a step that reads one) or `sink` (one that
    /// commits at checkpoints).
    pub kind: String,
}

/// One worker's part of one step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartEntry {
    /// The step's index in the graph.
    pub step: usize,
    /// The worker that wrote it.
    pub worker: usize,
    /// Its name in the checkpoint directory.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// A final part carried forward from an earlier checkpoint (the step had finished
    /// before this one): a two-phase-commit sink's was committed with that checkpoint and
    /// is not handed to this one's commit again.
    #[serde(default, skip_serializing_if = "is_false")]
    pub carried: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A grouping's part: its state by key group, and what it held waiting to be applied.
#[derive(Serialize, Deserialize)]
pub struct GroupPart {
    /// [`riffle_engine::runtime::GroupState::snapshot`]'s bytes, by key group.
    pub state: BTreeMap<KeyGroup, Vec<u8>>,
    /// Input waiting for its watermark: key group, the watermark it was sent at (ms), the batch.
    pub waiting: Vec<(KeyGroup, i64, Batch)>,
}

/// A side-input step's part: its side view, and the main batches waiting for their side
/// windows. Every worker holds the whole side view (the side input is broadcast), so
/// worker 0 alone saves it and every worker restores it; main batches are not keyed, and
/// each is restored on one worker.
#[derive(Serialize, Deserialize)]
pub struct SidePart {
    /// [`riffle_engine::runtime::SideParDoInstance::save_view`]'s bytes: in worker 0's part only.
    pub view: Option<Vec<u8>>,
    /// Main batches waiting for their side windows: the event time they were sent at
    /// (ms), the batch.
    pub waiting: Vec<(i64, Batch)>,
}

impl SidePart {
    /// Encodes a part's body.
    pub fn encode(&self) -> Result<Vec<u8>> {
        bincode::serialize(self).map_err(|e| Error::Internal(format!("a side-input step's part does not encode: {e}")))
    }

    /// Decodes a part's body.
    pub fn decode(body: &[u8]) -> Result<SidePart> {
        bincode::deserialize(body)
            .map_err(|e| Error::Config(format!("a side-input step's part of the checkpoint does not decode: {e}")))
    }
}

/// A source's or grouping's part as stored.
#[derive(Serialize, Deserialize)]
struct Part {
    format: u32,
    body: Vec<u8>,
}

/// Encodes a part's body.
pub fn encode_part(body: Vec<u8>) -> Vec<u8> {
    bincode::serialize(&Part { format: FORMAT, body }).expect("a part encodes")
}

/// Decodes a part, naming it when it does not decode.
pub fn decode_part(name: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    let part: Part = bincode::deserialize(bytes)
        .map_err(|e| Error::Config(format!("checkpoint part {name} does not decode ({e}): is it damaged?")))?;
    if part.format != FORMAT {
        return Err(Error::Config(format!(
            "checkpoint part {name} has format {}; this build reads format {FORMAT}",
            part.format
        )));
    }
    Ok(part.body)
}

/// What a job that checkpoints shares between its operators.
#[derive(Debug)]
pub struct Checkpoints {
    /// The checkpoint directory.
    pub store: Store,
    /// How often sources cut.
    pub interval: Duration,
    /// How many completed checkpoints to keep.
    pub retain: u64,
    /// The generation this run starts in: past every id the directory held at start.
    pub start: u64,
    /// The checkpoint resumed from.
    pub resumed: Option<Manifest>,
    /// The steps that take part (sources, groupings, side-input steps and sinks that
    /// commit at checkpoints), as the manifest lists them.
    pub steps: Vec<StepEntry>,
    /// The job's last checkpoint (every part final) is complete.
    completed: std::sync::atomic::AtomicBool,
    /// When this process's first source cut each checkpoint not yet complete.
    cut_at: std::sync::Mutex<BTreeMap<u64, std::time::Instant>>,
}

impl Checkpoints {
    /// Opens `--checkpoint-dir` for `graph`: checks that every step can take part, and
    /// finds the checkpoint to resume from. `None` without the option.
    pub fn open(opts: &crate::RunOptions, graph: &Graph) -> Result<Option<Arc<Checkpoints>>> {
        let Some(url) = &opts.checkpoint_dir else { return Ok(None) };
        let steps = participants(graph)?;
        let store = Store::open(url)?;
        let ids: Vec<u64> = store.list("")?.iter().filter_map(|(n, _)| id_of_dir(n)).collect();
        let start = ids.iter().copied().max().unwrap_or(0);
        let resumed = if opts.fresh {
            if !ids.is_empty() {
                return Err(Error::Config(format!(
                    "--fresh: {url} already holds checkpoints ({}); give an empty --checkpoint-dir, or leave out \
                     --fresh to resume from the latest",
                    ids.len()
                )));
            }
            None
        } else if let Some(id) = opts.from_checkpoint {
            if !ids.contains(&id) {
                return Err(Error::Config(format!("--from-checkpoint {id}: {url} holds no checkpoint {id}")));
            }
            Some(read_manifest(&store, id)?)
        } else {
            latest(&store, &ids)
        };
        if let Some(m) = &resumed {
            check_compatible(m, &steps)?;
            tracing::info!(checkpoint = m.id, dir = %url, workers = m.workers, "resuming from checkpoint");
            eprintln!("riffle: resuming from checkpoint {} in {url} (taken at {} workers)", m.id, m.workers);
        }
        Ok(Some(Arc::new(Checkpoints {
            store,
            interval: opts.checkpoint_interval,
            retain: opts.checkpoint_retain,
            start,
            resumed,
            steps,
            completed: Default::default(),
            cut_at: Default::default(),
        })))
    }

    /// The parts of step `index` in the checkpoint resumed from, every worker's, read.
    pub fn resumed_parts(&self, index: usize) -> Result<Vec<Vec<u8>>> {
        let Some(m) = &self.resumed else { return Ok(Vec::new()) };
        m.parts.iter().filter(|p| p.step == index).map(|p| decode_part(&p.name, &self.store.get(&p.name)?)).collect()
    }

    /// [`Checkpoints::resumed_parts`], each with the worker that wrote it.
    pub fn resumed_parts_by_worker(&self, index: usize) -> Result<Vec<(usize, Vec<u8>)>> {
        let Some(m) = &self.resumed else { return Ok(Vec::new()) };
        m.parts
            .iter()
            .filter(|p| p.step == index)
            .map(|p| Ok((p.worker, decode_part(&p.name, &self.store.get(&p.name)?)?)))
            .collect()
    }

    /// Notes that a source of this process cut checkpoint `id` (the first cut counts).
    pub fn note_cut(&self, id: u64) {
        self.cut_at.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_insert_with(std::time::Instant::now);
    }

    /// How long checkpoint `id` took, from this process's first cut of it to now; forgets
    /// it and those before.
    pub fn took(&self, id: u64) -> Duration {
        let mut cuts = self.cut_at.lock().unwrap_or_else(|p| p.into_inner());
        let took = cuts.get(&id).map_or(Duration::ZERO, |t| t.elapsed());
        cuts.retain(|i, _| *i > id);
        took
    }

    /// Whether the job's last checkpoint (after every input ended) is complete.
    pub fn completed(&self) -> bool {
        self.completed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Marks the job's last checkpoint complete.
    pub fn mark_completed(&self) {
        self.completed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The parts of step `index` in checkpoint `m`, every worker's, read.
    pub fn parts_of(&self, m: &Manifest, index: usize) -> Result<Vec<Vec<u8>>> {
        m.parts.iter().filter(|p| p.step == index).map(|p| decode_part(&p.name, &self.store.get(&p.name)?)).collect()
    }

    /// Makes visible what the two-phase-commit sinks staged for checkpoint `m`: the parts
    /// written for it, not the final ones carried forward (committed with the checkpoint
    /// they were written for, which was committed before this one's manifest was written).
    pub fn commit_sinks(&self, graph: &Graph, m: &Manifest) -> Result<()> {
        for step in self.steps.iter().filter(|s| s.kind == "sink") {
            if let NodeKind::Sink(f) = &graph.nodes()[step.index].kind {
                let staged = m
                    .parts
                    .iter()
                    .filter(|p| p.step == step.index && !p.carried)
                    .map(|p| decode_part(&p.name, &self.store.get(&p.name)?))
                    .collect::<Result<Vec<_>>>()?;
                f.commit_checkpoint(m.id, staged)?;
            }
        }
        Ok(())
    }

    /// Before a resumed run, on process 0: the two-phase-commit sinks commit what the
    /// checkpoint resumed from staged (the run that took it may have stopped half-way),
    /// then drop what was staged after it.
    pub fn recover_sinks(&self, graph: &Graph) -> Result<()> {
        let Some(m) = &self.resumed else { return Ok(()) };
        self.commit_sinks(graph, m)?;
        for step in self.steps.iter().filter(|s| s.kind == "sink") {
            if let NodeKind::Sink(f) = &graph.nodes()[step.index].kind {
                f.recover()?;
            }
        }
        Ok(())
    }

    /// Writes a part of checkpoint `id`.
    pub fn write_part(&self, id: u64, step: usize, worker: usize, kind: PartKind, body: Vec<u8>) -> Result<()> {
        self.store.put(&part_name(id, step, worker, kind), encode_part(body))
    }
}

/// The steps that save something, or an error naming a step that cannot.
fn participants(graph: &Graph) -> Result<Vec<StepEntry>> {
    let mut steps = Vec::new();
    for (index, node) in graph.nodes().iter().enumerate() {
        let kind = match &node.kind {
            NodeKind::Source(s) if s.checkpoints() => "source",
            NodeKind::Source(_) => {
                return Err(Error::Config(format!(
                    "step '{}': this source cannot resume from a checkpoint, so the job cannot take checkpoints \
                     (leave out --checkpoint-dir)",
                    node.name
                )));
            }
            NodeKind::Group(_) => "grouping",
            NodeKind::SideParDo(_) => "side input",
            NodeKind::Sink(s) if s.commits() && s.commits_at_checkpoints() => "sink",
            NodeKind::Sink(s) if s.commits() => {
                return Err(Error::Config(format!(
                    "step '{}': this sink, as configured, commits its output once, at the end of the job (a Parquet \
                     sink in an overwrite mode replaces the output in one step), so it cannot commit at checkpoints: \
                     use --output-mode append or error-if-exists, or leave out --checkpoint-dir",
                    node.name
                )));
            }
            _ => continue,
        };
        steps.push(StepEntry { index, name: node.name.clone(), kind: kind.into() });
    }
    Ok(steps)
}

/// The newest checkpoint whose manifest reads; a damaged or missing one is skipped with a warning.
fn latest(store: &Store, ids: &[u64]) -> Option<Manifest> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    for id in ids.into_iter().rev() {
        let has_manifest = store.list(&dir_of(id)).is_ok_and(|l| l.iter().any(|(n, _)| n == MANIFEST));
        if !has_manifest {
            // The run that cut it stopped before every part was in: it never existed.
            tracing::debug!(checkpoint = id, "checkpoint {id} is incomplete (no manifest)");
            continue;
        }
        match read_manifest(store, id) {
            Ok(m) => return Some(m),
            Err(e) => tracing::warn!(checkpoint = id, "skipping checkpoint {id}: {e}"),
        }
    }
    None
}

/// What `riffle checkpoints list` says of one checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    /// Its id.
    pub id: u64,
    /// Its manifest, or why there is none that reads (a crashed run's partial checkpoint,
    /// or a damaged manifest).
    pub manifest: std::result::Result<Manifest, String>,
    /// The bytes of everything in its directory.
    pub bytes: u64,
}

/// Every checkpoint in `store`, oldest first.
pub fn list(store: &Store) -> Result<Vec<Listed>> {
    let mut ids: Vec<u64> = store.list("")?.iter().filter_map(|(n, _)| id_of_dir(n)).collect();
    ids.sort_unstable();
    ids.into_iter()
        .map(|id| {
            let entries = store.list(&dir_of(id))?;
            let manifest = if entries.iter().any(|(n, _)| n == MANIFEST) {
                read_manifest(store, id).map_err(|e| e.to_string())
            } else {
                Err("incomplete: no manifest (the run that cut it stopped first)".to_string())
            };
            Ok(Listed { id, manifest, bytes: entries.iter().map(|(_, b)| b).sum() })
        })
        .collect()
}

/// Reads checkpoint `id`'s manifest.
pub fn read_manifest(store: &Store, id: u64) -> Result<Manifest> {
    let name = format!("{}/{MANIFEST}", dir_of(id));
    let bytes = store.get(&name).map_err(|e| Error::Config(format!("checkpoint {id} has no manifest: {e}")))?;
    let m: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Config(format!("checkpoint {id}'s manifest does not parse ({e})")))?;
    if m.format != FORMAT || m.id != id {
        return Err(Error::Config(format!("checkpoint {id}'s manifest has format {} and id {}", m.format, m.id)));
    }
    Ok(m)
}

/// Whether the pipeline that took `m` is this one: the same steps, of the same kinds, in
/// the same order. Otherwise an error naming the first step that differs.
fn check_compatible(m: &Manifest, steps: &[StepEntry]) -> Result<()> {
    for (i, saved) in m.steps.iter().enumerate() {
        match steps.get(i) {
            Some(now) if now == saved => {}
            Some(now) => {
                return Err(Error::Config(format!(
                    "checkpoint {} was taken by another pipeline: its {} step '{}' is now {} step '{}'; start from \
                     another --checkpoint-dir, or with --fresh on an empty one",
                    m.id, saved.kind, saved.name, now.kind, now.name
                )));
            }
            None => {
                return Err(Error::Config(format!(
                    "checkpoint {} was taken by another pipeline: it has {} step '{}', which this one does not",
                    m.id, saved.kind, saved.name
                )));
            }
        }
    }
    if let Some(extra) = steps.get(m.steps.len()) {
        return Err(Error::Config(format!(
            "checkpoint {} was taken by another pipeline: this one has {} step '{}', which it does not",
            m.id, extra.kind, extra.name
        )));
    }
    Ok(())
}

/// Process 0's side of a checkpoint: writes checkpoint `id`'s manifest once every part is
/// in, carrying final parts forward from `previous`, then deletes what retention and
/// crashed runs left.
pub fn commit(c: &Checkpoints, id: u64, workers: usize, previous: Option<&Manifest>) -> Result<Manifest> {
    let started = std::time::Instant::now();
    let dir = dir_of(id);
    let listed = c.store.list(&dir)?;
    let mut parts = Vec::new();
    for step in &c.steps {
        for worker in 0..workers {
            let size = |name: &str| listed.iter().find(|(n, _)| name.ends_with(&format!("/{n}"))).map(|(_, s)| *s);
            let found =
                PartKind::ALL.iter().map(|k| part_name(id, step.index, worker, *k)).find_map(|n| Some((size(&n)?, n)));
            let (name, bytes, carried) = match found {
                Some((bytes, name)) => (name, bytes, false),
                None => {
                    // Finished before this checkpoint: its final part holds for it too.
                    let earlier = previous
                        .and_then(|m| m.parts.iter().find(|p| p.step == step.index && p.worker == worker))
                        .filter(|p| is_kind(&p.name, PartKind::Final))
                        .ok_or_else(|| {
                            Error::Internal(format!(
                                "checkpoint {id}: no part from step '{}' on worker {worker}",
                                step.name
                            ))
                        })?;
                    let fin = part_name(id, step.index, worker, PartKind::Final);
                    c.store.copy(&earlier.name, &fin)?;
                    (fin, earlier.bytes, true)
                }
            };
            parts.push(PartEntry { step: step.index, worker, name, bytes, carried });
        }
    }
    let manifest =
        Manifest { format: FORMAT, id, written_ms: crate::status::now_ms(), workers, steps: c.steps.clone(), parts };
    c.store.put(&format!("{dir}/{MANIFEST}"), serde_json::to_vec_pretty(&manifest).expect("a manifest encodes"))?;
    tracing::info!(checkpoint = id, ms = started.elapsed().as_millis() as u64, "checkpoint written");
    clean(c, id)?;
    Ok(manifest)
}

/// Deletes the checkpoints before `id` that have no manifest (a crashed run's) and the
/// completed ones beyond the newest `retain`.
fn clean(c: &Checkpoints, id: u64) -> Result<()> {
    let mut ids: Vec<u64> = c.store.list("")?.iter().filter_map(|(n, _)| id_of_dir(n)).filter(|i| *i < id).collect();
    ids.sort_unstable();
    let mut kept = 1;
    for old in ids.into_iter().rev() {
        let complete = c.store.list(&dir_of(old))?.iter().any(|(n, _)| n == MANIFEST);
        if complete && kept < c.retain {
            kept += 1;
            continue;
        }
        c.store.delete_all(&dir_of(old))?;
    }
    Ok(())
}
