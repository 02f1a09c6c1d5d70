//! The routing before a grouping's exchange: by key group, and with combiner lifting.

use std::fmt::Debug;
use std::hash::BuildHasher;

use hashbrown::hash_table;

use super::*;

/// Splits keyed elements by the worker that owns each key's group.
pub(crate) struct KeyShuffle<K, V>(pub(crate) PhantomData<fn() -> (K, V)>);

impl<K: Key, V: Data> ShuffleFn for KeyShuffle<K, V> {
    fn instantiate(&self, _ctx: &StepContext) -> Box<dyn Shuffle> {
        Box::new(KeyShuffle::<K, V>(PhantomData))
    }
    /// The exchanged elements are the keyed elements themselves.
    fn split_by_key_group(&self, exchanged: Batch) -> Result<Vec<(KeyGroup, Batch)>> {
        Ok(Batch::per_key_group(exchanged.try_into_elements::<(K, V)>()?, |(k, _)| KeyGroup::of(k)))
    }
}

impl<K: Key, V: Data> Shuffle for KeyShuffle<K, V> {
    fn route(&mut self, input: Batch, peers: usize, _arrival: Watermark, out: &mut Vec<Batch>) -> Result<()> {
        if peers == 1 {
            out.push(input.with_target(0));
            return Ok(());
        }
        let parts = input.into_elements::<(K, V)>().split_by(peers, |(k, _)| KeyGroup::of(k).worker(peers));
        out.extend(Batch::per_worker(parts));
        Ok(())
    }
}

/// Accumulators per key, each with the combined timestamp of the elements that count
/// towards an output timestamp (`None`: none did).
pub(super) type Stamped<K, Acc> = FastMap<K, (Acc, Option<EventTime>)>;

/// A bundle's partials of one window: each key with its accumulator and combined
/// timestamp, in a table rather than a map so that folding an element hashes its key
/// once, whether it finds its partial or starts one, and still sees the key it moved in
/// (to name it if the CombineFn panics).
pub(super) type Partials<K, Acc> = hashbrown::HashTable<(K, (Acc, Option<EventTime>))>;

/// Combiner lifting: folds inputs into per-key, per-window accumulators for a bundle,
/// and sends those instead of the inputs.
pub(super) struct LiftedShuffle<K, C: CombineFn> {
    pub(super) step: Arc<str>,
    pub(super) combine: Arc<C>,
    /// Partials by window, then key: a map per window rather than one keyed by
    /// (window, key), so a key is hashed alone and moved, never cloned, into it. Each
    /// partial carries the combined timestamp of its elements that count towards a pane's
    /// output timestamp (see [`TimestampCombiner`]).
    pub(super) partials: Vec<(Window, Partials<K, C::Accum>)>,
    /// Hashes the keys of `partials`.
    pub(super) hasher: foldhash::fast::RandomState,
    /// Where each window's partials are in `partials`: elements in event-time order
    /// within a bundle are rare (a day's rows shuffled), so the window changes often.
    pub(super) slots: FastMap<Window, usize>,
    /// Maps emptied by the last flush, kept with their capacity: a bundle meets about as
    /// many keys as the last one, and growing a fresh map each bundle costs rehashing.
    pub(super) spare: Vec<Partials<K, C::Accum>>,
    pub(super) combiner: TimestampCombiner,
    /// The allowed lateness: an element sent past its window's end plus this is dropped
    /// here, and counted, rather than folded into a partial the grouping would drop.
    pub(super) lateness_ms: i64,
    pub(super) dropped: u64,
}

pub(super) struct LiftedShuffleFn<K, C> {
    pub(super) combine: Arc<C>,
    pub(super) combiner: TimestampCombiner,
    pub(super) lateness_ms: i64,
    pub(super) _k: PhantomData<fn() -> K>,
}

impl<K: Key, C: CombineFn> ShuffleFn for LiftedShuffleFn<K, C> {
    fn instantiate(&self, ctx: &StepContext) -> Box<dyn Shuffle> {
        Box::new(LiftedShuffle::<K, C> {
            step: ctx.name.clone(),
            combine: self.combine.clone(),
            partials: Vec::new(),
            hasher: Default::default(),
            slots: FastMap::default(),
            spare: Vec::new(),
            combiner: self.combiner,
            lateness_ms: self.lateness_ms,
            dropped: 0,
        })
    }
    /// The exchanged elements are partial accumulators per key, as
    /// [`LiftedShuffle::flush`] sends them (stamped with their combined timestamps).
    fn split_by_key_group(&self, exchanged: Batch) -> Result<Vec<(KeyGroup, Batch)>> {
        Ok(Batch::per_key_group(exchanged.try_into_elements::<(K, C::Accum)>()?, |(k, _)| KeyGroup::of(k)))
    }
}

impl<K: Key, C: CombineFn> Shuffle for LiftedShuffle<K, C> {
    fn route(&mut self, input: Batch, _peers: usize, arrival: Watermark, _out: &mut Vec<Batch>) -> Result<()> {
        let (values, stamps) = input.into_elements::<(K, C::Input)>().into_columns();
        let (combine, partials, spare, combiner) = (&self.combine, &mut self.partials, &mut self.spare, self.combiner);
        let (slots, lateness, dropped) = (&mut self.slots, self.lateness_ms, &mut self.dropped);
        let hasher = &self.hasher;
        // The element a CombineFn panicked on, formatted while it unwinds (the loop owns
        // the elements, so they are gone once it has).
        let mut failed_on: Option<String> = None;
        catch_unwind(AssertUnwindSafe(|| {
            let mut slot = usize::MAX;
            let mut slot_window = None;
            for (i, (k, v)) in values.into_iter().enumerate() {
                let w = stamps.window(i);
                // Droppable: counted here, one by one.
                if arrival.is_past(w.max_timestamp().plus_millis(lateness)) {
                    *dropped += 1;
                    continue;
                }
                if slot_window != Some(w) {
                    slot = *slots.entry(w).or_insert_with(|| {
                        partials.push((w, spare.pop().unwrap_or_default()));
                        partials.len() - 1
                    });
                    slot_window = Some(w);
                }
                let hash = hasher.hash_one(&k);
                let entry = partials[slot].1.entry(hash, |(x, _)| *x == k, |(x, _)| hasher.hash_one(x));
                let (key, (acc, combined)) = match entry {
                    hash_table::Entry::Occupied(e) => e.into_mut(),
                    hash_table::Entry::Vacant(e) => {
                        let acc = {
                            let _naming = NameOnPanic(&k, &v, &mut failed_on);
                            combine.create_accumulator()
                        };
                        e.insert((k, (acc, None))).into_mut()
                    }
                };
                let _naming = NameOnPanic(&*key, &v, &mut failed_on);
                combine.add_input(acc, &v);
                combiner.fold(combined, stamps.timestamp(i), w.max_timestamp(), arrival);
            }
        }))
        .map_err(|p| Error::from_panic(&self.step, p, failed_on.take()))
    }

    fn late_dropped(&self) -> u64 {
        self.dropped
    }

    fn flush(&mut self, peers: usize, out: &mut Vec<Batch>) -> Result<()> {
        self.slots.clear();
        let total: usize = self.partials.iter().map(|(_, map)| map.len()).sum();
        let mut parts: Vec<Elements<(K, C::Accum)>> =
            (0..peers).map(|_| Elements::with_capacity(total / peers + total / 8)).collect();
        for (w, mut map) in self.partials.drain(..) {
            for (k, (acc, combined)) in map.drain() {
                let target = if peers == 1 { 0 } else { KeyGroup::of(&k).worker(peers) };
                // A partial none of whose elements count is stamped past its window's end,
                // so the keyed state leaves it out of the output timestamp.
                let ts = match self.combiner {
                    TimestampCombiner::EndOfWindow => w.max_timestamp(),
                    _ => combined.unwrap_or(EventTime::MAX),
                };
                parts[target].push((k, acc), ts, w, PaneInfo::NO_FIRING);
            }
            self.spare.push(map);
        }
        out.extend(Batch::per_worker(parts));
        Ok(())
    }
}

/// While alive, formats its element into `.2` if the thread unwinds: a panic in a
/// CombineFn names the element it was folding, although the loop owns (and drops) it.
struct NameOnPanic<'a, K: Debug, V: Debug>(&'a K, &'a V, &'a mut Option<String>);

impl<K: Debug, V: Debug> Drop for NameOnPanic<'_, K, V> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            *self.2 = Some(truncated_debug(&(self.0, self.1), 200));
        }
    }
}
