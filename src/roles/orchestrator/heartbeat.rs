//! Agents' heartbeat streams: `POST /v1/nodes/{id}/heartbeats` stays open
//! (one HTTP/2 stream, or a chunked HTTP/1.1 exchange, per agent; the agent
//! dials out, so devices behind NAT work). The request body carries one
//! JSON line per heartbeat (`{"applied_revision": 12}`); the response
//! carries directive lines (`{"interval_ms": 5000, "revision": 12,
//! "desired": "web@3"}`): the first at once, then in answer to a heartbeat
//! whenever the assigned interval, the topology revision or the node's
//! desired-state id (rollout.rs) moved, so a fleet-wide change wakes no
//! stream by itself. Heartbeats say which desired state the agent applied
//! (`"desired": "web@3", "failed": {"web": "why"}`). A heartbeat with a
//! `seq` is always answered, with `"ack": seq` (what the bench times).
//!
//! The interval is the fleet size over `heartbeat_budget_per_s`, within the
//! configured bounds: the total heartbeat rate stays inside the budget as
//! the fleet grows (as Nomad scales its heartbeat TTL).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::api::Api;

/// Longest heartbeat line.
const MAX_LINE: usize = 4096;
/// Heartbeats closer together than the interval over this are dropped.
const FLOOD_FACTOR: u32 = 4;
/// Dropped heartbeats in a row after which the stream is closed.
const FLOOD_LIMIT: u32 = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Beat {
    #[serde(default)]
    applied_revision: Option<u64>,
    #[serde(default)]
    seq: Option<u64>,
    /// The desired-state id the agent applied.
    #[serde(default)]
    desired: Option<String>,
    /// Deployments of it that failed, with why.
    #[serde(default)]
    failed: BTreeMap<String, String>,
}

/// One heartbeat line, or why it is refused.
pub(super) fn parse_beat(line: &[u8]) -> Result<Beat, String> {
    serde_json::from_slice(line).map_err(|e| format!("heartbeat line: {e} (expected {{\"applied_revision\": N}})"))
}

/// The interval for a fleet of `nodes`: the fleet over the budget, rounded
/// up to a step of a geometric ladder from `min` (10% apart), so the
/// budget holds and intervals change only when the fleet has grown or
/// shrunk by a tenth.
pub fn interval_ms(nodes: usize, budget_per_s: u32, min: u64, max: u64) -> u64 {
    let needed = (nodes as u64).saturating_mul(1000).div_ceil(u64::from(budget_per_s));
    let mut step = min;
    while step < needed && step < max {
        step = (step + step.div_ceil(10)).min(max);
    }
    step
}

pub type StreamBody =
    http_body_util::StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// Runs one agent's stream: the response body, fed by a task that reads
/// the heartbeats until the agent goes away.
pub fn session(api: Arc<Api>, id: String, body: Incoming) -> StreamBody {
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        metrics::gauge!("edgebox_orchestrator_streams").increment(1.0);
        let reason = read_beats(&api, &id, body, &tx).await;
        metrics::gauge!("edgebox_orchestrator_streams").decrement(1.0);
        if let Err(e) = reason {
            tracing::debug!(node = %id, reason = %e, "orchestrator: heartbeat stream closed");
            let _ = tx.send(Bytes::from(format!("{}\n", serde_json::json!({"error": e})))).await;
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))));
    http_body_util::StreamBody::new(Box::pin(stream) as futures_util::stream::BoxStream<'static, _>)
}

async fn read_beats(api: &Api, id: &str, mut body: Incoming, tx: &mpsc::Sender<Bytes>) -> Result<(), String> {
    let mut sent = Sent::default();
    directive(api, id, &mut sent, tx, Some(None)).await?;
    let mut buf = BytesMut::new();
    let mut last: Option<Instant> = None;
    let mut flooding = 0u32;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the stream: {e}"))?;
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line = buf.split_to(nl + 1);
            let beat = parse_beat(&line[..nl])?;
            let now = Instant::now();
            let spacing = Duration::from_millis(*api.interval.borrow()) / FLOOD_FACTOR;
            if last.is_some_and(|l| now.duration_since(l) < spacing) {
                metrics::counter!("edgebox_orchestrator_heartbeats_dropped_total").increment(1);
                flooding += 1;
                if flooding >= FLOOD_LIMIT {
                    return Err(format!("{FLOOD_LIMIT} heartbeats in a row faster than the assigned interval allows"));
                }
                continue;
            }
            flooding = 0;
            last = Some(now);
            if !api.replica.is_leader() {
                return Err("this orchestrator no longer leads; reconnect to the leader".into());
            }
            metrics::counter!("edgebox_orchestrator_heartbeats_total").increment(1);
            if !api.heartbeat(id, beat.applied_revision, now) {
                return Err(format!("node {id} is no longer registered"));
            }
            if let Some(applied) = beat.desired {
                api.rollouts.report(id, applied, beat.failed);
            }
            directive(api, id, &mut sent, tx, beat.seq.map(Some)).await?;
        }
        if buf.len() > MAX_LINE {
            return Err(format!("a heartbeat line over {MAX_LINE} bytes"));
        }
    }
    Ok(())
}

/// What a stream last told its agent.
#[derive(Default, PartialEq)]
struct Sent {
    interval_ms: u64,
    revision: u64,
    desired: String,
}

/// Sends the interval, revision and desired-state id when they differ from
/// what was sent, or when `answer` asks for a line anyway (`Some(seq)`:
/// with its ack).
async fn directive(
    api: &Api,
    id: &str,
    sent: &mut Sent,
    tx: &mpsc::Sender<Bytes>,
    answer: Option<Option<u64>>,
) -> Result<(), String> {
    let now = Sent {
        interval_ms: *api.interval.borrow(),
        revision: api.registry.revision(),
        desired: api.rollouts.desired_id(&api.registry, id),
    };
    if answer.is_none() && now == *sent {
        return Ok(());
    }
    let mut line =
        serde_json::json!({"interval_ms": now.interval_ms, "revision": now.revision, "desired": now.desired});
    *sent = now;
    if let Some(Some(seq)) = answer {
        line["ack"] = seq.into();
    }
    tx.send(Bytes::from(format!("{line}\n"))).await.map_err(|_| "the agent stopped reading".to_owned())
}

#[cfg(test)]
#[test]
fn the_interval_spreads_the_fleet_over_the_budget() {
    assert_eq!(interval_ms(10, 5000, 1000, 30_000), 1000);
    for (nodes, budget) in [(17_000, 5000), (100_000, 20_000), (99_000, 20_000), (250_000, 20_000)] {
        let i = interval_ms(nodes, budget, 1000, 30_000);
        let rate = nodes as f64 * 1000.0 / i as f64;
        assert!(rate <= f64::from(budget) && rate > f64::from(budget) * 0.9, "{nodes} nodes: {i} ms, {rate}/s");
    }
    assert_eq!(interval_ms(100_000, 20_000, 1000, 30_000), interval_ms(99_000, 20_000, 1000, 30_000), "one step");
    assert_eq!(interval_ms(10_000_000, 5000, 1000, 30_000), 30_000);
}
