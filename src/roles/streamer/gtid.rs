//! Replication positions by GTID. MariaDB: one domain-server-sequence per
//! replication domain ("0-1-11,1-2-5"), sent to the server as
//! @slave_connect_state. MySQL: a set of source UUIDs with intervals of
//! transaction numbers ("3e11fa47-…:1-5:7"), sent in COM_BINLOG_DUMP_GTID
//! and read from PREVIOUS_GTIDS events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::binlog::DecodeError;
use super::binlog::event::MariadbGtid;
use super::binlog::event::uuid_bytes::Uuid;

/// MariaDB's position: the last GTID applied per domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MariadbPosition(pub BTreeMap<u32, MariadbGtid>);

impl MariadbPosition {
    pub fn apply(&mut self, g: MariadbGtid) {
        self.0.insert(g.domain, g);
    }

    pub fn parse(s: &str) -> Result<MariadbPosition, String> {
        let mut pos = MariadbPosition::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut it = part.splitn(3, '-');
            let mut num = |what: &str| -> Result<u64, String> {
                it.next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{part:?}: {what} is not a number"))
            };
            let (domain, server_id, seq) = (num("domain")?, num("server id")?, num("sequence")?);
            let (domain, server_id) = (
                u32::try_from(domain).map_err(|_| format!("{part:?}: domain too large"))?,
                u32::try_from(server_id).map_err(|_| format!("{part:?}: server id too large"))?,
            );
            pos.apply(MariadbGtid { domain, server_id, seq });
        }
        Ok(pos)
    }
}

impl std::fmt::Display for MariadbPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.values().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// A MySQL GTID set: per source UUID, sorted disjoint half-open intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MysqlGtidSet(pub BTreeMap<Uuid, Vec<(u64, u64)>>);

impl MysqlGtidSet {
    /// Adds one transaction number.
    pub fn add(&mut self, sid: Uuid, gno: u64) {
        let iv = self.0.entry(sid).or_default();
        iv.push((gno, gno + 1));
        merge(iv);
    }

    pub fn parse(s: &str) -> Result<MysqlGtidSet, String> {
        let mut set = MysqlGtidSet::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut it = part.split(':');
            let sid = parse_uuid(it.next().unwrap_or_default()).ok_or_else(|| format!("{part:?}: not a UUID"))?;
            for range in it {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                let (a, b): (u64, u64) = match (a.parse(), b.parse()) {
                    (Ok(a), Ok(b)) if a >= 1 && b >= a => (a, b),
                    _ => return Err(format!("{part:?}: bad interval {range:?}")),
                };
                if b - a > 1 << 40 {
                    return Err(format!("{part:?}: interval {range:?} too large"));
                }
                let iv = set.0.entry(sid).or_default();
                iv.push((a, b + 1));
            }
        }
        set.0.values_mut().for_each(merge);
        Ok(set)
    }

    /// The binary form (PREVIOUS_GTIDS body, COM_BINLOG_DUMP_GTID data).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = (self.0.len() as u64).to_le_bytes().to_vec();
        for (sid, iv) in &self.0 {
            out.extend(sid.0);
            out.extend((iv.len() as u64).to_le_bytes());
            for &(s, e) in iv {
                out.extend(s.to_le_bytes());
                out.extend(e.to_le_bytes());
            }
        }
        out
    }

    pub fn decode(r: &mut super::binlog::reader::Reader<'_>) -> Result<MysqlGtidSet, DecodeError> {
        let n = r.u64("gtid set size")?;
        if n > r.remaining() as u64 / 24 {
            return Err(r.error(format!("gtid set of {n} sources exceeds the event")));
        }
        let mut set = MysqlGtidSet::default();
        for _ in 0..n {
            let sid = Uuid(r.take(16, "gtid set source")?.try_into().map_err(|_| r.error("gtid set source"))?);
            let k = r.u64("gtid set intervals")?;
            if k > r.remaining() as u64 / 16 {
                return Err(r.error(format!("{k} intervals exceed the event")));
            }
            let mut iv = Vec::with_capacity(k as usize);
            for _ in 0..k {
                let (s, e) = (r.u64("interval start")?, r.u64("interval end")?);
                if s >= e {
                    return Err(r.error(format!("empty interval [{s}, {e})")));
                }
                iv.push((s, e));
            }
            set.0.insert(sid, iv);
        }
        Ok(set)
    }
}

impl std::fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (sid, iv) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{sid}")?;
            for &(s, e) in iv {
                match e - s {
                    1 => write!(f, ":{s}")?,
                    _ => write!(f, ":{s}-{}", e - 1)?,
                }
            }
        }
        Ok(())
    }
}

/// Sorts intervals and joins those that touch or overlap.
fn merge(iv: &mut Vec<(u64, u64)>) {
    iv.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(iv.len());
    for &(s, e) in iv.iter() {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    *iv = merged;
}

fn parse_uuid(s: &str) -> Option<Uuid> {
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Uuid(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_gtid_sets_parse_merge_print_and_round_trip_through_binary() {
        let mut set =
            MysqlGtidSet::parse("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7, 3e11fa47-71ca-11e1-9e33-c80aa9429562:6")
                .unwrap();
        assert_eq!(set.to_string(), "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-7");
        let sid = parse_uuid("3e11fa47-71ca-11e1-9e33-c80aa9429562").unwrap();
        set.add(sid, 9);
        set.add(sid, 8);
        assert_eq!(set.to_string(), "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-9");
        let bytes = set.encode();
        let back = MysqlGtidSet::decode(&mut super::super::binlog::reader::Reader::new(&bytes, 0)).unwrap();
        assert_eq!(back, set);
        assert!(MysqlGtidSet::parse("nope:1-2").is_err());
        assert!(MysqlGtidSet::parse("3e11fa47-71ca-11e1-9e33-c80aa9429562:5-2").is_err());
    }

    #[test]
    fn mariadb_positions_keep_the_last_gtid_per_domain() {
        let mut pos = MariadbPosition::parse("0-1-11,1-2-5").unwrap();
        pos.apply(MariadbGtid { domain: 0, server_id: 3, seq: 12 });
        assert_eq!(pos.to_string(), "0-3-12,1-2-5");
        assert!(MariadbPosition::parse("0-1").is_err());
        assert!(MariadbPosition::parse("x-1-2").is_err());
    }
}
