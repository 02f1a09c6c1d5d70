//! The row type's Arrow schema, traced from its serde shape, and how it is checked
//! against a file's.

use arrow_schema::{DataType, FieldRef};
use serde::de::DeserializeOwned;
use serde_arrow::schema::{SchemaLike, TracingOptions};

/// The fields of the row type `T` as serde_arrow maps them, or `None` when the type
/// cannot be traced (then every column is read and nothing is checked up front).
pub(crate) fn row_fields<T: DeserializeOwned>() -> Option<Vec<FieldRef>> {
    trace::<T>().ok()
}

/// Traces `T`'s fields: strings as Utf8 and lists as List (the common Parquet types,
/// and what other engines read most readily).
pub(crate) fn trace<T: DeserializeOwned>() -> Result<Vec<FieldRef>, serde_arrow::Error> {
    let options =
        TracingOptions::default().allow_null_fields(true).strings_as_large_utf8(false).sequence_as_large_list(false);
    Vec::<FieldRef>::from_type::<T>(options)
}

fn family(t: &DataType) -> u8 {
    use DataType::*;
    match t {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => 1,
        Float16 | Float32 | Float64 => 2,
        Utf8 | LargeUtf8 | Utf8View => 3,
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => 4,
        Boolean => 5,
        Timestamp(..) | Date32 | Date64 => 6,
        List(_) | LargeList(_) | ListView(_) | LargeListView(_) | FixedSizeList(..) => 7,
        Struct(_) => 8,
        Null => 0,
        _ => 9,
    }
}

/// Whether a file column of type `file` can be read into a field traced as `row`.
/// Integers read into any integer, event-time types into integers, strings and lists
/// across their offset widths; anything else must be equal.
pub(crate) fn compatible(file: &DataType, row: &DataType) -> bool {
    if file == row || family(row) == 0 {
        return true;
    }
    let (f, r) = (family(file), family(row));
    match (f, r) {
        (6, 1) => true,
        (9, _) | (_, 9) => false,
        _ => f == r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::TimeUnit;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Row {
        user_id: String,
        ts: i64,
        amount: Option<f64>,
    }

    #[test]
    fn a_struct_traces_to_its_fields_and_compatibility_is_by_family() {
        let f = row_fields::<Row>().unwrap();
        let names: Vec<&str> = f.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["user_id", "ts", "amount"]);
        assert_eq!(f[0].data_type(), &DataType::Utf8);
        assert!(compatible(&DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), f[1].data_type()));
        assert!(compatible(&DataType::LargeUtf8, &DataType::Utf8));
        assert!(!compatible(&DataType::Int64, &DataType::Utf8));
        assert!(!compatible(&DataType::Utf8, &DataType::Float64));
    }
}
