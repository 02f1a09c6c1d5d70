//! Arrow record batches as elements, for pipelines that want columns rather than rows.

use arrow_array::RecordBatch;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A batch of up to 1024 rows in Arrow's columnar form, as one element.
///
/// Read it with `ReadParquet::<ArrowRecords>`: every column of the files is read (plus
/// partition columns as Utf8), filters and time ranges apply, and each element is at the
/// earliest event time of its rows. Between processes it travels in Arrow's IPC format.
///
/// ```
/// use riffle_parquet::{ArrowRecords, ReadParquet, WriteParquet};
/// #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
/// struct Row { k: String, v: i64 }
/// let dir = tempfile::tempdir().unwrap();
/// let url = dir.path().display().to_string();
/// let p = riffle_engine::Pipeline::new();
/// WriteParquet::to(&url).write(&p.create((0..3000).map(|v| Row { k: "a".into(), v }).collect()));
/// riffle_timely::run(&p, &riffle_timely::RunOptions::threads(1)).unwrap();
///
/// let batches = riffle_timely::testing::run_bounded(|p| ReadParquet::<ArrowRecords>::from(&url).read(p));
/// assert_eq!(batches.iter().map(|b| b.0.num_rows()).sum::<usize>(), 3000);
/// assert_eq!(batches[0].0.schema().field(1).name(), "v");
/// ```
#[derive(Clone, Debug)]
pub struct ArrowRecords(pub RecordBatch);

impl Serialize for ArrowRecords {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &self.0.schema())
            .map_err(serde::ser::Error::custom)?;
        w.write(&self.0).map_err(serde::ser::Error::custom)?;
        let bytes = w.into_inner().map_err(serde::ser::Error::custom)?;
        s.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for ArrowRecords {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes_buf(d)?;
        let mut r =
            arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(D::Error::custom)?;
        match r.next() {
            Some(Ok(b)) => Ok(ArrowRecords(b)),
            Some(Err(e)) => Err(D::Error::custom(e)),
            None => Err(D::Error::custom("an empty Arrow IPC stream")),
        }
    }
}

fn serde_bytes_buf<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Arrow IPC bytes")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_byte_buf(V)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn record_batches_survive_the_wire_codecs() {
        let b = RecordBatch::try_from_iter([
            ("a", Arc::new(arrow_array::Int64Array::from(vec![1, 2, 3])) as arrow_array::ArrayRef),
            ("b", Arc::new(arrow_array::StringArray::from(vec!["x", "y", "z"])) as arrow_array::ArrayRef),
        ])
        .unwrap();
        let bytes = bincode::serialize(&ArrowRecords(b.clone())).unwrap();
        let back: ArrowRecords = bincode::deserialize(&bytes).unwrap();
        assert_eq!(back.0, b);
        // As a batch crosses between processes.
        let batch = riffle_engine::Batch::new(riffle_engine::Elements::uniform(
            vec![ArrowRecords(b.clone())],
            riffle_engine::EventTime::MIN,
            riffle_engine::Window::Global,
            riffle_engine::PaneInfo::NO_FIRING,
        ));
        let wire: riffle_engine::Batch = bincode::deserialize(&bincode::serialize(&batch).unwrap()).unwrap();
        let back = wire.into_elements::<ArrowRecords>();
        assert_eq!(back.values()[0].0, b);
    }
}
