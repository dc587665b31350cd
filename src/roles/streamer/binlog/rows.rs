//! Row images: for each row, a null bitmap over the columns present in the
//! image, then the non-null values in column order. UPDATE events carry a
//! before and an after image per row. Columns absent from an image (only
//! with binlog_row_image=MINIMAL or NOBLOB, which the streamer refuses)
//! decode as absent, never as NULL.

use super::DecodeError;
use super::event::{RowsEvent, RowsKind};
use super::reader::Reader;
use super::table_map::TableMap;
use super::value::{self, Value};

/// One image: a value per column, `None` where the image leaves it out.
pub type Image = Vec<Option<Value>>;

#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub before: Option<Image>,
    pub after: Option<Image>,
}

/// Decodes every row of `ev` against its table map.
pub fn decode(ev: &RowsEvent, map: &TableMap) -> Result<Vec<RowChange>, DecodeError> {
    if ev.column_count != map.columns.len() {
        return Err(DecodeError {
            offset: ev.rows_offset,
            what: format!(
                "rows for {}.{} have {} columns, its table map {}",
                map.schema,
                map.table,
                ev.column_count,
                map.columns.len()
            ),
        });
    }
    let mut r = Reader::new(&ev.rows, ev.rows_offset);
    let mut out = Vec::new();
    while !r.is_empty() {
        let start = r.offset();
        let first = image(&mut r, &ev.present, map)?;
        out.push(match ev.kind {
            RowsKind::Insert => RowChange { before: None, after: Some(first) },
            RowsKind::Delete => RowChange { before: Some(first), after: None },
            RowsKind::Update => {
                let present = ev.present_after.as_deref().unwrap_or(&ev.present);
                RowChange { before: Some(first), after: Some(image(&mut r, present, map)?) }
            }
        });
        // An image of no columns takes no bytes: more of them would never end.
        if r.offset() == start {
            return Err(r.error("a row image with no columns present"));
        }
    }
    Ok(out)
}

fn bit(bitmap: &[u8], i: usize) -> bool {
    bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

fn image(r: &mut Reader<'_>, present: &[u8], map: &TableMap) -> Result<Image, DecodeError> {
    let n = map.columns.len();
    let count = (0..n).filter(|&i| bit(present, i)).count();
    let nulls = r.take(count.div_ceil(8), "row null bitmap")?;
    let mut values = Vec::with_capacity(n);
    let mut k = 0;
    for (i, c) in map.columns.iter().enumerate() {
        if !bit(present, i) {
            values.push(None);
            continue;
        }
        let is_null = bit(nulls, k);
        k += 1;
        values.push(Some(if is_null {
            Value::Null
        } else {
            value::decode(r, c).map_err(|e| DecodeError {
                offset: e.offset,
                what: format!(
                    "{}.{} column {}: {}",
                    map.schema,
                    map.table,
                    c.name.as_deref().map_or_else(|| format!("#{}", i + 1), str::to_owned),
                    e.what
                ),
            })?
        }));
    }
    Ok(values)
}
