//! The state of a grouping under the default trigger: pending panes by when they fire.

use super::*;

/// Per key of one window: how many panes it has fired, and (accumulating) what they held.
pub(super) type FiredPanes<K, Acc> = FastMap<K, (u64, Option<Acc>)>;

/// When a pending pane fires, and which window it is for: an on-time pane fires when the
/// watermark passes the window's end, a late pane when it passes the watermark its
/// elements arrived at. Ordered by firing time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub(super) struct PaneKey {
    pub(super) fire_at: EventTime,
    pub(super) window: Window,
    pub(super) late: bool,
}

/// A pending pane: per key, the accumulator and the combined timestamp of the elements
/// that count towards the output timestamp (`None`: none did); and the earliest of those
/// timestamps, where the pane holds the watermark (its end, for end-of-window).
pub(super) struct PaneState<K, Acc> {
    pub(super) keys: Stamped<K, Acc>,
    pub(super) hold: EventTime,
}

impl<K, Acc> PaneState<K, Acc> {
    pub(super) fn new(hold: EventTime) -> Self {
        PaneState { keys: FastMap::default(), hold }
    }
}

/// One worker's state: pending panes (ordered by when they fire) with accumulators per
/// key, and, while a window may still get late data, how many panes each key has had.
pub(super) struct KeyedState<G: Grouping> {
    pub(super) step: Arc<str>,
    pub(super) grouping: Arc<G>,
    pub(super) pending: BTreeMap<PaneKey, PaneState<G::K, G::Acc>>,
    pub(super) combiner: TimestampCombiner,
    /// Panes fired per key, by (expiry, window), with everything fired so far when
    /// accumulating; only kept with allowed lateness.
    pub(super) fired: BTreeMap<(EventTime, Window), FiredPanes<G::K, G::Acc>>,
    pub(super) accumulating: bool,
    pub(super) lateness_ms: i64,
    pub(super) dropped: Dropped<G>,
    /// For `combine_globally`, on the worker owning its one key: that key, whose empty
    /// global window outputs the combiner's default.
    pub(super) owns_default: Option<G::K>,
    /// Whether no default is due: the global window got input (its pane is the output),
    /// or the default went out. Saved with the default key's group, so that a restored
    /// owner neither emits the default twice nor forgets it.
    pub(super) default_settled: bool,
}

impl<G: Grouping> KeyedState<G> {
    /// Where an element of window `w` that arrived at `arrival` goes, or None if too late.
    #[inline]
    fn pane_for(&self, w: Window, arrival: Watermark) -> Option<PaneKey> {
        let end = w.max_timestamp();
        if arrival.is_past(end.plus_millis(self.lateness_ms)) {
            return None;
        }
        let late = arrival.is_past(end);
        Some(PaneKey { fire_at: if late { arrival.0 } else { end }, window: w, late })
    }
}

impl<G: Grouping> GroupState for KeyedState<G> {
    fn size(&self) -> StateSize {
        let entries: usize = self.pending.values().map(|p| p.keys.len()).sum();
        let entry = std::mem::size_of::<(G::K, (G::Acc, Option<EventTime>))>();
        StateSize { panes: self.pending.len() as u64, entries: entries as u64, bytes: (entries * entry) as u64 }
    }

    fn insert(&mut self, input: Batch, arrival: Watermark) -> Result<()> {
        let input = input.try_into_elements::<(G::K, G::Shuffled)>()?;
        let step = self.step.clone();
        catch_unwind(AssertUnwindSafe(|| {
            // The common case: one window, end-of-window timestamps: one lookup per batch.
            if let (Some(w), TimestampCombiner::EndOfWindow) = (input.uniform_window(), self.combiner) {
                self.default_settled |= w == Window::Global;
                let Some(pane) = self.pane_for(w, arrival) else {
                    self.dropped.all(input);
                    return;
                };
                let g = &self.grouping;
                let state = self.pending.entry(pane).or_insert_with(|| PaneState::new(pane.fire_at));
                for (k, x) in input.into_values() {
                    g.fold(&mut state.keys.entry(k).or_insert_with(|| (g.create(), None)).0, x);
                }
            } else {
                // Runs of one window (a lifted shuffle sends its partials window by
                // window): the pane is looked up once per run.
                let (values, stamps) = input.into_columns();
                let runs = stamps.window_runs(values.len());
                let mut values = values.into_iter().enumerate();
                for (w, n) in runs {
                    self.default_settled |= w == Window::Global;
                    let Some(pane) = self.pane_for(w, arrival) else {
                        for (i, (k, x)) in values.by_ref().take(n) {
                            let wv = WindowedValue {
                                value: (k, x),
                                timestamp: stamps.timestamp(i),
                                window: w,
                                pane: PaneInfo::NO_FIRING,
                            };
                            self.dropped.one(wv);
                        }
                        continue;
                    };
                    let (g, combiner) = (&self.grouping, self.combiner);
                    let state = self.pending.entry(pane).or_insert_with(|| PaneState::new(pane.fire_at));
                    for (i, (k, x)) in values.by_ref().take(n) {
                        let ts = stamps.timestamp(i);
                        let (acc, combined) = state.keys.entry(k).or_insert_with(|| (g.create(), None));
                        g.fold(acc, x);
                        if combiner.fold(combined, ts, w.max_timestamp(), arrival) {
                            state.hold = state.hold.min(ts);
                        }
                    }
                }
            }
        }))
        .map_err(|p| Error::from_panic(&step, p, None))
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
        let first = match self.combiner {
            TimestampCombiner::EndOfWindow => self.pending.keys().next().map(|p| p.fire_at),
            // Few panes are pending at once; their holds are not ordered like their keys.
            _ => self.pending.values().map(|p| p.hold).min(),
        };
        match (&self.owns_default, self.default_settled) {
            (Some(_), false) => {
                Some(first.map_or(EventTime::END_OF_GLOBAL_WINDOW, |t| t.min(EventTime::END_OF_GLOBAL_WINDOW)))
            }
            _ => first,
        }
    }

    fn fire(&mut self, watermark: Watermark, out: &mut Vec<(EventTime, Batch)>) -> Result<()> {
        let g = &self.grouping;
        let step = &self.step;
        let lateness = self.lateness_ms;
        while let Some(entry) = self.pending.first_entry() {
            let pane_key = *entry.key();
            if !watermark.is_past(pane_key.fire_at) {
                break;
            }
            let accs = entry.remove().keys;
            let (window, end) = (pane_key.window, pane_key.window.max_timestamp());
            let expiry = end.plus_millis(lateness);
            // Without allowed lateness no pane can follow the on-time one: no bookkeeping.
            let mut counts = (lateness > 0).then(|| self.fired.entry((expiry, window)).or_default());
            // Output batches by output timestamp; one, at the window's end, by default.
            let mut batches = BTreeMap::new();
            for (k, (mut acc, combined)) in accs {
                let index = match counts.as_mut() {
                    Some(c) => {
                        let (n, total) = c.entry(k.clone()).or_insert((0, None));
                        if self.accumulating {
                            // This pane holds the earlier panes' elements too.
                            if let Some(earlier) = total.take() {
                                g.merge_acc(&mut acc, earlier);
                            }
                            *total = Some(acc.clone());
                        }
                        *n += 1;
                        *n - 1
                    }
                    None => 0,
                };
                let pane = PaneInfo {
                    timing: if pane_key.late { Timing::Late } else { Timing::OnTime },
                    index,
                    non_speculative_index: index as i64,
                    is_first: index == 0,
                    // Last when no more panes can come: no lateness, or fired at expiry.
                    is_last: lateness == 0 || pane_key.fire_at >= expiry,
                    retraction: false,
                };
                let v = catch_unwind(AssertUnwindSafe(|| g.extract(acc)))
                    .map_err(|p| Error::from_panic(step, p, Some(truncated_debug(&k, 200))))?;
                let ts = combined.unwrap_or(end);
                let batch: &mut Elements<_> = batches.entry(ts).or_default();
                batch.push((k, v), ts, window, pane);
                if batch.len() == OUTPUT_BATCH {
                    out.push((if pane_key.late { pane_key.fire_at } else { ts }, Batch::new(std::mem::take(batch))));
                }
            }
            for (ts, batch) in batches {
                if !batch.is_empty() {
                    out.push((if pane_key.late { pane_key.fire_at } else { ts }, Batch::new(batch)));
                }
            }
        }
        // Windows past their allowed lateness will get no more panes: forget their counts.
        while let Some(entry) = self.fired.first_entry() {
            if !watermark.is_past(entry.key().0) {
                break;
            }
            entry.remove();
        }
        if watermark.is_past(EventTime::END_OF_GLOBAL_WINDOW) && !self.default_settled {
            self.default_settled = true;
            if let Some(k) = self.owns_default.clone() {
                if g.default_on_empty() {
                    let v = catch_unwind(AssertUnwindSafe(|| g.extract(g.create())))
                        .map_err(|p| Error::from_panic(step, p, None))?;
                    let mut batch = Elements::new();
                    let end = EventTime::END_OF_GLOBAL_WINDOW;
                    batch.push((k, v), end, Window::Global, PaneInfo::ON_TIME_AND_ONLY_FIRING);
                    out.push((end, Batch::new(batch)));
                }
            }
        }
        Ok(())
    }
}
