//! Simple predicates on columns: pruned from row-group statistics, then applied to rows.

use std::cmp::Ordering;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type,
};
use arrow_array::{Array, BooleanArray};
use arrow_schema::{DataType, TimeUnit};
use parquet::file::statistics::Statistics;

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    fn holds(self, o: Ordering) -> bool {
        match self {
            Op::Eq => o == Ordering::Equal,
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Gt => o == Ordering::Greater,
            Op::Ge => o != Ordering::Less,
        }
    }
}

/// A constant a column is compared with.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    /// Any integer column.
    Int(i64),
    /// A float column.
    Float(f64),
    /// A string column.
    Str(String),
}

impl From<i64> for Scalar {
    fn from(v: i64) -> Self {
        Scalar::Int(v)
    }
}
impl From<i32> for Scalar {
    fn from(v: i32) -> Self {
        Scalar::Int(v.into())
    }
}
impl From<f64> for Scalar {
    fn from(v: f64) -> Self {
        Scalar::Float(v)
    }
}
impl From<&str> for Scalar {
    fn from(v: &str) -> Self {
        Scalar::Str(v.to_string())
    }
}
impl From<String> for Scalar {
    fn from(v: String) -> Self {
        Scalar::Str(v)
    }
}

impl Scalar {
    fn cmp_to(&self, v: &Scalar) -> Option<Ordering> {
        match (v, self) {
            (Scalar::Int(a), Scalar::Int(b)) => Some(a.cmp(b)),
            (Scalar::Int(a), Scalar::Float(b)) => (*a as f64).partial_cmp(b),
            (Scalar::Float(a), Scalar::Int(b)) => a.partial_cmp(&(*b as f64)),
            (Scalar::Float(a), Scalar::Float(b)) => a.partial_cmp(b),
            (Scalar::Str(a), Scalar::Str(b)) => Some(a.as_str().cmp(b.as_str())),
            _ => None,
        }
    }
}

/// `column op value`: row groups whose statistics rule it out are skipped, and rows that
/// fail it are dropped. Integer, float, string, timestamp and date columns are supported
/// (timestamps and dates compare as the integers stored, in the column's unit).
///
/// ```
/// use riffle_parquet::{Op, Predicate};
/// let p = Predicate::new("amount", Op::Gt, 100);
/// assert_eq!(p.column(), "amount");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Predicate {
    column: String,
    op: Op,
    value: Scalar,
}

impl Predicate {
    /// `column op value`.
    pub fn new(column: &str, op: Op, value: impl Into<Scalar>) -> Self {
        Predicate { column: column.to_string(), op, value: value.into() }
    }

    /// The column it reads.
    pub fn column(&self) -> &str {
        &self.column
    }

    /// Whether the predicate can be applied to a column of type `t`.
    pub(crate) fn supports(t: &DataType) -> bool {
        use DataType::*;
        matches!(
            t,
            Int8 | Int16
                | Int32
                | Int64
                | UInt8
                | UInt16
                | UInt32
                | Float32
                | Float64
                | Utf8
                | LargeUtf8
                | Timestamp(..)
                | Date32
        )
    }

    /// Whether a row group with these statistics may hold a matching row.
    pub(crate) fn may_match(&self, stats: Option<&Statistics>) -> bool {
        let Some((min, max)) = stats.and_then(stat_range) else { return true };
        let (Some(lo), Some(hi)) = (self.value.cmp_to(&min), self.value.cmp_to(&max)) else { return true };
        match self.op {
            Op::Eq => lo != Ordering::Greater && hi != Ordering::Less,
            Op::Lt | Op::Le => self.op.holds(lo),
            Op::Gt | Op::Ge => self.op.holds(hi),
        }
    }

    /// Which rows of `array` (the predicate's column) match; nulls never do.
    pub(crate) fn mask(&self, array: &dyn Array) -> Result<BooleanArray, String> {
        macro_rules! prim {
            ($t:ty, $conv:expr) => {{
                let a = array.as_primitive::<$t>();
                a.iter().map(|v| v.map(|v| self.test(&$conv(v)))).collect()
            }};
        }
        Ok(match array.data_type() {
            DataType::Int8 => prim!(Int8Type, |v: i8| Scalar::Int(v.into())),
            DataType::Int16 => prim!(Int16Type, |v: i16| Scalar::Int(v.into())),
            DataType::Int32 => prim!(Int32Type, |v: i32| Scalar::Int(v.into())),
            DataType::Int64 => prim!(Int64Type, Scalar::Int),
            DataType::UInt8 => prim!(UInt8Type, |v: u8| Scalar::Int(v.into())),
            DataType::UInt16 => prim!(UInt16Type, |v: u16| Scalar::Int(v.into())),
            DataType::UInt32 => prim!(UInt32Type, |v: u32| Scalar::Int(v.into())),
            DataType::Float32 => prim!(Float32Type, |v: f32| Scalar::Float(v.into())),
            DataType::Float64 => prim!(Float64Type, Scalar::Float),
            // Timestamps and dates compare as their stored integers (in the column's unit).
            DataType::Timestamp(TimeUnit::Second, _) => prim!(TimestampSecondType, Scalar::Int),
            DataType::Timestamp(TimeUnit::Millisecond, _) => prim!(TimestampMillisecondType, Scalar::Int),
            DataType::Timestamp(TimeUnit::Microsecond, _) => prim!(TimestampMicrosecondType, Scalar::Int),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => prim!(TimestampNanosecondType, Scalar::Int),
            DataType::Date32 => prim!(Date32Type, |v: i32| Scalar::Int(v.into())),
            DataType::Utf8 => array.as_string::<i32>().iter().map(|v| v.map(|s| self.test_str(s))).collect(),
            DataType::LargeUtf8 => array.as_string::<i64>().iter().map(|v| v.map(|s| self.test_str(s))).collect(),
            other => return Err(format!("a predicate on column {:?} of type {other} is not supported", self.column)),
        })
    }

    fn test(&self, v: &Scalar) -> bool {
        self.value.cmp_to(v).is_some_and(|o| self.op.holds(o))
    }

    fn test_str(&self, v: &str) -> bool {
        match &self.value {
            Scalar::Str(s) => self.op.holds(v.cmp(s.as_str())),
            _ => false,
        }
    }
}

/// The (min, max) of a column chunk's statistics, when it has them.
pub(crate) fn stat_range(s: &Statistics) -> Option<(Scalar, Scalar)> {
    Some(match s {
        Statistics::Int32(v) => (Scalar::Int((*v.min_opt()?).into()), Scalar::Int((*v.max_opt()?).into())),
        Statistics::Int64(v) => (Scalar::Int(*v.min_opt()?), Scalar::Int(*v.max_opt()?)),
        Statistics::Float(v) => (Scalar::Float((*v.min_opt()?).into()), Scalar::Float((*v.max_opt()?).into())),
        Statistics::Double(v) => (Scalar::Float(*v.min_opt()?), Scalar::Float(*v.max_opt()?)),
        Statistics::ByteArray(v) => (
            Scalar::Str(String::from_utf8_lossy(v.min_opt()?.data()).into_owned()),
            Scalar::Str(String::from_utf8_lossy(v.max_opt()?.data()).into_owned()),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use parquet::file::statistics::ValueStatistics;

    fn int_stats(min: i64, max: i64) -> Statistics {
        Statistics::Int64(ValueStatistics::new(Some(min), Some(max), None, Some(0), false))
    }

    #[test]
    fn statistics_prune_only_groups_that_cannot_match() {
        let s = int_stats(10, 20);
        let cases = [
            (Op::Eq, 15, true),
            (Op::Eq, 21, false),
            (Op::Lt, 10, false),
            (Op::Le, 10, true),
            (Op::Gt, 20, false),
            (Op::Ge, 20, true),
            (Op::Gt, 5, true),
        ];
        for (op, v, want) in cases {
            assert_eq!(Predicate::new("x", op, v).may_match(Some(&s)), want, "{op:?} {v}");
        }
        assert!(Predicate::new("x", Op::Eq, 99).may_match(None), "no statistics: keep");
    }

    #[test]
    fn masks_compare_each_row_and_drop_nulls() {
        let a = Int64Array::from(vec![Some(1), None, Some(5)]);
        let m = Predicate::new("x", Op::Ge, 2).mask(&a).unwrap();
        assert_eq!(m.iter().collect::<Vec<_>>(), [Some(false), None, Some(true)]);
        let s = StringArray::from(vec!["a", "b"]);
        let m = Predicate::new("x", Op::Eq, "b").mask(&s).unwrap();
        assert_eq!(m.iter().collect::<Vec<_>>(), [Some(false), Some(true)]);
    }
}
