//! Reconnection delays shared by the roles that keep a connection to a
//! peer (the streamer's source, the agent's orchestrator): a fleet that
//! lost the same peer must not come back in step.

use std::time::Duration;

/// `d` spread by ±20%.
pub fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.subsec_nanos());
    d.mul_f64(0.8 + f64::from(nanos % 400) / 1000.0)
}

#[cfg(test)]
#[test]
fn jitter_stays_within_a_fifth() {
    for _ in 0..100 {
        let j = jitter(Duration::from_secs(10));
        assert!(j >= Duration::from_secs(8) && j <= Duration::from_secs(12), "{j:?}");
    }
}
