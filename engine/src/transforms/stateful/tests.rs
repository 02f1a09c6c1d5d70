//! The state of a stateful step: garbage collection, and saving by key group.

use super::*;
use crate::runtime::WorkerInfo;

/// Counts a key's elements in a window and outputs the count at the window's end.
#[derive(Clone)]
struct CountAtEnd;

impl StatefulDoFn for CountAtEnd {
    type K = u8;
    type V = ();
    type Out = (u8, u64);
    type State = CombiningState<crate::transforms::combine_fns::Count<()>>;
    fn process(&mut self, _: &u8, v: &(), n: &mut Self::State, ctx: &mut StateContext<'_, (u8, u64)>) {
        n.add(v);
        ctx.set_event_timer("end", ctx.window().max_timestamp());
    }
    fn on_timer(&mut self, k: &u8, _: &str, n: &mut Self::State, ctx: &mut StateContext<'_, (u8, u64)>) {
        ctx.output((*k, n.read()));
    }
}

#[test]
fn state_size_returns_to_zero_when_the_watermark_passes_the_windows_expiry() {
    let step = StatefulStep { dofn: CountAtEnd, lateness_ms: 5, shuffle: KeyShuffle(PhantomData) };
    let ctx = StepContext {
        name: "S".into(),
        worker: WorkerInfo { index: 0, peers: 1 },
        clock: Arc::new(crate::ManualClock::new()),
    };
    let mut state = step.instantiate(&ctx);
    let t = EventTime::from_millis;
    let w = Window::Interval { start: t(0), end: t(10) };
    let input = Elements::uniform(vec![(1u8, ()), (2, ()), (1, ())], t(3), w, PaneInfo::NO_FIRING);
    state.insert(Batch::new(input), Watermark(t(0))).unwrap();
    assert_eq!(state.size().entries, 2, "two keys in one window");
    assert_eq!(state.earliest_pending(), Some(t(9)), "the timers hold at the window's end");
    let mut out = Vec::new();
    state.fire(Watermark(t(10)), &mut out).unwrap();
    let fired: usize = out.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(fired, 2, "a count per key at the end of the window");
    assert_eq!(state.size().entries, 2, "kept within the allowed lateness");
    assert_eq!(state.earliest_pending(), None, "no timer holds anything now");
    state.fire(Watermark(t(15)), &mut out).unwrap();
    assert_eq!(state.size(), StateSize::default(), "past the expiry (9 + 5): nothing left");
}

/// Sums a key's values per window in state, keeps them in a bag too, and outputs both
/// at the window's end (an event-time timer).
#[derive(Clone)]
struct SumAtEnd;

impl StatefulDoFn for SumAtEnd {
    type K = u32;
    type V = i64;
    type Out = (u32, i64, i64, usize);
    type State = (CombiningState<crate::transforms::combine_fns::Sum<i64>>, BagState<i64>);
    fn process(&mut self, _: &u32, v: &i64, s: &mut Self::State, ctx: &mut StateContext<'_, Self::Out>) {
        s.0.add(v);
        s.1.add(*v);
        ctx.set_event_timer("end", ctx.window().max_timestamp());
    }
    fn on_timer(&mut self, k: &u32, _: &str, s: &mut Self::State, ctx: &mut StateContext<'_, Self::Out>) {
        ctx.output((*k, ctx.window().max_timestamp().millis(), s.0.read(), s.1.read().len()));
    }
}

fn instances(peers: usize) -> Vec<Box<dyn GroupState>> {
    let step = StatefulStep { dofn: SumAtEnd, lateness_ms: 0, shuffle: KeyShuffle(PhantomData) };
    let clock: Arc<dyn Clock> = Arc::new(crate::ManualClock::new());
    (0..peers)
        .map(|index| {
            step.instantiate(&StepContext {
                name: "S".into(),
                worker: WorkerInfo { index, peers },
                clock: clock.clone(),
            })
        })
        .collect()
}

/// Elements of 40 keys over 4 windows of 10 ms, handed over per watermark 0, 10, 20, 30:
/// each worker gets its keys' elements, then every worker fires.
fn feed(workers: &mut [Box<dyn GroupState>], rounds: std::ops::Range<i64>, out: &mut Vec<(u32, i64, i64, usize)>) {
    let t = EventTime::from_millis;
    for round in rounds {
        let w = Window::Interval { start: t(round * 10), end: t(round * 10 + 10) };
        let peers = workers.len();
        for (i, state) in workers.iter_mut().enumerate() {
            let mut input = Elements::with_capacity(120);
            for k in 0..40u32 {
                if KeyGroup::of(&k).worker(peers) != i {
                    continue;
                }
                for j in 0..=(i64::from(k) + round) % 3 {
                    input.push((k, i64::from(k) * 100 + round * 10 + j), t(round * 10 + j), w, PaneInfo::NO_FIRING);
                }
            }
            state.insert(Batch::new(input), Watermark(t(round * 10))).unwrap();
            let mut fired = Vec::new();
            state.fire(Watermark(t(round * 10)), &mut fired).unwrap();
            for (_, b) in fired {
                out.extend(
                    b.try_into_elements::<(u32, i64, i64, usize)>().unwrap().into_iter_windowed().map(|wv| wv.value),
                );
            }
        }
    }
}

#[test]
fn state_saved_by_key_group_at_two_workers_restores_at_one_and_three() {
    let mut want = Vec::new();
    feed(&mut instances(1), 0..5, &mut want);
    want.sort_unstable();
    assert_eq!(want.len(), 4 * 40, "a sum per key for windows 0..4, fired by watermarks 10..40");

    for restored_at in [1, 3] {
        let mut got = Vec::new();
        let mut before = instances(2);
        feed(&mut before, 0..2, &mut got);
        let mut saved = BTreeMap::new();
        for state in &before {
            state.snapshot(&mut saved).unwrap();
        }
        assert!(saved.len() > 1, "the state is split into key groups");
        let mut after = instances(restored_at);
        for (group, bytes) in &saved {
            after[group.worker(restored_at)].restore(*group, bytes).unwrap();
        }
        let held: u64 = after.iter().map(|s| s.size().entries).sum();
        assert_eq!(held, 40, "window 1's state of every key came over");
        feed(&mut after, 2..5, &mut got);
        got.sort_unstable();
        assert_eq!(got, want, "saved at 2 workers, restored at {restored_at}");
    }
}

#[test]
fn state_that_does_not_decode_is_an_error_that_names_the_step() {
    let mut state = instances(1).pop().unwrap();
    let err = state.restore(KeyGroup(7), b"not a snapshot").unwrap_err().to_string();
    assert!(err.contains("'S'") && err.contains("KeyGroup(7)"), "{err}");
}
