//! Failure detection: a phi-accrual detector per node (Hayashibara et al.;
//! as Akka and Cassandra use it). Each node keeps its recent heartbeat
//! gaps; phi is how unlikely its current silence is, as -log10 of the
//! probability that a gap from that history would be this long. A node
//! whose phi reaches `phi_suspect` is suspect, `phi_dead` dead; its next
//! heartbeat makes it ready again. The expected gap is the interval the
//! node was assigned: histories restart from it whenever it changes. The
//! spread phi assumes is at most a third of the mean gap and at least a
//! fifth of it, or 250 ms when that is more (network delays do not grow
//! with the interval): a regular node is dead 2.2 intervals after its last
//! heartbeat at 5 s intervals, 2.5 at 1 s, a jittery one within 3.1.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

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
}

impl Beat {
    fn new(now: Instant, interval_ms: f64) -> Beat {
        Beat { last: now, gaps: VecDeque::from([interval_ms; 2]), health: Health::Unknown, applied_revision: 0 }
    }

    /// phi of the silence since the last heartbeat.
    fn phi(&self, now: Instant) -> f64 {
        let n = self.gaps.len() as f64;
        let mean = self.gaps.iter().sum::<f64>() / n;
        let var = self.gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n;
        // Regular heartbeats have almost no spread: a floor (a fifth of
        // the mean, or 250 ms of network delay when that is more) keeps a
        // late one from reading as a death; at most a third keeps a
        // jittery node's death from going unseen for long.
        let floor = (mean / 5.0).max(MIN_SPREAD_MS).min(mean / 3.0);
        let sd = var.sqrt().clamp(floor, mean / 3.0).max(1.0);
        let t = now.saturating_duration_since(self.last).as_secs_f64() * 1000.0;
        phi(t, mean, sd)
    }
}

/// -log10(1 - F(t)) for a normal distribution, with the logistic
/// approximation of its CDF (accurate to about 1e-4, no erf needed):
/// 1 - F = 1 / (1 + e^a), so phi = ln(1 + e^a) / ln 10, computed so that
/// it stays finite however long the silence.
pub fn phi(t: f64, mean: f64, sd: f64) -> f64 {
    let y = (t - mean) / sd;
    let a = y * (1.5976 + 0.070566 * y * y);
    let softplus = a.max(0.0) + (-a.abs()).exp().ln_1p();
    softplus / std::f64::consts::LN_10
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
    suspect: f64,
    dead: f64,
}

impl Detector {
    pub fn new(suspect: f64, dead: f64) -> Detector {
        Detector { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), suspect, dead }
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
        self.beats(id).entry(id.to_owned()).or_insert_with(|| Beat::new(now, interval_ms as f64));
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
        if b.health != Health::Unknown {
            if b.gaps.len() == HISTORY {
                b.gaps.pop_front();
            }
            b.gaps.push_back(gap);
        }
        b.last = now;
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
            let phi = b.phi(now);
            let to = if phi >= self.dead {
                Health::Dead
            } else if phi >= self.suspect {
                Health::Suspect
            } else {
                continue;
            };
            // Health only worsens here; a heartbeat makes it better.
            if to != b.health && (b.health != Health::Dead) {
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
            }
        }
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
        let regular = |interval: u64| {
            let d = Detector::new(5.0, 12.0);
            let t0 = Instant::now();
            d.watch("n", interval, t0);
            let mut t = t0;
            for _ in 0..10 {
                t += Duration::from_millis(interval);
                d.heartbeat("n", None, t);
            }
            (d, t)
        };
        let dead_after = |interval: u64, gaps: f64| {
            let (d, t) = regular(interval);
            d.sweep(t + Duration::from_millis((interval as f64 * gaps) as u64));
            d.health("n").map(|h| h.0) == Some(Health::Dead)
        };
        assert!(!dead_after(5000, 2.1) && dead_after(5000, 2.3));
        assert!(!dead_after(1000, 2.4) && dead_after(1000, 2.6));
    }

    #[test]
    fn a_silent_node_becomes_suspect_then_dead_and_a_heartbeat_revives_it() {
        let d = Detector::new(5.0, 12.0);
        let t0 = Instant::now();
        d.watch("n1", 1000, t0);
        let mut t = t0;
        for _ in 0..10 {
            t += Duration::from_millis(1000);
            d.heartbeat("n1", Some(3), t);
        }
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
    fn jittery_heartbeats_widen_the_tolerance_within_bounds() {
        let d = Detector::new(5.0, 12.0);
        let t0 = Instant::now();
        d.watch("n1", 1000, t0);
        let mut t = t0;
        for i in 0..32 {
            t += Duration::from_millis(if i % 2 == 0 { 400 } else { 1600 });
            d.heartbeat("n1", None, t);
        }
        // A 2.2 s gap is within this node's habits (sd ≈ 600 ms, capped at
        // a third of the mean), a 3.5 s one is not.
        assert!(d.sweep(t + Duration::from_millis(2200)).is_empty());
        assert_eq!(d.sweep(t + Duration::from_millis(3500))[0].to, Health::Dead);
    }
}
