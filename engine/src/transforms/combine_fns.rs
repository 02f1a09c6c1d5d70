//! `CombineFn` and the built-in combiners: sum, count, min, max, mean, top-k.

use std::marker::PhantomData;

use crate::element::Data;

/// An associative, commutative aggregation (Beam's `CombineFn`).
///
/// Riffle adds inputs into accumulators on each worker *before* the shuffle (combiner
/// lifting), merges the accumulators after it, and extracts the output when the window
/// fires; so `merge_accumulators` must give the same result in any grouping and order.
pub trait CombineFn: Send + Sync + 'static {
    /// What is combined.
    type Input: Data;
    /// The partial result.
    type Accum: Data;
    /// The final result.
    type Output: Data;

    /// An empty accumulator.
    fn create_accumulator(&self) -> Self::Accum;
    /// Adds one input.
    fn add_input(&self, acc: &mut Self::Accum, input: &Self::Input);
    /// Folds `other` into `acc`.
    fn merge_accumulators(&self, acc: &mut Self::Accum, other: Self::Accum);
    /// The final result of an accumulator.
    fn extract_output(&self, acc: Self::Accum) -> Self::Output;
    /// Whether `combine_globally` of an empty global-window input outputs
    /// `extract_output(create_accumulator())`, as Beam does by default. Combiners with no
    /// sensible empty result (min, max) say no.
    fn has_default(&self) -> bool {
        true
    }
}

/// The sum of the inputs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sum<T>(PhantomData<fn() -> T>);

impl<T> Sum<T> {
    /// A summing combiner.
    pub fn new() -> Self {
        Sum(PhantomData)
    }
}

/// A value [`Sum`] adds up. Integers add with overflow checked: a sum that overflows
/// fails the job, naming the step and the element (so the key) it was adding, where
/// Rust's `+` would wrap silently in a release build. Floats add as they are (an
/// overflow is infinity). Implement it for a type of your own to sum it.
pub trait Summable: Data + Default {
    /// `self + other`, or `None` if it overflows.
    fn checked_sum(&self, other: &Self) -> Option<Self>;
}

macro_rules! summable_integers {
    ($($t:ty),*) => {$(
        impl Summable for $t {
            #[inline]
            fn checked_sum(&self, other: &Self) -> Option<Self> {
                self.checked_add(*other)
            }
        }
    )*};
}
summable_integers!(i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize);

impl Summable for f32 {
    #[inline]
    fn checked_sum(&self, other: &Self) -> Option<Self> {
        Some(self + other)
    }
}

impl Summable for f64 {
    #[inline]
    fn checked_sum(&self, other: &Self) -> Option<Self> {
        Some(self + other)
    }
}

/// Adds `b` to `a`, or panics (in the step's code: the job fails naming the element).
#[inline]
fn add_checked<T: Summable>(a: &mut T, b: &T) {
    match a.checked_sum(b) {
        Some(s) => *a = s,
        None => panic!("Sum overflowed {}: {a:?} + {b:?}", std::any::type_name::<T>()),
    }
}

impl<T: Summable> CombineFn for Sum<T> {
    type Input = T;
    type Accum = T;
    type Output = T;
    fn create_accumulator(&self) -> T {
        T::default()
    }
    #[inline]
    fn add_input(&self, acc: &mut T, input: &T) {
        add_checked(acc, input);
    }
    fn merge_accumulators(&self, acc: &mut T, other: T) {
        add_checked(acc, &other);
    }
    fn extract_output(&self, acc: T) -> T {
        acc
    }
}

/// The number of inputs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Count<T>(PhantomData<fn() -> T>);

impl<T> Count<T> {
    /// A counting combiner.
    pub fn new() -> Self {
        Count(PhantomData)
    }
}

impl<T: Data> CombineFn for Count<T> {
    type Input = T;
    type Accum = u64;
    type Output = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    #[inline]
    fn add_input(&self, acc: &mut u64, _input: &T) {
        *acc += 1;
    }
    fn merge_accumulators(&self, acc: &mut u64, other: u64) {
        *acc += other;
    }
    fn extract_output(&self, acc: u64) -> u64 {
        acc
    }
}

/// Keeps the input that `better(candidate, current)` prefers: min and max.
fn keep<T: Clone>(acc: &mut Option<T>, input: T, better: fn(&T, &T) -> bool) {
    match acc {
        Some(cur) if !better(&input, cur) => {}
        _ => *acc = Some(input),
    }
}

macro_rules! extreme {
    ($name:ident, $doc:literal, $better:expr) => {
        #[doc = $doc]
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $name<T>(PhantomData<fn() -> T>);

        impl<T> $name<T> {
            #[doc = $doc]
            pub fn new() -> Self {
                $name(PhantomData)
            }
        }

        impl<T: Data + PartialOrd> CombineFn for $name<T> {
            type Input = T;
            type Accum = Option<T>;
            type Output = T;
            fn create_accumulator(&self) -> Option<T> {
                None
            }
            fn add_input(&self, acc: &mut Option<T>, input: &T) {
                keep(acc, input.clone(), $better);
            }
            fn merge_accumulators(&self, acc: &mut Option<T>, other: Option<T>) {
                if let Some(o) = other {
                    keep(acc, o, $better);
                }
            }
            fn extract_output(&self, acc: Option<T>) -> T {
                acc.expect(concat!(stringify!($name), " of no inputs has no value"))
            }
            fn has_default(&self) -> bool {
                false
            }
        }
    };
}

extreme!(Min, "The least input.", |a: &T, b: &T| a < b);
extreme!(Max, "The greatest input.", |a: &T, b: &T| a > b);

/// The arithmetic mean of the inputs, as `f64`; NaN for no inputs (as Beam's `Mean`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Mean<T>(PhantomData<fn() -> T>);

impl<T> Mean<T> {
    /// An averaging combiner.
    pub fn new() -> Self {
        Mean(PhantomData)
    }
}

impl<T: Data + Into<f64> + Copy> CombineFn for Mean<T> {
    type Input = T;
    type Accum = (f64, u64);
    type Output = f64;
    fn create_accumulator(&self) -> (f64, u64) {
        (0.0, 0)
    }
    fn add_input(&self, acc: &mut (f64, u64), input: &T) {
        acc.0 += (*input).into();
        acc.1 += 1;
    }
    fn merge_accumulators(&self, acc: &mut (f64, u64), other: (f64, u64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
    fn extract_output(&self, acc: (f64, u64)) -> f64 {
        if acc.1 == 0 { f64::NAN } else { acc.0 / acc.1 as f64 }
    }
}

/// The `k` greatest (or least) inputs, best first (Beam's `Top`).
#[derive(Clone, Copy, Debug)]
pub struct Top<T> {
    k: usize,
    largest: bool,
    _t: PhantomData<fn() -> T>,
}

impl<T: Ord> Top<T> {
    /// The `k` greatest inputs, greatest first.
    pub fn largest(k: usize) -> Self {
        Top { k, largest: true, _t: PhantomData }
    }
    /// The `k` least inputs, least first.
    pub fn smallest(k: usize) -> Self {
        Top { k, largest: false, _t: PhantomData }
    }

    fn trim(&self, acc: &mut Vec<T>) {
        if self.largest {
            acc.sort_unstable_by(|a, b| b.cmp(a));
        } else {
            acc.sort_unstable();
        }
        acc.truncate(self.k);
    }
}

impl<T: Data + Ord> CombineFn for Top<T> {
    type Input = T;
    type Accum = Vec<T>;
    type Output = Vec<T>;
    fn create_accumulator(&self) -> Vec<T> {
        Vec::new()
    }
    fn add_input(&self, acc: &mut Vec<T>, input: &T) {
        acc.push(input.clone());
        if acc.len() >= 2 * self.k.max(1) {
            self.trim(acc);
        }
    }
    fn merge_accumulators(&self, acc: &mut Vec<T>, other: Vec<T>) {
        acc.extend(other);
        self.trim(acc);
    }
    fn extract_output(&self, mut acc: Vec<T>) -> Vec<T> {
        self.trim(&mut acc);
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Combines `inputs` split into `parts` partial accumulators, as lifting does.
    fn combine<C: CombineFn>(c: &C, inputs: &[C::Input], parts: usize) -> C::Output {
        let mut accs: Vec<C::Accum> = (0..parts).map(|_| c.create_accumulator()).collect();
        for (i, x) in inputs.iter().enumerate() {
            c.add_input(&mut accs[i % parts], x);
        }
        let mut total = c.create_accumulator();
        for a in accs {
            c.merge_accumulators(&mut total, a);
        }
        c.extract_output(total)
    }

    #[test]
    fn builtins_agree_with_direct_computation_however_split() {
        let xs: Vec<i64> = vec![5, -3, 12, 7, 7, 0, 41, -8];
        for parts in [1, 2, 3, 8] {
            assert_eq!(combine(&Sum::new(), &xs, parts), 61);
            assert_eq!(combine(&Count::new(), &xs, parts), 8);
            assert_eq!(combine(&Min::new(), &xs, parts), -8);
            assert_eq!(combine(&Max::new(), &xs, parts), 41);
            assert_eq!(combine(&Top::largest(3), &xs, parts), vec![41, 12, 7]);
            assert_eq!(combine(&Top::smallest(2), &xs, parts), vec![-8, -3]);
            let mean = combine(&Mean::<i32>::new(), &[1, 2, 3, 4], parts.min(4));
            assert!((mean - 2.5).abs() < 1e-12);
        }
        assert!(combine(&Mean::<i32>::new(), &[], 1).is_nan());
    }
}
