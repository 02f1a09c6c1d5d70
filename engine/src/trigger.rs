//! Triggers: when a window's panes fire (Beam's `Trigger`), as state machines a runner
//! drives per key and window.
//!
//! A trigger is data (a tree); its state per key and window is a [`TriggerState`] of the
//! same shape. A runner tells the state about elements ([`Trigger::on_element`]), asks
//! whether to fire given whether the watermark has passed the window's end
//! ([`Trigger::should_fire`]), and, after firing, lets it move on ([`Trigger::on_fire`]).
//! A finished trigger fires no more: the window is closed for that key.

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
            Trigger::AfterCount(_) | Trigger::Never => Vec::new(),
        };
        TriggerState { finished: false, count: 0, step: 0, children }
    }

    /// Counts `n` more elements.
    pub fn on_element(&self, s: &mut TriggerState, n: u64) {
        if s.finished {
            return;
        }
        s.count += n;
        match self {
            Trigger::AfterWatermark { early, late } => {
                // Only the phase in force counts: early before the on-time pane, late after.
                let (t, child) = if s.step == 0 { (early, 0) } else { (late, 1) };
                if let Some(t) = t {
                    t.on_element(&mut s.children[child], n);
                }
            }
            Trigger::Repeatedly(t) => t.on_element(&mut s.children[0], n),
            Trigger::AfterEach(ts) => {
                if let Some(t) = ts.get(s.step) {
                    t.on_element(&mut s.children[s.step], n);
                }
            }
            Trigger::AfterFirst(ts) | Trigger::AfterAll(ts) => {
                ts.iter().zip(&mut s.children).for_each(|(t, c)| t.on_element(c, n));
            }
            Trigger::OrFinally(a, b) => {
                a.on_element(&mut s.children[0], n);
                b.on_element(&mut s.children[1], n);
            }
            Trigger::AfterCount(_) | Trigger::Never => {}
        }
    }

    /// Whether to fire now, given whether the watermark has passed the window's end.
    pub fn should_fire(&self, s: &TriggerState, past_end: bool) -> bool {
        if s.finished {
            return false;
        }
        match self {
            Trigger::AfterWatermark { early, late } => match (s.step, past_end) {
                (0, false) => early.as_ref().is_some_and(|t| t.should_fire(&s.children[0], false)),
                (0, true) => true,
                _ => late.as_ref().is_some_and(|t| t.should_fire(&s.children[1], true)),
            },
            Trigger::AfterCount(n) => s.count >= *n,
            Trigger::Repeatedly(t) => t.should_fire(&s.children[0], past_end),
            Trigger::AfterEach(ts) => ts.get(s.step).is_some_and(|t| t.should_fire(&s.children[s.step], past_end)),
            Trigger::AfterFirst(ts) => ts.iter().zip(&s.children).any(|(t, c)| t.should_fire(c, past_end)),
            Trigger::AfterAll(ts) => ts.iter().zip(&s.children).all(|(t, c)| c.finished || t.should_fire(c, past_end)),
            Trigger::OrFinally(a, b) => {
                a.should_fire(&s.children[0], past_end) || b.should_fire(&s.children[1], past_end)
            }
            Trigger::Never => false,
        }
    }

    /// Moves on after a firing.
    pub fn on_fire(&self, s: &mut TriggerState, past_end: bool) {
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
            Trigger::AfterCount(_) | Trigger::AfterFirst(_) | Trigger::AfterAll(_) => s.finished = true,
            Trigger::Repeatedly(t) => {
                t.on_fire(&mut s.children[0], past_end);
                if s.children[0].finished {
                    s.children[0] = t.new_state();
                }
            }
            Trigger::AfterEach(ts) => {
                if let Some(t) = ts.get(s.step) {
                    t.on_fire(&mut s.children[s.step], past_end);
                    if s.children[s.step].finished {
                        s.step += 1;
                    }
                }
                s.finished = s.step >= ts.len();
            }
            Trigger::OrFinally(a, b) => {
                if b.should_fire(&s.children[1], past_end) {
                    s.finished = true;
                } else {
                    a.on_fire(&mut s.children[0], past_end);
                    s.finished = s.children[0].finished;
                }
            }
            Trigger::Never => {}
        }
    }

    /// A short description for `explain`.
    pub fn describe(&self) -> String {
        format!("{self:?}")
    }
}

/// The state of a [`Trigger`] for one key and window, shaped like the trigger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TriggerState {
    /// No more firings.
    pub finished: bool,
    count: u64,
    /// AfterEach: which trigger is in force; AfterWatermark: 0 before the on-time pane.
    step: usize,
    children: Vec<TriggerState>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `elements` one at a time (with the watermark past the end after `end_after`
    /// of them), returning after which elements it fired.
    fn fires(t: &Trigger, elements: usize, end_after: usize) -> Vec<usize> {
        let mut s = t.new_state();
        let mut out = Vec::new();
        for i in 1..=elements {
            t.on_element(&mut s, 1);
            let past = i > end_after;
            if t.should_fire(&s, past) {
                t.on_fire(&mut s, past);
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
}
