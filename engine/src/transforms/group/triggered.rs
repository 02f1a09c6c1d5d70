//! The state of a grouping under an explicit trigger (or the default one run as Beam's
//! state machine): a trigger state, accumulator and pane counts per key and window.

use super::*;

/// An output element of a grouping: a key and its pane's value.
pub(super) type Output<G> = (<G as Grouping>::K, <G as Grouping>::Out);

/// One key's state in one window under an explicit trigger; saved whole in checkpoints.
#[derive(Serialize, Deserialize)]
pub(super) struct Cell<Acc, Out> {
    pub(super) acc: Acc,
    /// Elements arrived since the last pane.
    pub(super) fresh: bool,
    pub(super) trigger: TriggerState,
    pub(super) panes: u64,
    pub(super) non_speculative: i64,
    pub(super) on_time_done: bool,
    /// The combined timestamp of the pane's elements that count towards its output
    /// timestamp (on time, not behind the watermark they came at); `None`: none did, or
    /// the combiner is end-of-window.
    pub(super) hold: Option<EventTime>,
    /// Retracting: the last pane output (value, timestamp, pane), to retract before the
    /// next. Boxed: only the retracting mode has one, and cells are many (smaller cells,
    /// fewer cache misses per element).
    pub(super) last: Option<Box<(Out, EventTime, PaneInfo)>>,
}

impl<Acc, Out> Cell<Acc, Out> {
    fn new(acc: Acc, trigger: TriggerState) -> Self {
        Cell { acc, fresh: false, trigger, panes: 0, non_speculative: 0, on_time_done: false, hold: None, last: None }
    }
}

/// One window's cells under an explicit trigger. Cells go in and out only through
/// [`TriggeredWindow::take`] and [`TriggeredWindow::put`], which keep the counts and
/// holds that summarize them.
pub(super) struct TriggeredWindow<K, Acc, Out> {
    pub(super) cells: FastMap<K, Cell<Acc, Out>>,
    /// Whether the firing at the end of the window has been evaluated.
    pub(super) evaluated: bool,
    /// Cells with elements no pane has held yet, and whose trigger has not finished:
    /// they need a final pane when the window expires.
    pub(super) unfired: usize,
    /// The cells' holds, as a multiset: the window holds the watermark at the least.
    pub(super) holds: BTreeMap<EventTime, usize>,
}

impl<K: Key, Acc, Out> TriggeredWindow<K, Acc, Out> {
    pub(super) fn new() -> Self {
        TriggeredWindow { cells: FastMap::default(), evaluated: false, unfired: 0, holds: BTreeMap::new() }
    }

    /// A window whose cells go in a map a closed window left behind, if there is one: a
    /// window holds a cell per key, and growing a fresh map for every window costs more
    /// than its cells (rehashing, and fresh pages from the allocator).
    pub(super) fn reusing(spare: &mut Vec<FastMap<K, Cell<Acc, Out>>>) -> Self {
        TriggeredWindow { cells: spare.pop().unwrap_or_default(), ..Self::new() }
    }

    fn take(&mut self, k: &K) -> Option<Cell<Acc, Out>> {
        let cell = self.cells.remove(k)?;
        if cell.fresh && !cell.trigger.finished {
            self.unfired -= 1;
        }
        if let Some(h) = cell.hold {
            match self.holds.get_mut(&h) {
                Some(n) if *n > 1 => *n -= 1,
                _ => {
                    self.holds.remove(&h);
                }
            }
        }
        Some(cell)
    }

    pub(super) fn put(&mut self, k: K, cell: Cell<Acc, Out>) {
        if cell.fresh && !cell.trigger.finished {
            self.unfired += 1;
        }
        if let Some(h) = cell.hold {
            *self.holds.entry(h).or_default() += 1;
        }
        self.cells.insert(k, cell);
    }

    /// Runs `f` on key `k`'s cell where it lies (None: the key has no cell here), and
    /// brings the counts and holds that summarize the cells up to date with what `f` did:
    /// the same bookkeeping as a [`TriggeredWindow::take`] and a
    /// [`TriggeredWindow::put`], without moving the cell out and back.
    #[inline]
    fn update<R>(&mut self, k: &K, f: impl FnOnce(&mut Cell<Acc, Out>) -> R) -> Option<R> {
        let cell = self.cells.get_mut(k)?;
        let (was_unfired, old_hold) = (cell.fresh && !cell.trigger.finished, cell.hold);
        let r = f(cell);
        let (unfired, hold) = (cell.fresh && !cell.trigger.finished, cell.hold);
        match (was_unfired, unfired) {
            (false, true) => self.unfired += 1,
            (true, false) => self.unfired -= 1,
            _ => {}
        }
        if old_hold != hold {
            if let Some(h) = old_hold {
                match self.holds.get_mut(&h) {
                    Some(n) if *n > 1 => *n -= 1,
                    _ => {
                        self.holds.remove(&h);
                    }
                }
            }
            if let Some(h) = hold {
                *self.holds.entry(h).or_default() += 1;
            }
        }
        Some(r)
    }

    /// Where this window (of end `end`, expiring at `expiry`) holds the watermark.
    fn hold(&self, end: EventTime, expiry: EventTime) -> Option<EventTime> {
        let at_end = (!self.evaluated).then_some(end);
        let at_expiry = (self.unfired > 0).then_some(expiry);
        [at_end, at_expiry, self.holds.keys().next().copied()].into_iter().flatten().min()
    }
}

/// One window's cells, by key.
pub(super) type Cells<G> = FastMap<<G as Grouping>::K, Cell<<G as Grouping>::Acc, <G as Grouping>::Out>>;

/// Windows by (end, window).
pub(super) type WindowKey = (EventTime, Window);

/// A grouping's windows under a trigger, by (end, window).
pub(super) type Windows<G> =
    BTreeMap<WindowKey, TriggeredWindow<<G as Grouping>::K, <G as Grouping>::Acc, <G as Grouping>::Out>>;

/// Processing-time timers: when, and which cell.
pub(super) type Timers<K> = BTreeMap<ProcessingTime, Vec<(WindowKey, K)>>;

/// A merging window function, and each key's live windows.
pub(super) type Merging<K> = (Arc<dyn WindowFn>, FastMap<K, Vec<Window>>);

/// One worker's state under an explicit trigger: a trigger state machine, accumulator and
/// pane counts per key and window. Triggers are evaluated after every element (on the
/// watermark the element was sent at), when the watermark passes a window's end, and when
/// the clock reaches a processing-time trigger's timer; a window's cells with unfired
/// elements fire a final pane when it expires (its end plus the allowed lateness), and its
/// state is freed. Under a merging window function (sessions), a key's windows merge as
/// elements arrive, with their accumulators, pane counts and trigger states
/// ([`Trigger::merge_states`]).
pub(super) struct TriggeredState<G: Grouping> {
    pub(super) step: Arc<str>,
    pub(super) grouping: Arc<G>,
    pub(super) trigger: Arc<Trigger>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) lateness_ms: i64,
    pub(super) accumulating: bool,
    pub(super) retracting: bool,
    pub(super) combiner: TimestampCombiner,
    pub(super) dropped: Dropped<G>,
    pub(super) windows: Windows<G>,
    /// Merging windows: the window function and each key's live windows.
    pub(super) merging: Option<Merging<G::K>>,
    /// Processing-time timers: when, and which cell. Entries go stale when a cell fires or
    /// merges; firing checks the cell's trigger again.
    pub(super) timers: Timers<G::K>,
    /// Panes fired, waiting for `fire` to hand them out, by emission time.
    pub(super) ready: BTreeMap<EventTime, Elements<Output<G>>>,
    /// Emptied cell maps of closed windows, for the next windows ([`SPARE_MAPS`] at most).
    pub(super) spare: Vec<Cells<G>>,
}

/// How many emptied cell maps a triggered state keeps for reuse: about as many windows
/// as open and close together.
const SPARE_MAPS: usize = 4;

impl<G: Grouping> TriggeredState<G> {
    /// Makes a pane of `cell` and queues it; `watermark`: the input watermark now;
    /// `expiring`: no more panes can follow.
    fn pane(
        &mut self,
        k: &G::K,
        cell: &mut Cell<G::Acc, G::Out>,
        w: Window,
        watermark: Watermark,
        expiring: bool,
    ) -> Result<()> {
        let g = &self.grouping;
        let end = w.max_timestamp();
        let past_end = watermark.is_past(end);
        let timing = if !past_end {
            Timing::Early
        } else if !cell.on_time_done {
            cell.on_time_done = true;
            Timing::OnTime
        } else {
            Timing::Late
        };
        let index = cell.panes;
        cell.panes += 1;
        let non_speculative_index = if timing == Timing::Early {
            -1
        } else {
            cell.non_speculative += 1;
            cell.non_speculative - 1
        };
        let acc = if self.accumulating { cell.acc.clone() } else { std::mem::replace(&mut cell.acc, g.create()) };
        cell.fresh = false;
        let v = catch_unwind(AssertUnwindSafe(|| g.extract(acc)))
            .map_err(|p| Error::from_panic(&self.step, p, Some(truncated_debug(k, 200))))?;
        let is_last = cell.trigger.finished || expiring;
        let pane = PaneInfo { timing, index, non_speculative_index, is_first: index == 0, is_last, retraction: false };
        // Early and on-time panes go out at their timestamp, where the window held the
        // watermark; late ones at the watermark they fired at.
        let ts = cell.hold.take().unwrap_or(end);
        let at = if timing == Timing::Late { watermark.0.max(ts) } else { ts };
        let ready = self.ready.entry(at).or_default();
        if self.retracting {
            // The previous pane is taken back first, in the same batch, so a grouping
            // downstream never holds both.
            if let Some((old, old_ts, old_pane)) = cell.last.take().map(|b| *b) {
                ready.push((k.clone(), old), old_ts, w, PaneInfo { retraction: true, ..old_pane });
            }
            cell.last = Some(Box::new((v.clone(), ts, pane)));
        }
        ready.push((k.clone(), v), ts, w, pane);
        Ok(())
    }

    /// Fires `cell` if its trigger says so at processing time `now` (read once per batch:
    /// a clock read per element costs more than the rest of the trigger); the cell is out
    /// of its window meanwhile.
    fn maybe_fire(
        &mut self,
        k: &G::K,
        cell: &mut Cell<G::Acc, G::Out>,
        w: Window,
        watermark: Watermark,
        now: ProcessingTime,
    ) -> Result<bool> {
        let past_end = watermark.is_past(w.max_timestamp());
        if !self.trigger.should_fire(&cell.trigger, past_end, now) {
            return Ok(false);
        }
        self.trigger.on_fire(&mut cell.trigger, past_end, now);
        self.pane(k, cell, w, watermark, false)?;
        Ok(true)
    }

    /// Registers the cell's processing-time timer, if its trigger has one.
    fn schedule(&mut self, key: WindowKey, k: &G::K, cell: &Cell<G::Acc, G::Out>, now: ProcessingTime) {
        schedule_timer(&mut self.timers, &self.trigger, key, k, &cell.trigger, now);
    }

    /// Evaluates the firing at the end of window `key` once: every key whose trigger fires
    /// when the watermark passes the end.
    fn end_of_window(&mut self, key: WindowKey, watermark: Watermark) -> Result<()> {
        let Some(window) = self.windows.get_mut(&key) else { return Ok(()) };
        if window.evaluated {
            return Ok(());
        }
        window.evaluated = true;
        let keys: Vec<G::K> = window.cells.keys().cloned().collect();
        let now = self.clock.now();
        for k in keys {
            let mut cell = self.windows.get_mut(&key).and_then(|win| win.take(&k)).expect("a listed cell");
            self.maybe_fire(&k, &mut cell, key.1, watermark, now)?;
            self.windows.get_mut(&key).expect("a live window").put(k, cell);
        }
        Ok(())
    }

    /// Merges key `k`'s windows after window `w` was added to them; returns the window
    /// `w` is now part of.
    fn merge_windows(&mut self, k: &G::K, w: Window, arrival: Watermark) -> Window {
        let Some((window_fn, by_key)) = &mut self.merging else { return w };
        let live = by_key.entry(k.clone()).or_default();
        if !live.contains(&w) {
            live.push(w);
        }
        let merges = window_fn.merge(live);
        let mut target = w;
        for (from, to) in merges {
            live.retain(|x| !from.contains(x));
            live.push(to);
            if from.contains(&w) {
                target = to;
            }
            let mut cells = Vec::new();
            for f in &from {
                let fk = (f.max_timestamp(), *f);
                if let Some(win) = self.windows.get_mut(&fk) {
                    if let Some(mut cell) = win.take(k) {
                        // A merged-away window's last pane no longer stands: take it back.
                        if let Some((old, old_ts, old_pane)) = cell.last.take().map(|b| *b) {
                            let retraction = PaneInfo { retraction: true, ..old_pane };
                            self.ready.entry(arrival.0.max(old_ts)).or_default().push(
                                (k.clone(), old),
                                old_ts,
                                *f,
                                retraction,
                            );
                        }
                        cells.push(cell);
                    }
                    if win.cells.is_empty() {
                        self.windows.remove(&fk);
                    }
                }
            }
            let key = (to.max_timestamp(), to);
            let existing = self.windows.get_mut(&key).and_then(|win| win.take(k));
            cells.extend(existing);
            let g = &self.grouping;
            let states: Vec<&TriggerState> = cells.iter().map(|c| &c.trigger).collect();
            let past_end = arrival.is_past(to.max_timestamp());
            let trigger = self.trigger.merge_states(&states, past_end);
            let mut merged = Cell::new(g.create(), trigger);
            // The merged window has had its on-time pane only if every part had, and the
            // watermark has passed the merged window's end too.
            merged.on_time_done = past_end && cells.iter().all(|c| c.on_time_done);
            // The merged window is a new window for pane info, as in Beam (its pane info
            // tracker starts afresh): its next pane is the first, index 0, whatever the
            // merged-away windows had fired.
            for c in cells {
                g.merge_acc(&mut merged.acc, c.acc);
                merged.fresh |= c.fresh;
                merged.hold = [merged.hold, c.hold].into_iter().flatten().min();
            }
            self.windows.entry(key).or_insert_with(TriggeredWindow::new).put(k.clone(), merged);
        }
        target
    }

    /// Forgets window `w` of key `k` (merging windows only).
    fn forget(&mut self, k: &G::K, w: Window) {
        if let Some((_, by_key)) = &mut self.merging {
            if let Some(live) = by_key.get_mut(k) {
                live.retain(|x| *x != w);
                if live.is_empty() {
                    by_key.remove(k);
                }
            }
        }
    }
}

impl<G: Grouping> TriggeredState<G> {
    /// Adds a run of `n` elements of window `w` that arrived at `arrival`, without
    /// merging: the next `n` of `values`, whose metadata is `stamps` from index `from`.
    /// The window is looked up once, and each element updates its key's cell where it
    /// lies; only an element that makes its cell fire takes the cell out for the pane.
    #[allow(clippy::too_many_arguments)]
    fn insert_run(
        &mut self,
        w: Window,
        values: &mut std::vec::IntoIter<(G::K, G::Shuffled)>,
        from: usize,
        n: usize,
        stamps: &Stamps,
        arrival: Watermark,
        now: ProcessingTime,
    ) -> Result<()> {
        /// What applying one element to its cell did: small, so the per-element loop moves
        /// no large values around (a panic's error waits beside it).
        #[derive(PartialEq)]
        enum Applied {
            Held,
            Fires,
            Closed,
            Panicked,
        }
        let key = (w.max_timestamp(), w);
        let past_end = arrival.is_past(key.0);
        let timed = self.trigger.uses_processing_time();
        // Before the end, an element can leave the trigger alone (see the method).
        let inert = !past_end && self.trigger.ignores_elements_before_end();
        let mut i = from;
        let end = from + n;
        let mut panicked = None;
        while i < end {
            let TriggeredState { step, grouping: g, trigger, combiner, dropped, windows, timers, spare, .. } = self;
            let window = windows.entry(key).or_insert_with(|| TriggeredWindow::reusing(spare));
            let mut fires = None;
            while i < end {
                let (k, x) = values.next().expect("a run within the batch");
                let (ts, retraction) = (stamps.timestamp(i), stamps.pane(i).retraction);
                i += 1;
                let mut x = Some(x);
                let mut apply = |cell: &mut Cell<G::Acc, G::Out>| {
                    if cell.trigger.finished {
                        return Applied::Closed;
                    }
                    let x = x.take().expect("the element");
                    let folded = catch_unwind(AssertUnwindSafe(|| {
                        if retraction { g.retract(&mut cell.acc, x) } else { g.fold(&mut cell.acc, x) }
                    }));
                    if let Err(p) = folded {
                        panicked = Some(p);
                        return Applied::Panicked;
                    }
                    cell.fresh = true;
                    combiner.fold(&mut cell.hold, ts, key.0, arrival);
                    if inert {
                        return Applied::Held;
                    }
                    trigger.on_element(&mut cell.trigger, 1, now);
                    if trigger.should_fire(&cell.trigger, past_end, now) { Applied::Fires } else { Applied::Held }
                };
                let applied = window.update(&k, &mut apply).unwrap_or_else(|| {
                    let mut cell = Cell::new(g.create(), trigger.new_state());
                    // A cell whose first element came after the end never held the
                    // watermark there, so it can have no on-time pane: its first pane is
                    // late (Beam's PaneInfoTracker, which sees the output watermark past
                    // the window).
                    cell.on_time_done = past_end;
                    window.put(k.clone(), cell);
                    window.update(&k, &mut apply).expect("the cell just put")
                });
                match applied {
                    Applied::Held if timed => {
                        schedule_timer(timers, trigger, key, &k, &window.cells[&k].trigger, now);
                    }
                    Applied::Held => {}
                    Applied::Fires => {
                        fires = Some(k);
                        break;
                    }
                    Applied::Closed => {
                        // The trigger is done: the window is closed for this key.
                        let (x, pane) = (x.take().expect("the element"), stamps.pane(i - 1));
                        dropped.one(WindowedValue { value: (k, x), timestamp: ts, window: w, pane });
                    }
                    Applied::Panicked => {
                        let p = panicked.take().expect("a panic");
                        return Err(Error::from_panic(step, p, None));
                    }
                }
            }
            // The element just applied makes its cell fire: out of the window for the
            // pane, then on with the rest of the run.
            let Some(k) = fires else { break };
            let mut cell = self.windows.get_mut(&key).and_then(|win| win.take(&k)).expect("the cell just updated");
            self.maybe_fire(&k, &mut cell, w, arrival, now)?;
            self.schedule(key, &k, &cell, now);
            self.windows.get_mut(&key).expect("the window just used").put(k, cell);
        }
        Ok(())
    }

    /// Adds one element under a merging window function: its window merges with the
    /// key's live windows first.
    fn insert_merging(
        &mut self,
        wv: WindowedValue<(G::K, G::Shuffled)>,
        arrival: Watermark,
        now: ProcessingTime,
    ) -> Result<()> {
        let (w, ts) = (wv.window, wv.timestamp);
        let (k, x) = wv.value;
        let target = self.merge_windows(&k, w, arrival);
        let key = (target.max_timestamp(), target);
        let g = self.grouping.clone();
        let window = self.windows.entry(key).or_insert_with(TriggeredWindow::new);
        let mut cell = window.take(&k).unwrap_or_else(|| {
            let mut cell = Cell::new(g.create(), self.trigger.new_state());
            // As in insert_run: a cell that starts after the end has no on-time pane.
            cell.on_time_done = arrival.is_past(key.0);
            cell
        });
        if cell.trigger.finished {
            // The trigger is done: the window is closed for this key.
            window.put(k.clone(), cell);
            self.dropped.one(WindowedValue { value: (k, x), timestamp: ts, window: w, pane: wv.pane });
            return Ok(());
        }
        catch_unwind(AssertUnwindSafe(|| {
            if wv.pane.retraction { g.retract(&mut cell.acc, x) } else { g.fold(&mut cell.acc, x) }
        }))
        .map_err(|p| Error::from_panic(&self.step, p, None))?;
        cell.fresh = true;
        self.combiner.fold(&mut cell.hold, ts, key.0, arrival);
        self.trigger.on_element(&mut cell.trigger, 1, now);
        self.maybe_fire(&k, &mut cell, target, arrival, now)?;
        self.schedule(key, &k, &cell, now);
        self.windows.get_mut(&key).expect("the window just used").put(k, cell);
        Ok(())
    }
}

impl<G: Grouping> GroupState for TriggeredState<G> {
    fn size(&self) -> StateSize {
        let entries: usize = self.windows.values().map(|w| w.cells.len()).sum();
        let entry = std::mem::size_of::<(G::K, Cell<G::Acc, G::Out>)>();
        StateSize { panes: self.windows.len() as u64, entries: entries as u64, bytes: (entries * entry) as u64 }
    }

    fn insert(&mut self, input: Batch, arrival: Watermark) -> Result<()> {
        let input = input.try_into_elements::<(G::K, G::Shuffled)>()?;
        let now = self.clock.now();
        // These elements were sent at `arrival`: the firings at the ends of the windows it
        // has passed hold only what came before them, so they happen first.
        let passed: Vec<WindowKey> = self
            .windows
            .iter()
            .take_while(|((end, _), _)| arrival.is_past(*end))
            .filter(|(_, win)| !win.evaluated)
            .map(|(key, _)| *key)
            .collect();
        for key in passed {
            self.end_of_window(key, arrival)?;
        }
        let (values, stamps) = input.into_columns();
        let runs = stamps.window_runs(values.len());
        let mut values = values.into_iter();
        let mut from = 0;
        for (w, n) in runs {
            // Lateness is judged on the element's own window, before any merging, as Beam does.
            if arrival.is_past(w.max_timestamp().plus_millis(self.lateness_ms)) {
                for (i, value) in (from..from + n).zip(values.by_ref()) {
                    self.dropped.one(WindowedValue {
                        value,
                        timestamp: stamps.timestamp(i),
                        window: w,
                        pane: stamps.pane(i),
                    });
                }
            } else if self.merging.is_none() {
                self.insert_run(w, &mut values, from, n, &stamps, arrival, now)?;
            } else {
                for (i, value) in (from..from + n).zip(values.by_ref()) {
                    let wv = WindowedValue { value, timestamp: stamps.timestamp(i), window: w, pane: stamps.pane(i) };
                    self.insert_merging(wv, arrival, now)?;
                }
            }
            from += n;
        }
        Ok(())
    }

    /// A trigger that counts elements (early panes every n, a late pane per late
    /// element) makes which pane an element lands in depend on the order of the elements
    /// sent at one watermark; one that waits only on the watermark and the clock does not,
    /// over fixed and sliding windows.
    ///
    /// On the wall clock a processing-time trigger fires on what has arrived by then,
    /// which no order of application can make deterministic: such a state takes elements
    /// as they come, like Beam's runners. A scripted clock moves between epochs, so the
    /// state takes each complete epoch in turn and its panes are deterministic.
    ///
    /// Merging windows depend on the order too: an element can merge into a session whose
    /// trigger has finished (and be dropped with it) or, if another element came first,
    /// start a session of its own.
    fn same_watermark(&self) -> SameWatermark {
        let ordered = self.trigger.counts_elements() || self.merging.is_some();
        match (ordered, self.trigger.uses_processing_time(), self.clock.is_scripted()) {
            (false, _, _) | (true, true, false) => SameWatermark::AsTheyCome,
            (true, false, _) => SameWatermark::Whole,
            (true, true, true) => SameWatermark::WholePerEpoch,
        }
    }

    /// Adds the elements sent at `arrival` in a canonical order (timestamp, window,
    /// retraction first, then the value's encoding), so that the panes do not depend on
    /// which sender's batch came first, nor on how many workers the senders were.
    fn insert_all(&mut self, input: Vec<Batch>, arrival: Watermark) -> Result<()> {
        if self.same_watermark() == SameWatermark::AsTheyCome {
            return input.into_iter().try_for_each(|b| self.insert(b, arrival));
        }
        let mut all: Vec<WindowedValue<(G::K, G::Shuffled)>> = Vec::new();
        for b in input {
            all.extend(b.try_into_elements::<(G::K, G::Shuffled)>()?.into_iter_windowed());
        }
        all.sort_by_cached_key(|wv| {
            let bytes = bitcode::serialize(&wv.value).expect("internal error: encoding a value to order it failed");
            (wv.timestamp, wv.window, !wv.pane.retraction, bytes)
        });
        self.insert(Batch::new(all.into_iter().collect::<Elements<_>>()), arrival)
    }

    fn late_dropped(&self) -> u64 {
        self.dropped.count
    }

    /// See `saved.rs`.
    fn snapshot(&self, out: &mut BTreeMap<KeyGroup, Vec<u8>>) -> Result<()> {
        self.save(out)
    }

    fn restore(&mut self, group: KeyGroup, bytes: &[u8]) -> Result<()> {
        self.load(group, bytes)
    }

    fn take_late(&mut self) -> Option<Batch> {
        self.dropped.take()
    }

    fn earliest_pending(&self) -> Option<EventTime> {
        let ready = self.ready.keys().next().copied();
        // Few windows are live at once.
        let windows = self.windows.iter().filter_map(|((end, _), w)| w.hold(*end, end.plus_millis(self.lateness_ms)));
        ready.into_iter().chain(windows).min()
    }

    fn next_timer(&self) -> Option<ProcessingTime> {
        self.timers.keys().next().copied()
    }

    fn fire(&mut self, watermark: Watermark, out: &mut Vec<(EventTime, Batch)>) -> Result<()> {
        // Processing-time timers that are due.
        let now = self.clock.now();
        while let Some(entry) = self.timers.first_entry() {
            if *entry.key() > now {
                break;
            }
            for (key, k) in entry.remove() {
                let Some(mut cell) = self.windows.get_mut(&key).and_then(|win| win.take(&k)) else { continue };
                self.maybe_fire(&k, &mut cell, key.1, watermark, now)?;
                self.schedule(key, &k, &cell, now);
                self.windows.get_mut(&key).expect("a live window").put(k, cell);
            }
        }
        let keys: Vec<WindowKey> =
            self.windows.keys().take_while(|(end, _)| watermark.is_past(*end)).copied().collect();
        for key in keys {
            self.end_of_window(key, watermark)?;
            if watermark.is_past(key.0.plus_millis(self.lateness_ms)) {
                // The window closes: what no pane has held yet fires as the final pane.
                let mut window = self.windows.remove(&key).expect("a listed window");
                for (k, mut cell) in window.cells.drain() {
                    if cell.fresh && !cell.trigger.finished {
                        self.pane(&k, &mut cell, key.1, watermark, true)?;
                    }
                    self.forget(&k, key.1);
                }
                if self.spare.len() < SPARE_MAPS {
                    self.spare.push(window.cells);
                }
            }
        }
        for (at, batch) in std::mem::take(&mut self.ready) {
            out.push((at, Batch::new(batch)));
        }
        Ok(())
    }
}

/// Registers the processing-time timer of a cell whose trigger state is `state`, if its
/// trigger has one (a free function, so a caller holding a cell in place can call it).
pub(super) fn schedule_timer<K: Key>(
    timers: &mut Timers<K>,
    trigger: &Trigger,
    key: WindowKey,
    k: &K,
    state: &TriggerState,
    now: ProcessingTime,
) {
    if let Some(t) = trigger.next_timer(state, now) {
        let due = timers.entry(t).or_default();
        if due.last().is_none_or(|(wk, dk)| *wk != key || dk != k) {
            due.push((key, k.clone()));
        }
    }
}
