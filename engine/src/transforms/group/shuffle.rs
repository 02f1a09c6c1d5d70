//! The routing before a grouping's exchange: by key group, and with combiner lifting.

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

/// Combiner lifting: folds inputs into per-key, per-window accumulators for a bundle,
/// and sends those instead of the inputs.
pub(super) struct LiftedShuffle<K, C: CombineFn> {
    pub(super) step: Arc<str>,
    pub(super) combine: Arc<C>,
    /// Few windows are live in one bundle, so a short list searched from the most
    /// recently used beats a map keyed by (window, key) that clones every key. Each
    /// partial carries the combined timestamp of its elements that count towards a pane's
    /// output timestamp (see [`TimestampCombiner`]).
    pub(super) partials: Vec<(Window, Stamped<K, C::Accum>)>,
    /// Maps emptied by the last flush, kept with their capacity: a bundle meets about as
    /// many keys as the last one, and growing a fresh map each bundle costs rehashing.
    pub(super) spare: Vec<Stamped<K, C::Accum>>,
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
        let input = input.into_elements::<(K, C::Input)>();
        let mut current = 0;
        let (combine, partials, spare, combiner) = (&self.combine, &mut self.partials, &mut self.spare, self.combiner);
        let (lateness, dropped) = (self.lateness_ms, &mut self.dropped);
        catch_unwind(AssertUnwindSafe(|| {
            let mut slot = 0;
            for i in 0..input.len() {
                current = i;
                let w = input.window(i);
                // Droppable: counted here, one by one.
                if arrival.is_past(w.max_timestamp().plus_millis(lateness)) {
                    *dropped += 1;
                    continue;
                }
                if partials.get(slot).is_none_or(|(pw, _)| *pw != w) {
                    slot = match partials.iter().position(|(pw, _)| *pw == w) {
                        Some(s) => s,
                        None => {
                            partials.push((w, spare.pop().unwrap_or_default()));
                            partials.len() - 1
                        }
                    };
                }
                let map = &mut partials[slot].1;
                let (k, v) = input.value(i);
                let (acc, combined) = match map.get_mut(k) {
                    Some(entry) => entry,
                    None => map.entry(k.clone()).or_insert_with(|| (combine.create_accumulator(), None)),
                };
                combine.add_input(acc, v);
                combiner.fold(combined, input.timestamp(i), w.max_timestamp(), arrival);
            }
        }))
        .map_err(|p| Error::from_panic(&self.step, p, Some(truncated_debug(input.value(current), 200))))
    }

    fn late_dropped(&self) -> u64 {
        self.dropped
    }

    fn flush(&mut self, peers: usize, out: &mut Vec<Batch>) -> Result<()> {
        let mut parts: Vec<Elements<(K, C::Accum)>> = (0..peers).map(|_| Elements::new()).collect();
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
