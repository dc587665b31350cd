//! The in-memory heads: per series, the open Gorilla chunk that in-order
//! samples append to, chunks sealed since the last checkpoint, and samples
//! that arrived out of order behind data already sealed. Everything here is
//! also in the write-ahead log until a checkpoint moved it to the store;
//! nothing leaves memory before the checkpoint that wrote it committed.
//!
//! Sharded by series id so appends from concurrent requests rarely wait
//! on each other.

use std::sync::{Mutex, MutexGuard};

use super::super::gorilla;
use super::chunk;
use super::slots::Slots;

/// Samples in a head chunk before it is sealed. 240 is an hour of 15 s
/// scrapes: big enough to compress well, small enough to keep a head
/// near a few hundred bytes.
pub const CUT_SAMPLES: usize = 240;
/// Late samples buffered before the open chunk is re-encoded with them.
const LATE_MERGE: usize = 32;
const SHARDS: usize = 32;

/// One series' in-memory state.
#[derive(Debug)]
pub struct SeriesHead {
    /// The open chunk, strictly increasing timestamps.
    open: gorilla::Encoder,
    /// Newest timestamp of the series anywhere (the out-of-order window's reference).
    max_t: i64,
    /// Newest timestamp already sealed or in `tsdb.chunks`: samples at or
    /// before it are out of order and merged into chunks at checkpoint.
    floor_t: i64,
    /// Sealed chunks and late samples waiting for the checkpoint; boxed,
    /// as most series have none most of the time.
    spill: Option<Box<Spill>>,
    /// Changed since the last checkpoint snapshot.
    dirty: bool,
}

#[derive(Debug, Default)]
struct Spill {
    /// Sealed chunks not yet checkpointed: (first t, stored value).
    sealed: Vec<(i64, Vec<u8>)>,
    /// Out-of-order samples in arrival order (the last one wins).
    ooo: Vec<(i64, f64)>,
    /// Samples that arrived late but inside the open chunk's time range,
    /// in arrival order; merged into it in batches.
    late: Vec<(i64, f64)>,
}

impl Default for SeriesHead {
    fn default() -> Self {
        Self { open: gorilla::Encoder::new(), max_t: i64::MIN, floor_t: i64::MIN, spill: None, dirty: false }
    }
}

impl SeriesHead {
    pub fn max_t(&self) -> i64 {
        self.max_t
    }

    /// Appends one sample; a duplicate timestamp replaces the value.
    pub fn push(&mut self, t: i64, v: f64) {
        self.dirty = true;
        self.max_t = self.max_t.max(t);
        if t <= self.floor_t {
            self.spill().ooo.push((t, v));
            return;
        }
        match self.open.last_timestamp() {
            Some(last) if t <= last => {
                // Late inside the open chunk: buffered, merged in batches.
                let late = &mut self.spill().late;
                late.push((t, v));
                if late.len() >= LATE_MERGE {
                    self.merge_late();
                }
            }
            _ => {
                // Bounded by CUT_SAMPLES < MAX_SAMPLES and the order check above.
                let _ = self.open.append(t, v);
            }
        }
        if self.open.len() >= CUT_SAMPLES {
            self.seal();
        }
    }

    /// The rare in-head out-of-order or duplicate sample: re-encode.
    /// Re-encodes the open chunk with the buffered late samples in it.
    fn merge_late(&mut self) {
        let samples = self.open_samples();
        if let Some(spill) = self.spill.as_deref_mut() {
            spill.late.clear();
        }
        self.open = gorilla::Encoder::new();
        for (t, v) in samples {
            let _ = self.open.append(t, v);
        }
    }

    /// The open chunk's samples with the late ones merged (a late sample
    /// wins on an equal timestamp: it arrived after).
    fn open_samples(&self) -> Vec<(i64, f64)> {
        if self.open.is_empty() {
            return Vec::new();
        }
        let late = self.spill.as_deref().map_or(&[][..], |s| &s.late[..]);
        if !late.is_empty() {
            let mut runs = vec![gorilla::decode(&self.open.bytes()).unwrap_or_default(), late.to_vec()];
            return super::merge(std::mem::take(&mut runs), i64::MIN, i64::MAX);
        }
        // Our own encoder's output always decodes.
        gorilla::decode(&self.open.bytes()).unwrap_or_default()
    }

    fn seal(&mut self) {
        let samples = self.open_samples();
        if let Some(spill) = self.spill.as_deref_mut() {
            spill.late.clear();
        }
        if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
            self.spill().sealed.push((first.0, chunk::encode(&samples)));
            self.floor_t = last.0;
        }
        self.open = gorilla::Encoder::new();
    }

    /// Loads a checkpointed open chunk (at start).
    pub fn restore(&mut self, samples: &[(i64, f64)]) {
        for &(t, v) in samples {
            self.push(t, v);
        }
        self.dirty = false;
    }

    /// Raises the floor to the newest timestamp in `tsdb.chunks` (at start).
    pub fn set_floor(&mut self, floor_t: i64) {
        self.floor_t = self.floor_t.max(floor_t);
        self.max_t = self.max_t.max(floor_t);
    }

    pub fn floor_t(&self) -> i64 {
        self.floor_t
    }

    fn oldest(&self) -> Option<i64> {
        // Late samples merge into the open chunk's range; no decode needed.
        let late = self.spill.as_deref().filter(|_| !self.open.is_empty()).map_or(&[][..], |s| &s.late[..]);
        let open = self.open.first_timestamp().into_iter().chain(late.iter().map(|s| s.0));
        open.chain(self.sealed().iter().map(|s| s.0)).chain(self.ooo().iter().map(|s| s.0)).min()
    }

    fn spill(&mut self) -> &mut Spill {
        self.spill.get_or_insert_with(Box::default)
    }

    fn sealed(&self) -> &[(i64, Vec<u8>)] {
        self.spill.as_deref().map_or(&[], |s| &s.sealed)
    }

    fn ooo(&self) -> &[(i64, f64)] {
        self.spill.as_deref().map_or(&[], |s| &s.ooo)
    }
}

/// What a checkpoint takes from one dirty series.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub sealed: Vec<(i64, Vec<u8>)>,
    pub ooo: Vec<(i64, f64)>,
    /// The open chunk (late samples merged in) as Gorilla bytes. Empty: no
    /// head row.
    pub open: Vec<u8>,
}

/// A series a checkpoint took: what `release` drops once it committed.
#[derive(Debug, Clone, Copy)]
pub struct Taken {
    pub id: u64,
    /// No sample newer than the retention horizon: drop the series' head.
    pub expired: bool,
    /// Sealed chunks and out-of-order samples the checkpoint wrote (the
    /// oldest of each list).
    pub sealed: usize,
    pub ooo: usize,
}

/// What a read takes from memory for one series, in priority order.
#[derive(Debug, Default)]
pub struct MemParts {
    pub sealed: Vec<Vec<u8>>,
    /// The open chunk's bytes when the read needs it: copied under the
    /// lock, decoded after it, so writers to the shard do not wait on a
    /// decode.
    pub open: Option<Vec<u8>>,
    /// Late samples inside the open chunk's range, newer than it.
    pub late: Vec<(i64, f64)>,
    pub ooo: Vec<(i64, f64)>,
    pub floor_t: i64,
}

/// One shard's series, by id.
pub type HeadMap = Slots<SeriesHead>;

pub struct Heads {
    shards: Vec<Mutex<HeadMap>>,
}

impl Default for Heads {
    fn default() -> Self {
        Self { shards: (0..SHARDS as u64).map(|shard| Mutex::new(HeadMap::new(shard, SHARDS as u64))).collect() }
    }
}

impl Heads {
    pub fn shard_of(id: u64) -> usize {
        (id % SHARDS as u64) as usize
    }

    pub fn shard_count() -> usize {
        SHARDS
    }

    pub fn lock(&self, shard: usize) -> MutexGuard<'_, HeadMap> {
        self.shards[shard].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn with<T>(&self, id: u64, f: impl FnOnce(&mut SeriesHead) -> T) -> T {
        f(self.lock(Self::shard_of(id)).get_or_insert_with(id, SeriesHead::default))
    }

    /// Copies what a read of `[from, to]` needs, cheaply, under the lock.
    pub fn parts(&self, id: u64, from: i64, to: i64) -> MemParts {
        let mut shard = self.lock(Self::shard_of(id));
        let Some(h) = shard.get_mut(id) else { return MemParts { floor_t: i64::MIN, ..MemParts::default() } };
        // Fold buffered late samples in once rather than at every read.
        if h.spill.as_ref().is_some_and(|sp| !sp.late.is_empty()) {
            h.merge_late();
        }
        let h = &*h;
        let overlaps = |first: i64, last: i64| first <= to && last >= from;
        MemParts {
            sealed: h
                .sealed()
                .iter()
                .filter(|(first, v)| chunk::last_t(v).is_ok_and(|last| overlaps(*first, last)))
                .map(|(_, v)| v.clone())
                .collect(),
            open: h.open.last_timestamp().is_some_and(|last| last >= from).then(|| h.open.bytes()),
            late: h
                .spill
                .as_deref()
                .map_or_else(Vec::new, |sp| sp.late.iter().copied().filter(|(t, _)| (from..=to).contains(t)).collect()),
            ooo: h.ooo().iter().copied().filter(|(t, _)| (from..=to).contains(t)).collect(),
            floor_t: h.floor_t,
        }
    }

    /// The oldest timestamp held in memory: open, sealed or late samples.
    pub fn oldest(&self) -> Option<i64> {
        (0..SHARDS).flat_map(|shard| self.lock(shard).values().filter_map(SeriesHead::oldest).collect::<Vec<_>>()).min()
    }

    /// The newest timestamp of one series (in memory or already stored).
    pub fn newest_of(&self, id: u64) -> Option<i64> {
        self.lock(Self::shard_of(id)).get(id).map(SeriesHead::max_t)
    }

    /// The oldest timestamp one series holds in memory.
    pub fn oldest_of(&self, id: u64) -> Option<i64> {
        self.lock(Self::shard_of(id)).get(id).and_then(SeriesHead::oldest)
    }

    /// Marks every changed series (and, with `horizon`, every expired one)
    /// clean and lists them in id order. The checkpoint then takes each
    /// one's state with `snapshot`, a batch at a time, so it never holds a
    /// copy of every head at once.
    pub fn take_dirty(&self, horizon: Option<i64>) -> Vec<Taken> {
        let mut out = Vec::new();
        for shard in 0..SHARDS {
            for (id, h) in self.lock(shard).iter_mut() {
                let expired = horizon.is_some_and(|hz| h.max_t < hz);
                if h.dirty || expired {
                    h.dirty = false;
                    out.push(Taken { id, expired, sealed: 0, ooo: 0 });
                }
            }
        }
        out.sort_unstable_by_key(|t| t.id);
        out
    }

    /// One taken series' state, recording in `taken` what it holds. Samples
    /// appended since `take_dirty` may be in it; their log records replay
    /// over it.
    pub fn snapshot(&self, taken: &mut Taken) -> Snapshot {
        let mut shard = self.lock(Self::shard_of(taken.id));
        let Some(h) = shard.get_mut(taken.id) else {
            return Snapshot::default();
        };
        // Fold buffered late samples in now, so reads stop merging them.
        if h.spill.as_ref().is_some_and(|sp| !sp.late.is_empty()) {
            h.merge_late();
        }
        taken.sealed = h.sealed().len();
        taken.ooo = h.ooo().len();
        Snapshot {
            sealed: h.sealed().to_vec(),
            ooo: h.ooo().to_vec(),
            open: if h.open.is_empty() { Vec::new() } else { h.open.bytes() },
        }
    }

    /// After the checkpoint committed: drop what it wrote from memory.
    pub fn release(&self, done: &[Taken], horizon: Option<i64>) {
        for snap in done {
            let mut s = self.lock(Self::shard_of(snap.id));
            let Some(h) = s.get_mut(snap.id) else { continue };
            if snap.expired && horizon.is_some_and(|hz| h.max_t < hz) {
                s.remove(snap.id);
                continue;
            }
            if let Some(spill) = h.spill.as_deref_mut() {
                spill.sealed.drain(..snap.sealed.min(spill.sealed.len()));
                spill.ooo.drain(..snap.ooo.min(spill.ooo.len()));
                if spill.sealed.is_empty() && spill.ooo.is_empty() {
                    h.spill = None;
                }
            }
        }
    }

    /// After a failed checkpoint: the taken series are still to write.
    pub fn mark_dirty(&self, failed: &[Taken]) {
        for snap in failed {
            if let Some(h) = self.lock(Self::shard_of(snap.id)).get_mut(snap.id) {
                h.dirty = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_samples_seal_at_the_cut_and_late_ones_go_out_of_order() {
        let mut h = SeriesHead::default();
        for i in 0..CUT_SAMPLES as i64 + 10 {
            h.push(i * 1000, i as f64);
        }
        assert_eq!(h.sealed().len(), 1);
        assert_eq!(h.floor_t, (CUT_SAMPLES as i64 - 1) * 1000);
        assert_eq!(h.open.len(), 10);
        h.push(5000, 42.0);
        assert_eq!(h.ooo(), [(5000, 42.0)], "behind the sealed chunk");
        h.push(CUT_SAMPLES as i64 * 1000 + 500, 7.0);
        h.push(CUT_SAMPLES as i64 * 1000, -1.0);
        let open = h.open_samples();
        assert_eq!(open.len(), 11, "an in-head late sample is inserted");
        assert_eq!(open[0], (CUT_SAMPLES as i64 * 1000, -1.0), "and a duplicate replaces");
        assert_eq!(open[1].0, CUT_SAMPLES as i64 * 1000 + 500);
    }

    #[test]
    fn late_samples_inside_the_open_chunk_are_buffered_then_merged() {
        let mut h = SeriesHead::default();
        for i in 0..100i64 {
            h.push(i * 10, i as f64);
        }
        for i in 0..LATE_MERGE as i64 - 1 {
            h.push(i * 10 + 5, -1.0);
        }
        assert_eq!(h.spill.as_ref().unwrap().late.len(), LATE_MERGE - 1, "buffered, not re-encoded");
        assert_eq!(h.open_samples().len(), 100 + LATE_MERGE - 1, "but visible");
        h.push(20, 42.0);
        assert!(h.spill.as_ref().unwrap().late.is_empty(), "merged at the batch size");
        let open = h.open_samples();
        assert_eq!(open.len(), 100 + LATE_MERGE - 1);
        assert_eq!(open.iter().find(|s| s.0 == 20), Some(&(20, 42.0)), "the later write wins");
        assert!(open.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn snapshots_leave_memory_only_after_release() {
        let heads = Heads::default();
        for i in 0..CUT_SAMPLES as i64 + 1 {
            heads.with(7, |h| h.push(i, 1.0));
        }
        heads.with(7, |h| h.push(0, 2.0));
        heads.with(3, |h| h.push(0, 2.0));
        let mut taken = heads.take_dirty(None);
        assert_eq!(taken.iter().map(|t| t.id).collect::<Vec<_>>(), [3, 7], "in id order");
        taken.remove(0);
        let snap = heads.snapshot(&mut taken[0]);
        let open = gorilla::decode(&snap.open).unwrap();
        assert_eq!((snap.sealed.len(), snap.ooo.len(), open.len()), (1, 1, 1));
        assert_eq!((taken[0].sealed, taken[0].ooo), (1, 1));
        assert!(heads.take_dirty(None).is_empty(), "clean once taken");
        heads.with(7, |h| h.push(1, 3.0));
        let parts = heads.parts(7, 0, 10);
        assert_eq!((parts.sealed.len(), parts.ooo.len()), (1, 2), "still readable before release");
        heads.release(&taken, None);
        let parts = heads.parts(7, 0, i64::MAX);
        assert_eq!((parts.sealed.len(), parts.ooo), (0, vec![(1, 3.0)]), "what came later stays");
        heads.mark_dirty(&taken);
        assert_eq!(heads.take_dirty(None).len(), 1);
        assert_eq!(heads.take_dirty(Some(i64::MAX)).len(), 2, "expired series are taken too");
    }
}
