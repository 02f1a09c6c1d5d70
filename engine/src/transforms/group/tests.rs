//! Checkpoints of the groupings' state: the same case run by one uninterrupted instance,
//! and by two workers whose state is saved half-way by key group and restored at one and
//! at three workers, must give the same panes (values, windows, pane info, timestamps).
//! Catches what a snapshot leaves out or restores wrong: pane indexes and what earlier
//! accumulating panes held, trigger states mid-way (a count half reached, a timer set),
//! sessions that must merge with what comes after the restore, output timestamps and
//! watermark holds; and state restored on a worker that does not own its key.

use super::*;
use crate::runtime::WorkerInfo;
use crate::transforms::combine_fns::Sum;
use crate::window::{FixedWindows, Sessions};

fn t(ms: i64) -> EventTime {
    EventTime::from_millis(ms)
}

fn fixed(ms: i64) -> Window {
    let start = ms.div_euclid(10) * 10;
    Window::Interval { start: t(start), end: t(start + 10) }
}

fn session(ms: i64) -> Window {
    Window::Interval { start: t(ms), end: t(ms + 10) }
}

/// One round: `elements` sent at watermark `arrival` with the clock at `now`, then every
/// worker fires at watermark `fire`.
struct Round {
    now: i64,
    arrival: i64,
    elements: Vec<((u32, i64), EventTime, Window)>,
    fire: i64,
}

/// An output element, with the time the state emitted it at.
type Fired<O> = (EventTime, WindowedValue<(u32, O)>);

fn instances<G: Grouping>(step: &GroupStep<G>, peers: usize, clock: &Arc<dyn Clock>) -> Vec<Box<dyn GroupState>> {
    (0..peers)
        .map(|index| {
            step.instantiate(&StepContext {
                name: "G".into(),
                worker: WorkerInfo { index, peers },
                clock: clock.clone(),
            })
        })
        .collect()
}

/// Hands each worker its keys' elements of each round, as the shuffle routes them, and
/// fires every worker.
fn feed<O: Data>(
    workers: &mut [Box<dyn GroupState>],
    clock: &Arc<dyn Clock>,
    rounds: &[Round],
    out: &mut Vec<Fired<O>>,
) {
    let peers = workers.len();
    for round in rounds {
        clock.advance_to(ProcessingTime::from_millis(round.now));
        for (i, state) in workers.iter_mut().enumerate() {
            let mut input = Elements::new();
            for ((k, v), ts, w) in &round.elements {
                if KeyGroup::of(k).worker(peers) == i {
                    input.push((*k, *v), *ts, *w, PaneInfo::NO_FIRING);
                }
            }
            state.insert_all(vec![Batch::new(input)], Watermark(t(round.arrival))).unwrap();
            let mut fired = Vec::new();
            state.fire(Watermark(t(round.fire)), &mut fired).unwrap();
            state.take_late();
            for (at, batch) in fired {
                out.extend(batch.try_into_elements::<(u32, O)>().unwrap().into_iter_windowed().map(|wv| (at, wv)));
            }
        }
    }
}

/// The panes of one uninterrupted instance, and of two workers saved after `before` and
/// restored at 1 and at 3 workers for `after`: they must be equal.
fn same_across_a_checkpoint<G: Grouping>(step: &GroupStep<G>, before: &[Round], after: &[Round]) -> Vec<Fired<G::Out>>
where
    G::Out: Ord,
{
    let clock: Arc<dyn Clock> = Arc::new(crate::ManualClock::new());
    let mut want = Vec::new();
    let mut one = instances(step, 1, &clock);
    feed(&mut one, &clock, before, &mut want);
    feed(&mut one, &clock, after, &mut want);
    want.sort();

    for restored_at in [1, 3] {
        let clock: Arc<dyn Clock> = Arc::new(crate::ManualClock::new());
        let mut got = Vec::new();
        let mut saving = instances(step, 2, &clock);
        feed(&mut saving, &clock, before, &mut got);
        let mut saved = BTreeMap::new();
        for state in &saving {
            state.snapshot(&mut saved).unwrap();
        }
        assert!(saved.len() > 1, "the state is split into key groups");
        let mut restored = instances(step, restored_at, &clock);
        for (group, bytes) in &saved {
            restored[group.worker(restored_at)].restore(*group, bytes).unwrap();
        }
        let entries = |states: &[Box<dyn GroupState>]| states.iter().map(|s| s.size().entries).sum::<u64>();
        assert_eq!(entries(&restored), entries(&saving), "every entry came over (restored at {restored_at})");
        let hold = |states: &[Box<dyn GroupState>]| states.iter().filter_map(|s| s.earliest_pending()).min();
        let (held, holds) = (hold(&saving), hold(&restored));
        let emitted = got.len();
        feed(&mut restored, &clock, after, &mut got);
        // Restored, the workers hold the watermark where the saved ones did, or later
        // where those held it for a session merged away (an index entry gone stale, not
        // saved); never past an early or on-time pane they emit after (a late pane goes
        // out at the watermark it fired at, and needs no hold).
        let first_out = got[emitted..].iter().filter(|(_, wv)| wv.pane.timing != Timing::Late).map(|(at, _)| *at).min();
        assert!(holds >= held, "restored at {restored_at}: held at {holds:?}, before at {held:?}");
        assert!(
            first_out.is_none_or(|at| holds.is_some_and(|h| h <= at)),
            "restored at {restored_at}: held at {holds:?}, yet emits at {first_out:?}"
        );
        got.sort();
        assert_eq!(got, want, "saved at 2 workers, restored at {restored_at}");
    }
    want
}

/// 12 keys, each a value per `(ms, tag)` at `ms + k` (so keys differ in their timestamps).
fn each_key(times: &[(i64, i64)], window: fn(i64) -> Window) -> Vec<((u32, i64), EventTime, Window)> {
    let mut out = Vec::new();
    for k in 0..12u32 {
        for &(ms, tag) in times {
            let ts = ms + i64::from(k % 3);
            out.push(((k, i64::from(k) * 1000 + tag), t(ts), window(ts)));
        }
    }
    out
}

fn windowing(lateness_ms: i64, accumulation: AccumulationMode) -> Windowing {
    Windowing {
        assign: Arc::new(FixedWindows::of_millis(10)),
        is_global: false,
        allowed_lateness_ms: lateness_ms,
        accumulation,
        ..Windowing::default()
    }
}

fn group_by_key(w: &Windowing) -> GroupStep<ListGrouping<u32, i64>> {
    GroupStep::keyed(ListGrouping(PhantomData), w)
}

#[test]
fn keyed_state_restores_pending_and_late_panes_with_their_counts_and_timestamps() {
    // Late panes, each repeating the earlier ones, stamped with the earliest on-time
    // element: the pane counts, accumulated values and combined timestamps must come over.
    let w =
        Windowing { timestamp_combiner: TimestampCombiner::Earliest, ..windowing(20, AccumulationMode::Accumulating) };
    let before = [
        Round { now: 0, arrival: 0, elements: each_key(&[(1, 1), (4, 2), (10, 3)], fixed), fire: 0 },
        // [0, 10) fires on time; a late element waits for the watermark to pass 12.
        Round { now: 0, arrival: 12, elements: each_key(&[(5, 4), (14, 5)], fixed), fire: 12 },
    ];
    let after = [
        Round { now: 0, arrival: 15, elements: each_key(&[(6, 6), (16, 7), (23, 8)], fixed), fire: 25 },
        Round { now: 0, arrival: 26, elements: each_key(&[(17, 9), (27, 10)], fixed), fire: 40 },
        Round { now: 0, arrival: 40, elements: Vec::new(), fire: i64::MAX },
    ];
    let want = same_across_a_checkpoint(&group_by_key(&w), &before, &after);
    let late_after_restore = want.iter().filter(|(_, wv)| wv.pane.timing == Timing::Late && wv.pane.index >= 2).count();
    assert!(late_after_restore > 0, "the case has late panes after the restore that count earlier ones");
}

#[test]
fn triggered_state_restores_trigger_states_pane_indexes_and_accumulated_values() {
    let count = Trigger::after_watermark()
        .with_early_firings(Trigger::repeatedly(Trigger::after_count(2)))
        .with_late_firings(Trigger::after_count(1));
    let timed = Trigger::after_watermark()
        .with_early_firings(Trigger::repeatedly(Trigger::after_processing_time(5)))
        .with_late_firings(Trigger::after_count(1));
    for trigger in [count, timed] {
        for mode in
            [AccumulationMode::Discarding, AccumulationMode::Accumulating, AccumulationMode::AccumulatingAndRetracting]
        {
            let w = Windowing {
                trigger: Some(Arc::new(trigger.clone())),
                timestamp_combiner: TimestampCombiner::Earliest,
                ..windowing(20, mode)
            };
            // Three elements per key and window: an early pane at two, the third counts
            // towards the next, which fires only after the restore.
            let before = [
                Round { now: 0, arrival: 0, elements: each_key(&[(1, 1), (2, 2), (3, 3), (11, 4)], fixed), fire: 0 },
                Round { now: 2, arrival: 0, elements: each_key(&[(12, 5)], fixed), fire: 0 },
            ];
            // First, the clock alone: a restored timer fires.
            let after = [
                Round { now: 10, arrival: 0, elements: Vec::new(), fire: 0 },
                Round { now: 10, arrival: 0, elements: each_key(&[(4, 6), (13, 7)], fixed), fire: 0 },
                Round { now: 20, arrival: 12, elements: each_key(&[(5, 8), (14, 9)], fixed), fire: 12 },
                Round { now: 30, arrival: 25, elements: each_key(&[(6, 10), (21, 11)], fixed), fire: 40 },
                Round { now: 40, arrival: 40, elements: Vec::new(), fire: i64::MAX },
            ];
            let want = if mode == AccumulationMode::AccumulatingAndRetracting {
                let step = GroupStep::keyed(MultisetGrouping::values::<u32, i64>(), &w);
                let want = same_across_a_checkpoint(&step, &before, &after);
                assert!(want.iter().any(|(_, wv)| wv.pane.retraction), "the case retracts panes");
                want.into_iter().filter(|(_, wv)| !wv.pane.retraction).collect()
            } else {
                same_across_a_checkpoint(&group_by_key(&w), &before, &after)
            };
            let early = want.iter().filter(|(_, wv)| wv.pane.timing == Timing::Early).count();
            assert!(early > 12, "{trigger:?} {mode:?}: early panes before and after the restore");
            assert!(want.iter().any(|(_, wv)| wv.pane.index >= 2), "{trigger:?} {mode:?}: pane indexes go on");
        }
    }
}

#[test]
fn sessions_restored_merge_with_elements_that_arrive_after() {
    // Without lateness: the default trigger on sessions (MergingState). With it: Beam's
    // state machine (TriggeredState), where a late element merges with a fired session.
    for lateness in [0, 30] {
        let w = Windowing {
            merging: Some(Arc::new(Sessions::with_gap_millis(10))),
            ..windowing(lateness, AccumulationMode::Discarding)
        };
        // Per key (shifted by its offset): sessions [1, 13), [25, 35), [40, 58),
        // [80, 90) and [150, 160); the first fires before the checkpoint, [80, 90) gets
        // nothing after it.
        let before = [
            Round {
                now: 0,
                arrival: 0,
                elements: each_key(&[(1, 1), (3, 2), (25, 3), (40, 4), (48, 5), (80, 10), (150, 6)], session),
                fire: 0,
            },
            Round { now: 0, arrival: 0, elements: Vec::new(), fire: 20 },
        ];
        // After: 33 bridges two sessions saved open; 8 is late and, with lateness, merges
        // with the session fired before the checkpoint; 155 joins the last one.
        let after = [
            Round { now: 0, arrival: 20, elements: each_key(&[(8, 7), (33, 8)], session), fire: 70 },
            Round { now: 0, arrival: 70, elements: each_key(&[(155, 9)], session), fire: i64::MAX },
        ];
        let want = same_across_a_checkpoint(&group_by_key(&w), &before, &after);
        let bridged = want.iter().filter(|(_, wv)| wv.value.1.len() == 4).count();
        assert_eq!(bridged, 12, "lateness {lateness}: each key's [25, 58) of 4 values, merged after the restore");
        let late = want.iter().filter(|(_, wv)| wv.pane.timing == Timing::Late).count();
        assert_eq!(late, if lateness > 0 { 12 } else { 0 }, "lateness {lateness}: a late pane per key");
    }
}

#[test]
fn a_restored_global_combine_emits_its_default_once() {
    // combine_globally of an empty input gives one default; saved after it went out (and
    // before), it must still go out exactly once.
    let w = Windowing { is_global: true, ..Windowing::default() };
    let grouping =
        MergeGrouping::<(), Sum<i64>> { combine: Arc::new(Sum::new()), default_on_empty: true, _k: PhantomData };
    let step = GroupStep { default_key: Some(()), ..GroupStep::keyed(grouping, &w) };
    for saved_at in [0, i64::MAX] {
        let clock: Arc<dyn Clock> = Arc::new(crate::ManualClock::new());
        let mut defaults = 0;
        let mut fire = |states: &mut [Box<dyn GroupState>], at| {
            for state in states {
                let mut fired = Vec::new();
                state.fire(Watermark(t(at)), &mut fired).unwrap();
                defaults += fired.iter().map(|(_, b)| b.len()).sum::<usize>();
            }
        };
        let mut saving = instances(&step, 2, &clock);
        fire(&mut saving, saved_at);
        let mut saved = BTreeMap::new();
        saving.iter().try_for_each(|s| s.snapshot(&mut saved)).unwrap();
        let mut restored = instances(&step, 3, &clock);
        for (group, bytes) in &saved {
            restored[group.worker(3)].restore(*group, bytes).unwrap();
        }
        fire(&mut restored, i64::MAX);
        assert_eq!(defaults, 1, "saved at {saved_at}");
    }
}

#[test]
fn state_that_does_not_decode_is_an_error_that_names_the_step_and_group() {
    let clock: Arc<dyn Clock> = Arc::new(crate::ManualClock::new());
    let keyed = group_by_key(&windowing(0, AccumulationMode::Discarding));
    let trigger =
        Windowing { trigger: Some(Arc::new(Trigger::after_count(1))), ..windowing(0, AccumulationMode::Discarding) };
    let sessions = Windowing {
        merging: Some(Arc::new(Sessions::with_gap_millis(10))),
        ..windowing(0, AccumulationMode::Discarding)
    };
    for mut state in
        [&keyed, &group_by_key(&trigger), &group_by_key(&sessions)].map(|s| instances(s, 1, &clock).remove(0))
    {
        let err = state.restore(KeyGroup(7), b"not a snapshot").unwrap_err().to_string();
        assert!(err.contains("'G'") && err.contains("KeyGroup(7)"), "{err}");
    }
}

/// Elements of 50 keys in several windows, timestamps and panes, as a batch.
fn mixed() -> Elements<(u32, i64)> {
    let mut input = Elements::new();
    for i in 0..200i64 {
        let pane = PaneInfo { index: (i % 3) as u64, ..PaneInfo::NO_FIRING };
        input.push(((i % 50) as u32, i), t(i), fixed(i), pane);
    }
    input
}

#[test]
fn a_key_shuffle_splits_what_it_sent_by_key_group() {
    let shuffle = KeyShuffle::<u32, i64>(PhantomData);
    let split = shuffle.split_by_key_group(Batch::new(mixed())).unwrap();
    let mut all = Vec::new();
    for (group, batch) in split {
        for wv in batch.into_elements::<(u32, i64)>().into_iter_windowed() {
            assert_eq!(KeyGroup::of(&wv.value.0), group, "{wv:?}");
            all.push(wv);
        }
    }
    all.sort();
    let mut want: Vec<_> = mixed().into_iter_windowed().collect();
    want.sort();
    assert_eq!(all, want, "every element, with its timestamp, window and pane, once");
}

#[test]
fn a_lifted_combine_splits_its_partials_by_key_group() {
    let lifted = LiftedShuffleFn::<u32, Sum<i64>> {
        combine: Arc::new(Sum::new()),
        combiner: TimestampCombiner::Earliest,
        lateness_ms: 0,
        _k: PhantomData,
    };
    let ctx = StepContext {
        name: "G".into(),
        worker: WorkerInfo { index: 0, peers: 3 },
        clock: Arc::new(crate::ManualClock::new()),
    };
    let mut shuffle = lifted.instantiate(&ctx);
    let mut sent = Vec::new();
    shuffle.route(Batch::new(mixed()), 3, Watermark::MIN, &mut sent).unwrap();
    shuffle.flush(3, &mut sent).unwrap();
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for batch in sent {
        let target = batch.target();
        before.extend(batch.clone().into_elements::<(u32, i64)>().into_iter_windowed());
        for (group, part) in lifted.split_by_key_group(batch).unwrap() {
            assert_eq!(group.worker(3), target, "a group's partials were sent to its worker");
            for wv in part.into_elements::<(u32, i64)>().into_iter_windowed() {
                assert_eq!(KeyGroup::of(&wv.value.0), group);
                after.push(wv);
            }
        }
    }
    before.sort();
    after.sort();
    assert_eq!(after, before, "every partial, with its combined timestamp and window, once");
    assert_eq!(after.iter().map(|wv| wv.value.1).sum::<i64>(), (0..200).sum::<i64>());
}
