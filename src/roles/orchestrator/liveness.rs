//! Failure detection: a phi-accrual detector per node (Hayashibara et al.;
//! as Akka and Cassandra use it). Each node keeps its recent heartbeat
//! gaps; phi is how unlikely its current silence is, as -log10 of the
//! probability that a gap from that history would be this long. A node
//! whose phi reaches `phi_suspect` is suspect, `phi_dead` dead; its next
//! heartbeat makes it ready again. The expected gap is the interval the
//! node was assigned: histories restart from it whenever it changes. The
//! spread phi assumes is at most a third of the mean gap and at least a
//! fifth of it, or 250 ms when that is more (network delays do not grow
//! with the interval): a regular node is dead 2.26 intervals after its
//! last heartbeat at 5 s intervals, 2.57 at 1 s, a jittery one within 3.1.
//! The gap a node's first heartbeat ends (after registration or an
//! outage) stays out of its history.
//!
//! phi only grows with the silence, so each heartbeat turns the thresholds
//! into two instants (suspect at, dead at) and a sweep compares instants:
//! at 100 000 nodes it is a fraction of a millisecond, not the tens a
//! phi per node took, which held a runtime worker and its heartbeats.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The least spread of heartbeat gaps phi assumes, in milliseconds.
const MIN_SPREAD_MS: f64 = 250.0;
/// Heartbeat gaps kept per node.
const HISTORY: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Registered, no heartbeat since this orchestrator started.
    Unknown,
    Ready,
    Suspect,
    Dead,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ready => "ready",
            Health::Suspect => "suspect",
            Health::Dead => "dead",
        }
    }

    pub const ALL: [Health; 4] = [Health::Unknown, Health::Ready, Health::Suspect, Health::Dead];
}

#[derive(Debug)]
struct Beat {
    last: Instant,
    gaps: VecDeque<f64>,
    health: Health,
    applied_revision: u64,
    /// When the silence since `last` reaches `phi_suspect` and `phi_dead`.
    suspect_at: Instant,
    dead_at: Instant,
}

impl Beat {
    fn new(now: Instant, interval_ms: f64, limits: &Limits) -> Beat {
        let mut b = Beat {
            last: now,
            gaps: VecDeque::from([interval_ms; 2]),
            health: Health::Unknown,
            applied_revision: 0,
            suspect_at: now,
            dead_at: now,
        };
        b.plan(limits);
        b
    }

    /// The mean gap and the spread phi assumes, in milliseconds.
    fn spread(&self) -> (f64, f64) {
        let n = self.gaps.len() as f64;
        let mean = self.gaps.iter().sum::<f64>() / n;
        let var = self.gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n;
        // Regular heartbeats have almost no spread: a floor (a fifth of
        // the mean, or 250 ms of network delay when that is more) keeps a
        // late one from reading as a death; at most a third keeps a
        // jittery node's death from going unseen for long.
        let floor = (mean / 5.0).max(MIN_SPREAD_MS).min(mean / 3.0);
        (mean, var.sqrt().clamp(floor, mean / 3.0).max(1.0))
    }

    /// Sets the instants the thresholds are reached, from `last` and the
    /// history.
    fn plan(&mut self, limits: &Limits) {
        let (mean, sd) = self.spread();
        let at = |y: f64| self.last + Duration::from_secs_f64((mean + y * sd).max(0.0) / 1000.0);
        (self.suspect_at, self.dead_at) = (at(limits.suspect), at(limits.dead));
    }
}

/// What the detector makes of one node's heartbeats (GET /v1/nodes/{id}),
/// in milliseconds: why it is, or would be, suspected when.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Liveness {
    pub since_last_ms: u64,
    pub mean_gap_ms: u64,
    pub spread_ms: u64,
    pub suspect_after_ms: u64,
    pub dead_after_ms: u64,
}

/// The thresholds as standard deviations past the mean gap.
#[derive(Debug, Clone, Copy)]
struct Limits {
    suspect: f64,
    dead: f64,
}

/// -log10(1 - F(t)) for a normal distribution, with the logistic
/// approximation of its CDF (accurate to about 1e-4, no erf needed):
/// 1 - F = 1 / (1 + e^a), so phi = ln(1 + e^a) / ln 10, computed so that
/// it stays finite however long the silence.
fn phi(t: f64, mean: f64, sd: f64) -> f64 {
    let y = (t - mean) / sd;
    let a = y * (1.5976 + 0.070566 * y * y);
    let softplus = a.max(0.0) + (-a.abs()).exp().ln_1p();
    softplus / std::f64::consts::LN_10
}

/// The `y` (standard deviations past the mean) at which [`phi`] reaches
/// `threshold`: phi is increasing in y, so bisection finds it.
fn deviations_for(threshold: f64) -> f64 {
    let (mut lo, mut hi) = (-100.0f64, 100.0f64);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if phi(mid, 0.0, 1.0) < threshold {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// A change of a node's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub id: String,
    pub from: Health,
    pub to: Health,
}

/// Nodes are spread over this many separately locked maps, so a sweep
/// over a large fleet holds back a heartbeat for one shard's worth of
/// work at most, never for the whole fleet's.
const SHARDS: usize = 64;

pub struct Detector {
    shards: Vec<Mutex<HashMap<String, Beat>>>,
    limits: Limits,
}

impl Detector {
    pub fn new(suspect: f64, dead: f64) -> Detector {
        let limits = Limits { suspect: deviations_for(suspect), dead: deviations_for(dead) };
        Detector { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), limits }
    }

    /// The shard holding `id` (FNV-1a of the id).
    fn beats(&self, id: &str) -> std::sync::MutexGuard<'_, HashMap<String, Beat>> {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in id.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.lock(h as usize % SHARDS)
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, HashMap<String, Beat>> {
        self.shards[shard].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching `id` as if it had just heartbeat (a new node, or
    /// every node when the orchestrator starts).
    pub fn watch(&self, id: &str, interval_ms: u64, now: Instant) {
        self.beats(id).entry(id.to_owned()).or_insert_with(|| Beat::new(now, interval_ms as f64, &self.limits));
    }

    pub fn forget(&self, id: &str) {
        self.beats(id).remove(id);
    }

    /// How many nodes are watched.
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.lock(i).len()).sum()
    }

    /// Every watched node.
    pub fn ids(&self) -> Vec<String> {
        (0..SHARDS).flat_map(|i| self.lock(i).keys().cloned().collect::<Vec<_>>()).collect()
    }

    /// A heartbeat: `None` for a node not watched (not registered), else
    /// the transition when it brings the node back.
    pub fn heartbeat(&self, id: &str, applied_revision: Option<u64>, now: Instant) -> Option<Option<Transition>> {
        let mut beats = self.beats(id);
        let b = beats.get_mut(id)?;
        let gap = now.saturating_duration_since(b.last).as_secs_f64() * 1000.0;
        // A first heartbeat, or one ending an outage (dead), says nothing
        // of the node's habits: a restart or a stream opened late would
        // otherwise stretch its tolerance for the next HISTORY heartbeats.
        if !matches!(b.health, Health::Unknown | Health::Dead) {
            if b.gaps.len() == HISTORY {
                b.gaps.pop_front();
            }
            b.gaps.push_back(gap);
        }
        b.last = now;
        b.plan(&self.limits);
        if let Some(r) = applied_revision {
            b.applied_revision = r;
        }
        let from = std::mem::replace(&mut b.health, Health::Ready);
        Some((from != Health::Ready).then(|| Transition { id: id.to_owned(), from, to: Health::Ready }))
    }

    /// Every node whose health changes at `now`.
    pub fn sweep(&self, now: Instant) -> Vec<Transition> {
        let mut out = Vec::new();
        for shard in 0..SHARDS {
            self.sweep_shard(shard, now, &mut out);
        }
        out
    }

    fn sweep_shard(&self, shard: usize, now: Instant, out: &mut Vec<Transition>) {
        for (id, b) in self.lock(shard).iter_mut() {
            // Health only worsens here; a heartbeat makes it better.
            let to = if b.health == Health::Dead || now < b.suspect_at {
                continue;
            } else if now >= b.dead_at {
                Health::Dead
            } else {
                Health::Suspect
            };
            if to != b.health {
                out.push(Transition { id: id.clone(), from: b.health, to });
                b.health = to;
            }
        }
    }

    /// The interval assigned to every node changed: their histories start
    /// over from it.
    pub fn reassign(&self, interval_ms: u64) {
        for shard in 0..SHARDS {
            for b in self.lock(shard).values_mut() {
                b.gaps = VecDeque::from([interval_ms as f64; 2]);
                b.plan(&self.limits);
            }
        }
    }

    pub fn liveness(&self, id: &str, now: Instant) -> Option<Liveness> {
        let beats = self.beats(id);
        let b = beats.get(id)?;
        let (mean, sd) = b.spread();
        let ms = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
        Some(Liveness {
            since_last_ms: ms(now.saturating_duration_since(b.last)),
            mean_gap_ms: mean.round() as u64,
            spread_ms: sd.round() as u64,
            suspect_after_ms: ms(b.suspect_at.saturating_duration_since(b.last)),
            dead_after_ms: ms(b.dead_at.saturating_duration_since(b.last)),
        })
    }

    pub fn health(&self, id: &str) -> Option<(Health, u64)> {
        self.beats(id).get(id).map(|b| (b.health, b.applied_revision))
    }

    /// Nodes per health.
    pub fn counts(&self) -> [(Health, usize); 4] {
        let mut n = [0usize; 4];
        for shard in 0..SHARDS {
            for b in self.lock(shard).values() {
                n[Health::ALL.iter().position(|h| *h == b.health).unwrap_or(0)] += 1;
            }
        }
        [0, 1, 2, 3].map(|i| (Health::ALL[i], n[i]))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A detector (phi 5 suspect, 12 dead) watching `id` at `interval`
    /// that heard it after each of `gaps` (ms); the last heartbeat's time.
    fn heard(id: &str, interval: u64, gaps: impl IntoIterator<Item = u64>) -> (Detector, Instant) {
        let d = Detector::new(5.0, 12.0);
        let mut t = Instant::now();
        d.watch(id, interval, t);
        for gap in gaps {
            t += Duration::from_millis(gap);
            d.heartbeat(id, Some(3), t);
        }
        (d, t)
    }

    #[test]
    fn phi_grows_with_silence() {
        assert!(phi(1000.0, 1000.0, 250.0) < 0.5);
        let (s, d) = (phi(2000.0, 1000.0, 250.0), phi(2600.0, 1000.0, 250.0));
        assert!((4.0..6.0).contains(&s), "{s}");
        assert!((11.0..14.0).contains(&d), "{d}");
        assert!(phi(10_000.0, 1000.0, 250.0).is_finite());
    }

    #[test]
    fn long_intervals_assume_a_fifth_of_spread_short_ones_250_ms() {
        let dead_after = |interval: u64, gaps: f64| {
            let (d, t) = heard("n", interval, [interval; 10]);
            d.sweep(t + Duration::from_millis((interval as f64 * gaps) as u64));
            d.health("n").map(|h| h.0) == Some(Health::Dead)
        };
        assert!(!dead_after(5000, 2.1) && dead_after(5000, 2.3));
        assert!(!dead_after(1000, 2.4) && dead_after(1000, 2.6));
    }

    #[test]
    fn a_silent_node_becomes_suspect_then_dead_and_a_heartbeat_revives_it() {
        let (d, t) = heard("n1", 1000, [1000; 10]);
        assert_eq!(d.health("n1"), Some((Health::Ready, 3)));
        assert!(d.sweep(t + Duration::from_millis(1500)).is_empty());
        let s = d.sweep(t + Duration::from_millis(2200));
        assert_eq!(s, vec![Transition { id: "n1".into(), from: Health::Ready, to: Health::Suspect }]);
        let dead = d.sweep(t + Duration::from_millis(2800));
        assert_eq!(dead[0].to, Health::Dead);
        assert!(d.sweep(t + Duration::from_millis(9000)).is_empty(), "dead stays dead without repeats");
        let back = d.heartbeat("n1", None, t + Duration::from_millis(9000)).unwrap().unwrap();
        assert_eq!(d.heartbeat("nobody", None, t), None);
        assert_eq!((back.from, back.to), (Health::Dead, Health::Ready));
        assert_eq!(d.counts()[1], (Health::Ready, 1));
    }

    #[test]
    fn the_planned_instants_are_where_phi_crosses_the_thresholds() {
        let (d, _) = heard("n", 1000, [900, 1300, 700, 1100, 1000, 1600, 950]);
        let beats = d.beats("n");
        let b = &beats["n"];
        let (mean, sd) = b.spread();
        let phi_at = |at: Instant| phi(at.duration_since(b.last).as_secs_f64() * 1000.0, mean, sd);
        let ms = Duration::from_millis(1);
        for (at, threshold) in [(b.suspect_at, 5.0), (b.dead_at, 12.0)] {
            assert!(phi_at(at - ms) < threshold && phi_at(at + ms) >= threshold, "{threshold}");
        }
    }

    #[test]
    fn an_outage_does_not_widen_the_tolerance_after_it() {
        let d = Detector::new(5.0, 12.0);
        let t0 = Instant::now();
        d.watch("n", 1000, t0);
        d.sweep(t0 + Duration::from_secs(30));
        assert_eq!(d.health("n").map(|h| h.0), Some(Health::Dead));
        let mut t = t0 + Duration::from_secs(30);
        for _ in 0..5 {
            d.heartbeat("n", None, t);
            t += Duration::from_millis(1000);
        }
        let l = d.liveness("n", t).unwrap();
        assert_eq!((l.mean_gap_ms, l.dead_after_ms), (1000, 2573), "{l:?}");
    }

    #[test]
    fn jittery_heartbeats_widen_the_tolerance_within_bounds() {
        let (d, t) = heard("n1", 1000, (0..32).map(|i| if i % 2 == 0 { 400 } else { 1600 }));
        // A 2.2 s gap is within this node's habits (sd ≈ 600 ms, capped at
        // a third of the mean), a 3.5 s one is not.
        assert!(d.sweep(t + Duration::from_millis(2200)).is_empty());
        assert_eq!(d.sweep(t + Duration::from_millis(3500))[0].to, Health::Dead);
    }
}
