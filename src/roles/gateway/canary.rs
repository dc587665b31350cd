//! Which upstream serves a request: the canary for requests coloured
//! "canary" and for `percent` of the rest (sticky: the same key, a header's
//! value or the caller's SPIFFE ID, always lands on the same side), the
//! stable one otherwise and whenever the canary is unhealthy. Active checks
//! run here; passive outcomes are recorded by the upstream client.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use tokio_util::sync::CancellationToken;

use super::state::{Current, Service};
use crate::core::tls::spiffe::SpiffeId;

/// The side a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Stable,
    Canary,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Stable => "stable",
            Side::Canary => "canary",
        }
    }
}

/// Picks the side for one request.
pub fn pick(svc: &Service, headers: &HeaderMap, colour: &http::HeaderName, caller: Option<&SpiffeId>) -> Side {
    let Some(canary) = &svc.canary else { return Side::Stable };
    let coloured = headers.get(colour).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"canary"));
    let wanted = coloured || {
        let key = canary
            .cfg
            .sticky_header
            .as_deref()
            .and_then(|h| headers.get(h))
            .map(|v| v.as_bytes().to_vec())
            .or_else(|| caller.map(|c| c.to_string().into_bytes()));
        let bucket = match key {
            Some(k) => fnv1a(&k) % 10_000,
            None => u64::from(rand_u16()) % 10_000,
        };
        (bucket as f64) < canary.cfg.percent * 100.0
    };
    if wanted && canary.upstream.health.is_healthy() { Side::Canary } else { Side::Stable }
}

/// FNV-1a: stable across processes and restarts, so stickiness holds.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A random-enough number for unkeyed requests (std's per-process hash
/// keys over the clock).
fn rand_u16() -> u16 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now()) as u16
}

/// Checks both sides of every service with a canary, each at its interval,
/// until shutdown; state changes are logged and exported.
pub async fn check_forever(current: Arc<Current>, shutdown: CancellationToken) {
    let mut next: std::collections::HashMap<String, tokio::time::Instant> = Default::default();
    loop {
        let Some(state) = current.get() else { return };
        let now = tokio::time::Instant::now();
        let mut checks = Vec::new();
        for svc in state.services.iter().filter(|s| s.canary.is_some()) {
            let Some(c) = &svc.canary else { continue };
            if next.get(&svc.name).is_some_and(|t| *t > now) {
                continue;
            }
            next.insert(svc.name.clone(), now + Duration::from_millis(c.cfg.health_interval_ms));
            let path = c.cfg.health_path.clone().unwrap_or_else(|| "/".into());
            for (side, up) in [(Side::Stable, &svc.stable), (Side::Canary, &c.upstream)] {
                let (path, name) = (path.clone(), svc.name.clone());
                checks.push(async move {
                    let ok = up.check(&path).await;
                    if let Some(now_healthy) = up.health.record(ok) {
                        if now_healthy {
                            tracing::info!(service = %name, upstream = %up.url, side = side.as_str(), "gateway upstream healthy again");
                        } else {
                            tracing::warn!(service = %name, upstream = %up.url, side = side.as_str(), "gateway upstream unhealthy; its traffic goes to stable");
                        }
                    }
                    let healthy = if up.health.is_healthy() { 1.0 } else { 0.0 };
                    metrics::gauge!("edgebox_gateway_upstream_healthy", "service" => name, "side" => side.as_str()).set(healthy);
                });
            }
        }
        futures_util::future::join_all(checks).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}
