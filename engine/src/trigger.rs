//! Triggers: when a window's panes fire (Beam's `Trigger`), as state machines a runner
//! drives per key and window.
//!
//! A trigger is data (a tree); its state per key and window is a [`TriggerState`] of the
//! same shape. A runner tells the state about elements ([`Trigger::on_element`]), asks
//! whether to fire given whether the watermark has passed the window's end
//! ([`Trigger::should_fire`]), and, after firing, lets it move on ([`Trigger::on_fire`]).
//! A finished trigger fires no more: the window is closed for that key.
//!
//! Processing time comes in as `now`, read from the job's [`crate::Clock`] by the caller,
//! so the machines themselves never read a clock.

use crate::clock::ProcessingTime;

/// When to fire a window's panes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Fires once the watermark passes the end of the window; before that on every firing
    /// of `early`, after it on every firing of `late` (Beam's `AfterWatermark`). Without
    /// `late` it finishes at the end of the window.
    AfterWatermark {
        /// Fires early panes, repeatedly.
        early: Option<Box<Trigger>>,
        /// Fires late panes, repeatedly.
        late: Option<Box<Trigger>>,
    },
    /// Fires once at least this many elements have arrived (Beam's `AfterPane.elementCountAtLeast`).
    AfterCount(u64),
    /// Fires once this much processing time has passed since the first element of the pane
    /// arrived (Beam's `AfterProcessingTime.pastFirstElementInPane().plusDelayOf(..)`).
    AfterProcessingTime {
        /// The delay after the first element, in milliseconds.
        delay_ms: i64,
    },
    /// Fires whenever the inner trigger would, forever.
    Repeatedly(Box<Trigger>),
    /// The triggers in turn: each fires until it finishes, then the next takes over.
    AfterEach(Vec<Trigger>),
    /// Fires once, when any of the triggers would.
    AfterFirst(Vec<Trigger>),
    /// Fires once, when all of the triggers would.
    AfterAll(Vec<Trigger>),
    /// Fires as the first trigger does, and finishes for good when the second would fire.
    OrFinally(Box<Trigger>, Box<Trigger>),
    /// Never fires; the window's contents come out in one pane when it expires.
    Never,
}

impl Trigger {
    /// Fire when the watermark passes the end of the window.
    pub fn after_watermark() -> Self {
        Trigger::AfterWatermark { early: None, late: None }
    }
    /// Early firings before the end of the window (for `AfterWatermark`).
    ///
    /// # Panics
    /// On a trigger other than `after_watermark()`.
    pub fn with_early_firings(self, early: Trigger) -> Self {
        match self {
            Trigger::AfterWatermark { late, .. } => Trigger::AfterWatermark { early: Some(Box::new(early)), late },
            other => panic!("with_early_firings applies to after_watermark(), not {other:?}"),
        }
    }
    /// Late firings after the end of the window (for `AfterWatermark`).
    ///
    /// # Panics
    /// On a trigger other than `after_watermark()`.
    pub fn with_late_firings(self, late: Trigger) -> Self {
        match self {
            Trigger::AfterWatermark { early, .. } => Trigger::AfterWatermark { early, late: Some(Box::new(late)) },
            other => panic!("with_late_firings applies to after_watermark(), not {other:?}"),
        }
    }
    /// Fire once `n` elements have arrived.
    pub fn after_count(n: u64) -> Self {
        Trigger::AfterCount(n.max(1))
    }
    /// Fire once `delay_ms` of processing time has passed since the pane's first element.
    pub fn after_processing_time(delay_ms: i64) -> Self {
        Trigger::AfterProcessingTime { delay_ms: delay_ms.max(0) }
    }
    /// Fire whenever `t` would, forever.
    pub fn repeatedly(t: Trigger) -> Self {
        Trigger::Repeatedly(Box::new(t))
    }
    /// Fire as `self`, until `until` would fire.
    pub fn or_finally(self, until: Trigger) -> Self {
        Trigger::OrFinally(Box::new(self), Box::new(until))
    }

    /// A fresh state for one key and window.
    pub fn new_state(&self) -> TriggerState {
        let children = match self {
            Trigger::AfterWatermark { early, late } => vec![
                early.as_ref().map_or_else(TriggerState::default, |t| t.new_state()),
                late.as_ref().map_or_else(TriggerState::default, |t| t.new_state()),
            ],
            Trigger::Repeatedly(t) => vec![t.new_state()],
            Trigger::AfterEach(ts) | Trigger::AfterFirst(ts) | Trigger::AfterAll(ts) => {
                ts.iter().map(Trigger::new_state).collect()
            }
            Trigger::OrFinally(a, b) => vec![a.new_state(), b.new_state()],
            Trigger::AfterCount(_) | Trigger::AfterProcessingTime { .. } | Trigger::Never => Vec::new(),
        };
        TriggerState { finished: false, count: 0, step: 0, timer: None, children: children.into_boxed_slice() }
    }

    /// Counts `n` more elements, arrived at processing time `now`.
    pub fn on_element(&self, s: &mut TriggerState, n: u64, now: ProcessingTime) {
        if s.finished {
            return;
        }
        s.count += n;
        match self {
            Trigger::AfterWatermark { early, late } => {
                // Only the phase in force counts: early before the on-time pane, late after.
                let (t, child) = if s.step == 0 { (early, 0) } else { (late, 1) };
                if let Some(t) = t {
                    t.on_element(&mut s.children[child], n, now);
                }
            }
            Trigger::Repeatedly(t) => t.on_element(&mut s.children[0], n, now),
            Trigger::AfterEach(ts) => {
                if let Some(t) = ts.get(s.step) {
                    t.on_element(&mut s.children[s.step], n, now);
                }
            }
            Trigger::AfterFirst(ts) | Trigger::AfterAll(ts) => {
                ts.iter().zip(s.children.iter_mut()).for_each(|(t, c)| t.on_element(c, n, now));
            }
            Trigger::OrFinally(a, b) => {
                a.on_element(&mut s.children[0], n, now);
                b.on_element(&mut s.children[1], n, now);
            }
            Trigger::AfterProcessingTime { delay_ms } => {
                // The delay runs from the first element of the pane.
                s.timer.get_or_insert(now.plus_millis(*delay_ms));
            }
            Trigger::AfterCount(_) | Trigger::Never => {}
        }
    }

    /// Whether to fire now, given whether the watermark has passed the window's end and
    /// the processing time.
    pub fn should_fire(&self, s: &TriggerState, past_end: bool, now: ProcessingTime) -> bool {
        if s.finished {
            return false;
        }
        match self {
            Trigger::AfterWatermark { early, late } => match (s.step, past_end) {
                (0, false) => early.as_ref().is_some_and(|t| t.should_fire(&s.children[0], false, now)),
                (0, true) => true,
                _ => late.as_ref().is_some_and(|t| t.should_fire(&s.children[1], true, now)),
            },
            Trigger::AfterCount(n) => s.count >= *n,
            Trigger::AfterProcessingTime { .. } => s.timer.is_some_and(|t| now >= t),
            Trigger::Repeatedly(t) => t.should_fire(&s.children[0], past_end, now),
            Trigger::AfterEach(ts) => ts.get(s.step).is_some_and(|t| t.should_fire(&s.children[s.step], past_end, now)),
            Trigger::AfterFirst(ts) => ts.iter().zip(s.children.iter()).any(|(t, c)| t.should_fire(c, past_end, now)),
            Trigger::AfterAll(ts) => {
                ts.iter().zip(s.children.iter()).all(|(t, c)| c.finished || t.should_fire(c, past_end, now))
            }
            Trigger::OrFinally(a, b) => {
                a.should_fire(&s.children[0], past_end, now) || b.should_fire(&s.children[1], past_end, now)
            }
            Trigger::Never => false,
        }
    }

    /// Moves on after a firing.
    pub fn on_fire(&self, s: &mut TriggerState, past_end: bool, now: ProcessingTime) {
        match self {
            Trigger::AfterWatermark { early, late } => match (s.step, past_end) {
                // Early firings repeat: the early trigger starts over.
                (0, false) => {
                    if let Some(t) = early {
                        s.children[0] = t.new_state();
                    }
                }
                // The on-time firing: on to the late phase, or done.
                (0, true) => {
                    s.step = 1;
                    s.finished = late.is_none();
                }
                _ => {
                    if let Some(t) = late {
                        s.children[1] = t.new_state();
                    }
                }
            },
            Trigger::AfterCount(_)
            | Trigger::AfterProcessingTime { .. }
            | Trigger::AfterFirst(_)
            | Trigger::AfterAll(_) => s.finished = true,
            Trigger::Repeatedly(t) => {
                t.on_fire(&mut s.children[0], past_end, now);
                if s.children[0].finished {
                    s.children[0] = t.new_state();
                }
            }
            Trigger::AfterEach(ts) => {
                if let Some(t) = ts.get(s.step) {
                    t.on_fire(&mut s.children[s.step], past_end, now);
                    if s.children[s.step].finished {
                        s.step += 1;
                    }
                }
                s.finished = s.step >= ts.len();
            }
            Trigger::OrFinally(a, b) => {
                if b.should_fire(&s.children[1], past_end, now) {
                    s.finished = true;
                } else {
                    a.on_fire(&mut s.children[0], past_end, now);
                    s.finished = s.children[0].finished;
                }
            }
            Trigger::Never => {}
        }
    }

    /// The earliest processing time after `now` at which this trigger could fire by the
    /// clock alone, if it waits on the clock.
    pub fn next_timer(&self, s: &TriggerState, now: ProcessingTime) -> Option<ProcessingTime> {
        if s.finished {
            return None;
        }
        let child = |t: &Option<Box<Trigger>>, i: usize| t.as_ref().and_then(|t| t.next_timer(&s.children[i], now));
        match self {
            Trigger::AfterWatermark { early, late } => {
                if s.step == 0 {
                    child(early, 0)
                } else {
                    child(late, 1)
                }
            }
            Trigger::AfterProcessingTime { .. } => s.timer.filter(|t| *t > now),
            Trigger::Repeatedly(t) => t.next_timer(&s.children[0], now),
            Trigger::AfterEach(ts) => ts.get(s.step).and_then(|t| t.next_timer(&s.children[s.step], now)),
            Trigger::AfterFirst(ts) | Trigger::AfterAll(ts) => {
                ts.iter().zip(s.children.iter()).filter_map(|(t, c)| t.next_timer(c, now)).min()
            }
            Trigger::OrFinally(a, b) => {
                [a.next_timer(&s.children[0], now), b.next_timer(&s.children[1], now)].into_iter().flatten().min()
            }
            Trigger::AfterCount(_) | Trigger::Never => None,
        }
    }

    /// The state of a window merged from windows in states `states` (session windows):
    /// element counts add up, the earliest processing-time timer stays, and a trigger
    /// finished in any of the windows is finished in the merged one (the window stays
    /// closed), except `AfterWatermark`, which is back before its on-time firing unless it
    /// had fired that in every window and the watermark has passed the merged window's end
    /// (Beam's `AfterWatermark.onMerge`).
    ///
    /// # Panics
    /// If `states` is empty.
    pub fn merge_states(&self, states: &[&TriggerState], past_end: bool) -> TriggerState {
        let mut merged = self.new_state();
        merged.count = states.iter().map(|s| s.count).sum();
        merged.timer = states.iter().filter_map(|s| s.timer).min();
        merged.step = states.iter().map(|s| s.step).max().expect("merging at least one state");
        merged.finished = states.iter().any(|s| s.finished);
        let children: Vec<Vec<&TriggerState>> =
            (0..merged.children.len()).map(|i| states.iter().filter_map(|s| s.children.get(i)).collect()).collect();
        match self {
            Trigger::AfterWatermark { early, late } => {
                let all_late = states.iter().all(|s| s.step == 1);
                if !all_late || !past_end {
                    merged.step = 0;
                    merged.finished = false;
                    if let Some(t) = early {
                        merged.children[0] = t.merge_states(&children[0], false);
                    }
                } else if let Some(t) = late {
                    merged.children[1] = t.merge_states(&children[1], true);
                }
            }
            Trigger::AfterEach(ts) => {
                // The sequence resumes at the least advanced of the windows.
                merged.step = states.iter().map(|s| s.step).min().expect("merging at least one state");
                merged.finished = merged.step >= ts.len();
                if let Some(t) = ts.get(merged.step) {
                    let at_step: Vec<&TriggerState> =
                        states.iter().filter(|s| s.step == merged.step).map(|s| &s.children[merged.step]).collect();
                    merged.children[merged.step] = t.merge_states(&at_step, past_end);
                }
            }
            Trigger::Repeatedly(t) => merged.children[0] = t.merge_states(&children[0], past_end),
            Trigger::AfterFirst(ts) | Trigger::AfterAll(ts) => {
                for (i, t) in ts.iter().enumerate() {
                    merged.children[i] = t.merge_states(&children[i], past_end);
                }
            }
            Trigger::OrFinally(a, b) => {
                merged.children[0] = a.merge_states(&children[0], past_end);
                merged.children[1] = b.merge_states(&children[1], past_end);
            }
            Trigger::AfterCount(_) | Trigger::AfterProcessingTime { .. } | Trigger::Never => {}
        }
        merged
    }

    /// Whether the trigger, or any trigger inside it, waits on processing time.
    pub fn uses_processing_time(&self) -> bool {
        match self {
            Trigger::AfterProcessingTime { .. } => true,
            Trigger::AfterWatermark { early, late } => {
                early.iter().chain(late.iter()).any(|t| t.uses_processing_time())
            }
            Trigger::Repeatedly(t) => t.uses_processing_time(),
            Trigger::OrFinally(a, b) => a.uses_processing_time() || b.uses_processing_time(),
            Trigger::AfterEach(ts) | Trigger::AfterFirst(ts) | Trigger::AfterAll(ts) => {
                ts.iter().any(Trigger::uses_processing_time)
            }
            Trigger::AfterCount(_) | Trigger::Never => false,
        }
    }

    /// Whether the trigger, or any trigger inside it, counts elements: only then can the
    /// order of elements that arrive together change which pane each lands in.
    pub fn counts_elements(&self) -> bool {
        match self {
            Trigger::AfterCount(_) => true,
            Trigger::AfterWatermark { early, late } => early.iter().chain(late.iter()).any(|t| t.counts_elements()),
            Trigger::Repeatedly(t) => t.counts_elements(),
            Trigger::OrFinally(a, b) => a.counts_elements() || b.counts_elements(),
            Trigger::AfterEach(ts) | Trigger::AfterFirst(ts) | Trigger::AfterAll(ts) => {
                ts.iter().any(Trigger::counts_elements)
            }
            Trigger::AfterProcessingTime { .. } | Trigger::Never => false,
        }
    }

    /// Whether the trigger can finish (close its window for a key) before the window
    /// expires, after which the window's later elements are dropped: conservatively, any
    /// trigger but one that repeats forever, `Never`, or `after_watermark` with late
    /// firings (which repeat).
    pub fn may_finish(&self) -> bool {
        match self {
            Trigger::Repeatedly(_) | Trigger::Never => false,
            Trigger::AfterWatermark { late, .. } => late.is_none(),
            _ => true,
        }
    }

    /// Whether an element that arrives before the end of its window cannot make this
    /// trigger fire nor change what it does later (`after_watermark()` without early
    /// firings, which waits only on the watermark until then, and `Never`), so a runner
    /// may skip [`Trigger::on_element`] and [`Trigger::should_fire`] for it.
    pub fn ignores_elements_before_end(&self) -> bool {
        matches!(self, Trigger::AfterWatermark { early: None, .. } | Trigger::Never)
    }

    /// A short description for `explain`.
    pub fn describe(&self) -> String {
        format!("{self:?}")
    }
}

/// The state of a [`Trigger`] for one key and window, shaped like the trigger. It is
/// saved in checkpoints with the grouping's state (the trigger itself is part of the step).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TriggerState {
    /// No more firings.
    pub finished: bool,
    count: u64,
    /// AfterEach: which trigger is in force; AfterWatermark: 0 before the on-time pane.
    step: usize,
    /// AfterProcessingTime: when it fires, once the pane has an element.
    timer: Option<ProcessingTime>,
    /// Boxed rather than a `Vec`: a state per key and window, so every byte counts.
    children: Box<[TriggerState]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: ProcessingTime = ProcessingTime::from_millis(0);

    /// Feeds `elements` one at a time (with the watermark past the end after `end_after`
    /// of them), returning after which elements it fired.
    fn fires(t: &Trigger, elements: usize, end_after: usize) -> Vec<usize> {
        let mut s = t.new_state();
        let mut out = Vec::new();
        for i in 1..=elements {
            t.on_element(&mut s, 1, NOW);
            let past = i > end_after;
            if t.should_fire(&s, past, NOW) {
                t.on_fire(&mut s, past, NOW);
                out.push(i);
            }
        }
        out
    }

    #[test]
    fn counts_repeat_and_sequence_as_beam_says() {
        assert_eq!(fires(&Trigger::after_count(2), 6, 99), [2]);
        assert_eq!(fires(&Trigger::repeatedly(Trigger::after_count(2)), 6, 99), [2, 4, 6]);
        let each = Trigger::AfterEach(vec![Trigger::after_count(2), Trigger::after_count(3)]);
        assert_eq!(fires(&each, 9, 99), [2, 5]);
        let first = Trigger::AfterFirst(vec![Trigger::after_count(5), Trigger::after_count(2)]);
        assert_eq!(fires(&first, 9, 99), [2]);
        let all = Trigger::AfterAll(vec![Trigger::after_count(5), Trigger::after_count(2)]);
        assert_eq!(fires(&all, 9, 99), [5]);
        let until = Trigger::repeatedly(Trigger::after_count(1)).or_finally(Trigger::after_count(3));
        assert_eq!(fires(&until, 6, 99), [1, 2, 3]);
        assert_eq!(fires(&Trigger::Never, 6, 2), Vec::<usize>::new());
    }

    #[test]
    fn processing_time_runs_from_the_first_element_of_each_pane() {
        let at = ProcessingTime::from_millis;
        let t = Trigger::repeatedly(Trigger::after_processing_time(100));
        let mut s = t.new_state();
        assert_eq!(t.next_timer(&s, at(0)), None, "no element, no timer");
        t.on_element(&mut s, 1, at(10));
        t.on_element(&mut s, 1, at(50)); // the same pane: the timer stays at 110
        assert_eq!(t.next_timer(&s, at(50)), Some(at(110)));
        assert!(!t.should_fire(&s, false, at(109)));
        assert!(t.should_fire(&s, false, at(110)));
        t.on_fire(&mut s, false, at(110));
        assert_eq!(t.next_timer(&s, at(110)), None, "the next pane has no element yet");
        t.on_element(&mut s, 1, at(200));
        assert_eq!(t.next_timer(&s, at(200)), Some(at(300)));
        assert_eq!(t.next_timer(&s, at(300)), None, "a due timer is not a future wake-up");
    }

    #[test]
    fn merged_states_add_counts_and_keep_the_earliest_timer() {
        let at = ProcessingTime::from_millis;
        let t = Trigger::AfterFirst(vec![Trigger::after_count(3), Trigger::after_processing_time(100)]);
        let (mut a, mut b) = (t.new_state(), t.new_state());
        t.on_element(&mut a, 1, at(0));
        t.on_element(&mut b, 1, at(50));
        assert!(!t.should_fire(&a, false, at(60)) && !t.should_fire(&b, false, at(60)));
        let mut m = t.merge_states(&[&a, &b], false);
        assert_eq!(t.next_timer(&m, at(60)), Some(at(100)));
        t.on_element(&mut m, 1, at(60));
        assert!(t.should_fire(&m, false, at(60)), "1 + 1 + 1 elements reach the count of 3");
    }

    #[test]
    fn merged_after_watermark_is_on_time_again_unless_every_part_was_late_and_the_end_passed() {
        let t = Trigger::after_watermark().with_late_firings(Trigger::after_count(1));
        let (mut a, b) = (t.new_state(), t.new_state());
        t.on_fire(&mut a, true, NOW); // a had its on-time pane; b not
        let m = t.merge_states(&[&a, &b], true);
        assert!(t.should_fire(&m, true, NOW), "the merged window's on-time firing is still due");
        let mut b2 = t.new_state();
        t.on_fire(&mut b2, true, NOW);
        let late = t.merge_states(&[&a, &b2], true);
        assert!(!t.should_fire(&late, true, NOW), "both were late: a late element is needed");
        let closed = Trigger::after_count(1);
        let mut c = closed.new_state();
        closed.on_element(&mut c, 1, NOW);
        closed.on_fire(&mut c, false, NOW);
        assert!(closed.merge_states(&[&c, &closed.new_state()], false).finished, "a closed window stays closed");
    }

    #[test]
    fn after_watermark_fires_early_on_time_and_late() {
        let t = Trigger::after_watermark()
            .with_early_firings(Trigger::after_count(2))
            .with_late_firings(Trigger::after_count(1));
        // Elements 1..4 before the end: early at 2 and 4; element 5 is past the end and the
        // on-time firing takes it; 6 and 7 fire late panes each.
        assert_eq!(fires(&t, 7, 4), [2, 4, 5, 6, 7]);
        // Without late firings it finishes at the end.
        let on_time = Trigger::after_watermark().with_early_firings(Trigger::after_count(2));
        assert_eq!(fires(&on_time, 7, 3), [2, 4]);
    }

    #[test]
    fn a_trigger_that_ignores_elements_before_the_end_fires_the_same_untold() {
        let fires_untold = |t: &Trigger, elements: usize, end_after: usize| {
            let mut s = t.new_state();
            let mut out = Vec::new();
            for i in 1..=elements {
                let past = i > end_after;
                if past {
                    t.on_element(&mut s, 1, NOW);
                }
                if past && t.should_fire(&s, past, NOW) {
                    t.on_fire(&mut s, past, NOW);
                    out.push(i);
                }
            }
            out
        };
        let late = Trigger::after_watermark().with_late_firings(Trigger::after_count(2));
        for t in [Trigger::after_watermark(), late, Trigger::Never] {
            assert!(t.ignores_elements_before_end(), "{t:?}");
            assert_eq!(fires_untold(&t, 9, 4), fires(&t, 9, 4), "{t:?}");
        }
        let early = Trigger::after_watermark().with_early_firings(Trigger::after_count(2));
        assert!(!early.ignores_elements_before_end());
        assert!(!Trigger::repeatedly(Trigger::after_watermark()).ignores_elements_before_end());
    }
}
