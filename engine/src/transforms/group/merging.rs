//! The state of a grouping under a merging window function (sessions) with the default
//! trigger and no allowed lateness.

use super::*;

/// One worker's state under a merging window function: each key's disjoint windows with
/// their accumulators, and an index of window ends so firing need not scan every key.
pub(super) struct MergingState<G: Grouping> {
    pub(super) step: Arc<str>,
    pub(super) grouping: Arc<G>,
    pub(super) lateness_ms: i64,
    pub(super) dropped: Dropped<G>,
    pub(super) window_fn: Arc<dyn WindowFn>,
    pub(super) sessions: FastMap<G::K, Vec<(Window, G::Acc)>>,
    /// Keys by the end (max timestamp) of one of their windows. Entries go stale when a
    /// window merges into a later one; firing skips those.
    pub(super) due: BTreeMap<EventTime, Vec<G::K>>,
}

impl<G: Grouping> MergingState<G> {
    fn add(&mut self, k: G::K, window: Window, x: G::Shuffled) {
        let g = &self.grouping;
        let windows = self.sessions.entry(k.clone()).or_default();
        let mut acc = g.create();
        g.fold(&mut acc, x);
        match windows.iter_mut().find(|(w, _)| *w == window) {
            Some((_, existing)) => g.merge_acc(existing, acc),
            None => windows.push((window, acc)),
        }
        let current: Vec<Window> = windows.iter().map(|(w, _)| *w).collect();
        let mut ends = vec![window.max_timestamp()];
        for (from, to) in self.window_fn.merge(&current) {
            let mut merged = g.create();
            windows.retain_mut(|(w, a)| {
                if from.contains(w) {
                    g.merge_acc(&mut merged, std::mem::replace(a, g.create()));
                    false
                } else {
                    true
                }
            });
            windows.push((to, merged));
            ends.push(to.max_timestamp());
        }
        for end in ends {
            if windows.iter().any(|(w, _)| w.max_timestamp() == end) {
                let keys = self.due.entry(end).or_default();
                if keys.last() != Some(&k) {
                    keys.push(k.clone());
                }
            }
        }
    }
}

impl<G: Grouping> GroupState for MergingState<G> {
    fn size(&self) -> StateSize {
        let sessions: usize = self.sessions.values().map(Vec::len).sum();
        let bytes = sessions * std::mem::size_of::<(Window, G::Acc)>()
            + self.sessions.len() * std::mem::size_of::<(G::K, Vec<(Window, G::Acc)>)>();
        StateSize { panes: sessions as u64, entries: sessions as u64, bytes: bytes as u64 }
    }

    fn insert(&mut self, input: Batch, arrival: Watermark) -> Result<()> {
        let input = input.try_into_elements::<(G::K, G::Shuffled)>()?;
        let step = self.step.clone();
        catch_unwind(AssertUnwindSafe(|| {
            for wv in input.into_iter_windowed() {
                // Lateness is judged on the element's own window, before merging, as Beam does.
                if arrival.is_past(wv.window.max_timestamp().plus_millis(self.lateness_ms)) {
                    self.dropped.one(wv);
                    continue;
                }
                let (k, x) = wv.value;
                self.add(k, wv.window, x);
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
        self.due.keys().next().copied()
    }

    fn fire(&mut self, watermark: Watermark, out: &mut Vec<(EventTime, Batch)>) -> Result<()> {
        while let Some(entry) = self.due.first_entry() {
            let end = *entry.key();
            if !watermark.is_past(end) {
                break;
            }
            let keys = entry.remove();
            let mut batch = Elements::new();
            for k in keys {
                let Some(windows) = self.sessions.get_mut(&k) else { continue };
                let mut i = 0;
                while i < windows.len() {
                    if windows[i].0.max_timestamp() == end {
                        let (w, acc) = windows.swap_remove(i);
                        let g = &self.grouping;
                        let v = catch_unwind(AssertUnwindSafe(|| g.extract(acc)))
                            .map_err(|p| Error::from_panic(&self.step, p, Some(truncated_debug(&k, 200))))?;
                        batch.push((k.clone(), v), end, w, PaneInfo::ON_TIME_AND_ONLY_FIRING);
                    } else {
                        i += 1;
                    }
                }
                if windows.is_empty() {
                    self.sessions.remove(&k);
                }
            }
            if !batch.is_empty() {
                out.push((end, Batch::new(batch)));
            }
        }
        Ok(())
    }
}
