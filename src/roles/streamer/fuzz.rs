//! Entry points for the fuzz targets (fuzz/fuzz_targets/binlog_*.rs and
//! streamer_ddl.rs): the decoder and the DDL reader must turn any bytes
//! into events, statements or errors, never a panic, a runaway allocation
//! or unbounded recursion.

use super::binlog::event::{Checksum, Event, EventBody, FormatDescription};
use super::binlog::{TableMap, file, rows};

/// A whole binlog file (magic, description, events); rows are decoded
/// against the table maps seen before them.
pub fn binlog_file(data: &[u8]) {
    let Ok(events) = file::events(data) else { return };
    let mut maps = std::collections::HashMap::<u64, TableMap>::new();
    for item in events {
        let Ok((_, ev)) = item else { return };
        visit(ev, &mut maps);
    }
}

/// One event as the replication stream delivers it, laid out by a MariaDB
/// 10.11 format description without checksums (so mutations reach the
/// body decoders instead of failing the CRC).
pub fn binlog_event(data: &[u8]) {
    let mut fde = FormatDescription::assumed(Checksum::None);
    fde.server_version = "10.11.0-MariaDB".into();
    fde.post_header_lens = vec![0, 13, 0, 8, 0, 18, 0, 0, 0, 0, 0, 0, 0, 0, 84, 0, 0, 0, 8, 0, 0, 0, 10, 10, 10];
    let mut maps = std::collections::HashMap::new();
    // Bytes after the first event are a second one, so a table map can be
    // followed by rows in a single input.
    let Ok(h) = super::binlog::Header::read(data) else { return };
    let split = (h.event_size as usize).min(data.len());
    for part in [&data[..split], &data[split..]] {
        if let Ok(ev) = Event::decode(part, &fde) {
            visit(ev, &mut maps);
        }
    }
}

fn visit(ev: Event, maps: &mut std::collections::HashMap<u64, TableMap>) {
    match ev.body {
        EventBody::TableMap(m) => {
            maps.insert(m.table_id, m);
        }
        EventBody::Rows(r) => {
            if let Some(m) = maps.get(&r.table_id) {
                let _ = rows::decode(&r, m);
            }
        }
        EventBody::TransactionPayload { events } => events.into_iter().for_each(|e| visit(e, maps)),
        _ => {}
    }
}

/// A DDL statement (from a QUERY event) followed in a schema history: the
/// first line sets up a table, the rest alters it; then a table map is
/// checked against the result.
pub fn ddl(data: &[u8]) {
    use super::binlog::table_map::{Column, ty};
    use super::schema::{History, ddl};
    let text = String::from_utf8_lossy(data);
    let mut history = History::default();
    for statement in text.split('\n') {
        if let Ok(d) = ddl::parse(statement, "db") {
            history.apply(&d);
        }
    }
    let mut map = TableMap {
        table_id: 1,
        schema: "db".into(),
        table: "t".into(),
        columns: vec![Column { ty: ty::LONG, ..Column::default() }; 3],
        primary_key: None,
    };
    let _ = history.enrich(&mut map);
}
