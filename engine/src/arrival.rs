//! Input applied in watermark order: what makes a grouping's panes independent of which
//! worker's batch happened to arrive first.
//!
//! After a shuffle, a grouping receives batches from every worker, each sent at the
//! watermark of the split it was read from, and they arrive in any order. A grouping that
//! applied them as they came would fire a window as soon as one sender's batch was past
//! its end, and an element on its way from a slower sender, on time against its own
//! watermark, would then be late or land in another pane: the panes would depend on
//! thread scheduling.
//!
//! So a grouping holds what arrives in an [`ArrivalOrder`], by the watermark it was sent
//! at, and applies it in watermark order once nothing sent earlier can still arrive: the
//! runner's input frontier (timely's progress tracking) says when. Before the elements
//! sent at watermark `w` are applied, the state is told the watermark is `w`
//! ([`GroupState::fire`]), so every firing sees exactly the elements sent before it,
//! wherever they came from. The same idea as timely's own frontier-driven operators and
//! differential's arrangements, which apply updates at a time once the frontier has passed it.
//!
//! Elements sent at the *same* watermark come from different senders in any order. A
//! state whose panes do not depend on that order (sums under the default trigger) takes
//! them as they come, even while the frontier is still at that watermark. A state whose
//! panes do (count triggers, a late pane per element) waits until the frontier has passed
//! it, and is then handed all of them at once to put in a canonical order
//! ([`SameWatermark`]). A state with processing-time triggers is also handed what was
//! sent in each epoch once that epoch is complete, one epoch at a time: its timers must
//! see what arrived before the clock moved, and a scripted clock moves between epochs.
//!
//! # Memory
//! What waits here is bounded by how far senders run ahead of the slowest one, which the
//! sources' pacing bounds. A bounded source holds its watermark at the minimum until it
//! ends, so its elements are applied as they come, except in a state that needs whole
//! watermarks, which then holds them until the input ends.
//!
//! [`GroupState::fire`]: crate::runtime::GroupState::fire
//! [`GroupState::insert_all`]: crate::runtime::GroupState::insert_all

use std::collections::BTreeMap;

use crate::batch::Batch;
use crate::runtime::SameWatermark;
use crate::time::{EventTime, Watermark};

/// Batches handed over together, with what the runner keeps to be allowed to emit their
/// consequences later (`H`: timely capabilities, say).
#[derive(Debug)]
pub struct Arrived<H> {
    /// What the runner holds for these batches (for a part of one watermark's batches,
    /// copies of what it holds for all of them).
    pub holds: Vec<H>,
    /// The batches, in the order they arrived.
    pub batches: Vec<Batch>,
}

/// What the runner knows of its input frontier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputFrontier {
    /// The least event time anything can still be sent at.
    pub watermark: Watermark,
    /// The least epoch anything can still be sent at, at that watermark (`None`: the
    /// input is complete).
    pub epoch: Option<u64>,
}

/// What waits at one watermark.
#[derive(Debug)]
struct Waiting<H> {
    holds: Vec<H>,
    /// Batches by the epoch they were sent in.
    batches: BTreeMap<u64, Vec<Batch>>,
}

/// A grouping's input waiting for its turn, by the watermark it was sent at.
#[derive(Debug)]
pub struct ArrivalOrder<H> {
    waiting: BTreeMap<EventTime, Waiting<H>>,
    elements: usize,
}

impl<H> Default for ArrivalOrder<H> {
    fn default() -> Self {
        ArrivalOrder { waiting: BTreeMap::new(), elements: 0 }
    }
}

impl<H: Clone> ArrivalOrder<H> {
    /// An empty order.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes `batch`, sent at `arrival` in `epoch`; returns what the runner holds for that
    /// watermark, so it can add to it.
    pub fn arrive(&mut self, arrival: Watermark, epoch: u64, batch: Batch) -> &mut Vec<H> {
        self.elements += batch.len();
        let waiting =
            self.waiting.entry(arrival.0).or_insert_with(|| Waiting { holds: Vec::new(), batches: BTreeMap::new() });
        waiting.batches.entry(epoch).or_default().push(batch);
        &mut waiting.holds
    }

    /// The next batches the state may take, in watermark order, now that the input
    /// frontier is at `frontier`: everything sent at a watermark the frontier has passed,
    /// and at the frontier's watermark what `rule` allows.
    pub fn next_ready(&mut self, frontier: InputFrontier, rule: SameWatermark) -> Option<(Watermark, Arrived<H>)> {
        let mut first = self.waiting.first_entry()?;
        let at = *first.key();
        let passed = frontier.watermark.is_past(at);
        if !passed && frontier.watermark.0 < at {
            return None;
        }
        let batches = match (rule, passed) {
            (SameWatermark::AsTheyCome, _) | (SameWatermark::Whole, true) => {
                std::mem::take(&mut first.get_mut().batches).into_values().flatten().collect()
            }
            (SameWatermark::Whole, false) => return None,
            (SameWatermark::WholePerEpoch, _) => {
                let epoch = first.get_mut().batches.first_entry().expect("a watermark waits with batches");
                if !passed && frontier.epoch.is_some_and(|e| *epoch.key() >= e) {
                    return None;
                }
                epoch.remove()
            }
        };
        let holds = if first.get().batches.is_empty() { first.remove().holds } else { first.get().holds.clone() };
        self.elements -= batches.iter().map(Batch::len).sum::<usize>();
        Some((Watermark(at), Arrived { holds, batches }))
    }

    /// What the runner holds, for every waiting watermark (to move it forward).
    pub fn holds_mut(&mut self) -> impl Iterator<Item = &mut Vec<H>> {
        self.waiting.values_mut().map(|w| &mut w.holds)
    }

    /// Every batch that waits, with the watermark it was sent at (for a checkpoint).
    pub fn batches(&self) -> impl Iterator<Item = (Watermark, &Batch)> {
        self.waiting.iter().flat_map(|(at, w)| w.batches.values().flatten().map(move |b| (Watermark(*at), b)))
    }

    /// How many elements wait.
    pub fn waiting_elements(&self) -> usize {
        self.elements
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Drops everything (the job failed).
    pub fn clear(&mut self) {
        self.waiting.clear();
        self.elements = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::element::Elements;
    use crate::{PaneInfo, Window};

    fn batch(n: usize) -> Batch {
        Batch::new(Elements::uniform(vec![0u8; n], EventTime::from_millis(0), Window::Global, PaneInfo::NO_FIRING))
    }

    fn wm(ms: i64) -> Watermark {
        Watermark(EventTime::from_millis(ms))
    }

    fn at(ms: i64, epoch: Option<u64>) -> InputFrontier {
        InputFrontier { watermark: wm(ms), epoch }
    }

    fn lens(arrived: &Arrived<()>) -> Vec<usize> {
        arrived.batches.iter().map(Batch::len).collect()
    }

    #[test]
    fn batches_come_out_by_watermark_once_the_frontier_allows() {
        let mut order = ArrivalOrder::<()>::new();
        order.arrive(wm(20), 0, batch(1));
        order.arrive(wm(10), 0, batch(2)).push(());
        order.arrive(wm(20), 1, batch(3));
        assert_eq!(order.waiting_elements(), 6);
        // The frontier at 10: what was sent at 10 may be applied as it comes, or not
        // until the frontier passes 10 when the state needs every batch at once.
        assert!(order.next_ready(at(10, Some(0)), SameWatermark::Whole).is_none());
        let (w, first) = order.next_ready(at(10, Some(0)), SameWatermark::AsTheyCome).unwrap();
        assert_eq!((w, lens(&first), first.holds.len()), (wm(10), vec![2], 1));
        assert!(order.next_ready(at(15, Some(0)), SameWatermark::AsTheyCome).is_none());
        let (w, second) = order.next_ready(at(21, None), SameWatermark::Whole).unwrap();
        assert_eq!((w, lens(&second)), (wm(20), vec![1, 3]));
        assert!(order.is_empty());
        assert_eq!(order.waiting_elements(), 0);
    }

    #[test]
    fn per_epoch_hands_over_each_complete_epoch_at_the_frontier() {
        let mut order = ArrivalOrder::<()>::new();
        order.arrive(wm(10), 0, batch(1)).push(());
        order.arrive(wm(10), 1, batch(2));
        order.arrive(wm(10), 0, batch(3));
        // Epoch 0 may still bring more at 10.
        assert!(order.next_ready(at(10, Some(0)), SameWatermark::WholePerEpoch).is_none());
        // Epoch 0 is complete: its batches come out, and the hold stays for epoch 1's.
        let (_, first) = order.next_ready(at(10, Some(1)), SameWatermark::WholePerEpoch).unwrap();
        assert_eq!((lens(&first), first.holds.len()), (vec![1, 3], 1));
        assert!(order.next_ready(at(10, Some(1)), SameWatermark::WholePerEpoch).is_none());
        let (_, second) = order.next_ready(at(11, Some(1)), SameWatermark::WholePerEpoch).unwrap();
        assert_eq!((lens(&second), second.holds.len()), (vec![2], 1));
        assert!(order.is_empty());
    }
}
