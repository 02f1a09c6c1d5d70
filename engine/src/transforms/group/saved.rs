//! Saving a grouping's state by key group, and restoring it at any worker count
//! (DESIGN.md 4 and 5): what [`GroupState::snapshot`] and [`GroupState::restore`] do for
//! each of the states.
//!
//! Each state writes, per key group, what its keys hold: everything that decides its
//! future panes (accumulators, pane counts, trigger states, sessions, the combined
//! timestamps of what the panes hold). What summarizes those entries (indexes by firing
//! time, the counts and holds of a window, processing-time timers) is not saved: restoring
//! rebuilds it the way arriving elements build it, so it cannot disagree with the entries.
//! A group's entries are written in the order of their keys' encodings, so the same state
//! saves as the same bytes whatever order a hash map holds it in.

use super::*;

/// The encoding of a key, to order saved entries by.
fn encode<K: Key>(k: &K) -> Vec<u8> {
    bitcode::serialize(k).expect("internal error: encoding a key to order it failed")
}

/// Splits `entries` by the key group of their keys, each group's in the order of the keys'
/// encodings.
fn by_group<'a, K: Key, T>(entries: impl IntoIterator<Item = (&'a K, T)>) -> BTreeMap<KeyGroup, Vec<T>> {
    let mut groups: BTreeMap<KeyGroup, Vec<(Vec<u8>, T)>> = BTreeMap::new();
    for (k, t) in entries {
        groups.entry(KeyGroup::of(k)).or_default().push((encode(k), t));
    }
    groups
        .into_iter()
        .map(|(group, mut entries)| {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            (group, entries.into_iter().map(|(_, t)| t).collect())
        })
        .collect()
}

/// Writes one group's part of a state. A group is owned by one worker, so it is written
/// once: a second write would make bytes that decode as neither.
fn store<T: Serialize>(step: &str, group: KeyGroup, saved: &T, out: &mut BTreeMap<KeyGroup, Vec<u8>>) -> Result<()> {
    let bytes = bitcode::serialize(saved)
        .map_err(|e| Error::Internal(format!("step '{step}': saving the state of {group:?}: {e}")))?;
    match out.entry(group) {
        std::collections::btree_map::Entry::Occupied(_) => {
            Err(Error::Internal(format!("step '{step}': two workers saved the state of {group:?}")))
        }
        std::collections::btree_map::Entry::Vacant(v) => {
            v.insert(bytes);
            Ok(())
        }
    }
}

/// Reads one group's part of a state back.
fn load<T: DeserializeOwned>(step: &str, group: KeyGroup, bytes: &[u8]) -> Result<T> {
    bitcode::deserialize(bytes).map_err(|e| {
        Error::Config(format!(
            "step '{step}': the saved state of {group:?} does not read as this step's state ({e}); \
             was the snapshot taken of another version of the pipeline?"
        ))
    })
}

/// A snapshot is taken after `fire`, with nothing waiting to go out.
fn nothing_waits(step: &str, waiting: bool) -> Result<()> {
    if waiting {
        return Err(Error::Internal(format!("step '{step}': a snapshot with output still waiting")));
    }
    Ok(())
}

/// One key group's part of a [`KeyedState`]: `K` and `A` are references when saving,
/// owned when restoring.
#[derive(Serialize, Deserialize)]
struct SavedKeyed<K, A> {
    pending: Vec<SavedPane<K, A>>,
    fired: Vec<SavedCounts<K, A>>,
    /// See [`KeyedState::default_settled`].
    default_settled: bool,
}

/// A pending pane's entries of one group.
#[derive(Serialize, Deserialize)]
struct SavedPane<K, A> {
    pane: PaneKey,
    /// Where the group's entries hold the watermark.
    hold: EventTime,
    /// Per key, the accumulator and the combined timestamp of the elements that count
    /// towards the output timestamp.
    keys: Vec<(K, A, Option<EventTime>)>,
}

/// The pane counts of one group in a window that may still get late panes.
#[derive(Serialize, Deserialize)]
struct SavedCounts<K, A> {
    /// (expiry, window).
    window: (EventTime, Window),
    /// Per key, the panes fired and (accumulating) what they held.
    keys: Vec<(K, u64, Option<A>)>,
}

impl<K, A> Default for SavedKeyed<K, A> {
    fn default() -> Self {
        SavedKeyed { pending: Vec::new(), fired: Vec::new(), default_settled: false }
    }
}

impl<G: Grouping> KeyedState<G> {
    pub(super) fn save(&self, out: &mut BTreeMap<KeyGroup, Vec<u8>>) -> Result<()> {
        nothing_waits(&self.step, self.dropped.kept.as_ref().is_some_and(|k| !k.is_empty()))?;
        let mut groups: BTreeMap<KeyGroup, SavedKeyed<&G::K, &G::Acc>> = BTreeMap::new();
        for (pane_key, pane) in &self.pending {
            let entries = pane.keys.iter().map(|(k, (acc, combined))| (k, (k, acc, *combined)));
            for (group, entries) in by_group(entries) {
                let hold = match self.combiner {
                    // The pane holds at the earliest counted timestamp of any of its keys,
                    // and each key keeps only its latest: every group takes the pane's
                    // hold, which is never later than its own.
                    TimestampCombiner::Latest => pane.hold,
                    // Each key's combined timestamp is its earliest counted one.
                    _ => entries.iter().filter_map(|e| e.2).fold(pane_key.fire_at, EventTime::min),
                };
                groups.entry(group).or_default().pending.push(SavedPane { pane: *pane_key, hold, keys: entries });
            }
        }
        for (window, counts) in &self.fired {
            let entries = counts.iter().map(|(k, (n, total))| (k, (k, *n, total.as_ref())));
            for (group, entries) in by_group(entries) {
                groups.entry(group).or_default().fired.push(SavedCounts { window: *window, keys: entries });
            }
        }
        if let (Some(k), true) = (&self.owns_default, self.default_settled) {
            groups.entry(KeyGroup::of(k)).or_default();
        }
        for (group, mut saved) in groups {
            saved.default_settled = self.default_settled;
            store(&self.step, group, &saved, out)?;
        }
        Ok(())
    }

    pub(super) fn load(&mut self, group: KeyGroup, bytes: &[u8]) -> Result<()> {
        let saved: SavedKeyed<G::K, G::Acc> = load(&self.step, group, bytes)?;
        for SavedPane { pane: key, hold, keys } in saved.pending {
            let pane = self.pending.entry(key).or_insert_with(|| PaneState::new(key.fire_at));
            pane.hold = pane.hold.min(hold);
            pane.keys.extend(keys.into_iter().map(|(k, acc, combined)| (k, (acc, combined))));
        }
        for SavedCounts { window, keys } in saved.fired {
            let counts = self.fired.entry(window).or_default();
            counts.extend(keys.into_iter().map(|(k, n, total)| (k, (n, total))));
        }
        self.default_settled |= saved.default_settled;
        Ok(())
    }
}

/// One key group's part of a [`TriggeredState`]: `K`, `C` (a cell) and `L` (a key's live
/// windows) are references when saving, owned when restoring.
#[derive(Serialize, Deserialize)]
struct SavedTriggered<K, C, L> {
    windows: Vec<SavedWindow<K, C>>,
    /// Merging windows: each key's live windows.
    live: Vec<(K, L)>,
}

/// A window's cells of one group.
#[derive(Serialize, Deserialize)]
struct SavedWindow<K, C> {
    /// (end, window).
    key: WindowKey,
    /// Whether its end-of-window firing was evaluated.
    evaluated: bool,
    /// Per key, its cell: accumulator, trigger state, pane counts, hold, last pane.
    cells: Vec<(K, C)>,
}

impl<K, C, L> Default for SavedTriggered<K, C, L> {
    fn default() -> Self {
        SavedTriggered { windows: Vec::new(), live: Vec::new() }
    }
}

impl<G: Grouping> TriggeredState<G> {
    pub(super) fn save(&self, out: &mut BTreeMap<KeyGroup, Vec<u8>>) -> Result<()> {
        let late_waits = self.dropped.kept.as_ref().is_some_and(|k| !k.is_empty());
        nothing_waits(&self.step, !self.ready.is_empty() || late_waits)?;
        type Saving<'a, G> = SavedTriggered<
            &'a <G as Grouping>::K,
            &'a Cell<<G as Grouping>::Acc, <G as Grouping>::Out>,
            &'a Vec<Window>,
        >;
        let mut groups: BTreeMap<KeyGroup, Saving<'_, G>> = BTreeMap::new();
        for (key, window) in &self.windows {
            for (group, cells) in by_group(window.cells.iter().map(|(k, cell)| (k, (k, cell)))) {
                groups.entry(group).or_default().windows.push(SavedWindow {
                    key: *key,
                    evaluated: window.evaluated,
                    cells,
                });
            }
        }
        if let Some((_, live)) = &self.merging {
            for (group, live) in by_group(live.iter().map(|(k, windows)| (k, (k, windows)))) {
                groups.entry(group).or_default().live = live;
            }
        }
        for (group, saved) in groups {
            store(&self.step, group, &saved, out)?;
        }
        Ok(())
    }

    pub(super) fn load(&mut self, group: KeyGroup, bytes: &[u8]) -> Result<()> {
        type Loading<G> =
            SavedTriggered<<G as Grouping>::K, Cell<<G as Grouping>::Acc, <G as Grouping>::Out>, Vec<Window>>;
        let saved: Loading<G> = load(&self.step, group, bytes)?;
        // Every timer a restored trigger waits on, even one the clock has passed since:
        // the next `fire` finds it due.
        let dawn = ProcessingTime::from_millis(i64::MIN);
        for SavedWindow { key, evaluated, cells } in saved.windows {
            let new = !self.windows.contains_key(&key);
            let window = self.windows.entry(key).or_insert_with(|| TriggeredWindow::reusing(&mut self.spare));
            // Every worker evaluates a window's end at the same watermark, so the groups of
            // one window agree; were they not to, evaluating again is the safe side.
            window.evaluated = evaluated && (new || window.evaluated);
            for (k, cell) in cells {
                schedule_timer(&mut self.timers, &self.trigger, key, &k, &cell.trigger, dawn);
                window.put(k, cell);
            }
        }
        if let Some((_, live)) = &mut self.merging {
            live.extend(saved.live);
        }
        Ok(())
    }
}

/// One key group's part of a [`MergingState`]: per key, its sessions with their
/// accumulators (references when saving, owned when restoring).
type SavedSessions<K, S> = Vec<(K, S)>;

impl<G: Grouping> MergingState<G> {
    pub(super) fn save(&self, out: &mut BTreeMap<KeyGroup, Vec<u8>>) -> Result<()> {
        nothing_waits(&self.step, self.dropped.kept.as_ref().is_some_and(|k| !k.is_empty()))?;
        for (group, sessions) in by_group(self.sessions.iter().map(|(k, s)| (k, (k, s)))) {
            let saved: SavedSessions<&G::K, &Vec<(Window, G::Acc)>> = sessions;
            store(&self.step, group, &saved, out)?;
        }
        Ok(())
    }

    pub(super) fn load(&mut self, group: KeyGroup, bytes: &[u8]) -> Result<()> {
        let saved: SavedSessions<G::K, Vec<(Window, G::Acc)>> = load(&self.step, group, bytes)?;
        for (k, sessions) in saved {
            // Each session fires when the watermark passes its end, as when it was made.
            for (w, _) in &sessions {
                let keys = self.due.entry(w.max_timestamp()).or_default();
                if keys.last() != Some(&k) {
                    keys.push(k.clone());
                }
            }
            self.sessions.entry(k).or_default().extend(sessions);
        }
        Ok(())
    }
}
