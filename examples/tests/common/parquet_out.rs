//! What the backfill example wrote, read back.
#![allow(dead_code)]

/// Rows of the backfill example's output, read back with arrow-rs's own reader.
pub fn read_totals(dir: &std::path::Path) -> Vec<(String, i64, i64, i64)> {
    use riffle_parquet::arrow_array::cast::AsArray;
    use riffle_parquet::arrow_array::types::{Int64Type, TimestampMillisecondType};
    let mut rows = Vec::new();
    // Files per day of windows, in `date=YYYY-MM-DD/` folders.
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            // `_SUCCESS` and `_temporary/` are not data, for any reader.
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('_')) {
                continue;
            }
            if path.is_dir() { dirs.push(path) } else { files.push(path) }
        }
    }
    for path in files {
        let file = std::fs::File::open(path).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024).unwrap();
        for batch in reader {
            let b = batch.unwrap();
            let user = b.column_by_name("user_id").unwrap().as_string::<i32>();
            let start = b.column_by_name("window_start").unwrap().as_primitive::<TimestampMillisecondType>();
            let end = b.column_by_name("window_end").unwrap().as_primitive::<TimestampMillisecondType>();
            let total = b.column_by_name("total").unwrap().as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                rows.push((user.value(i).to_string(), start.value(i), end.value(i), total.value(i)));
            }
        }
    }
    rows.sort();
    rows
}
