//! The receiving side of members' calls (network.rs): `POST /raft/append`,
//! `/raft/vote`, `/raft/snapshot` hand the request to this member's Raft
//! and answer its result as JSON; `POST /raft/write` commits a follower's
//! command on the leader (421 when this member does not lead). Only an
//! operator (the orchestrator's bearer token) reaches these; api.rs checks.

use http::StatusCode;
use serde::Serialize;

use super::super::api::{Body, error, full};
use super::super::command::Command;
use super::{Forwarded, Replica};

const ROUTE: &str = "/raft/{call}";

fn answer<T: Serialize>(v: &T) -> http::Response<Body> {
    match serde_json::to_value(v) {
        Ok(v) => full(ROUTE, StatusCode::OK, v),
        Err(e) => error(ROUTE, StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the answer: {e}")),
    }
}

fn parse<T: serde::de::DeserializeOwned>(call: &str, body: &[u8]) -> Result<T, Box<http::Response<Body>>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(ROUTE, StatusCode::BAD_REQUEST, format!("raft {call}: not a request of that kind: {e}")))
    })
}

pub async fn handle(replica: &Replica, call: &str, body: &[u8]) -> http::Response<Body> {
    let Replica::Raft(m) = replica else {
        return error(ROUTE, StatusCode::NOT_FOUND, "this orchestrator is not a raft member ([orchestrator.raft])");
    };
    let result = match call {
        "append" => match parse(call, body) {
            Ok(req) => answer(&m.raft.append_entries(req).await),
            Err(r) => *r,
        },
        "vote" => match parse(call, body) {
            Ok(req) => answer(&m.raft.vote(req).await),
            Err(r) => *r,
        },
        "snapshot" => match parse(call, body) {
            Ok(req) => answer(&m.raft.install_snapshot(req).await),
            Err(r) => *r,
        },
        "write" => match parse::<Command>(call, body) {
            Ok(cmd) => match m.raft.client_write(cmd).await {
                Ok(r) => answer(&Forwarded { outcome: r.data, index: r.log_id.index }),
                Err(e) => error(ROUTE, StatusCode::MISDIRECTED_REQUEST, format!("member {}: {e}", m.id)),
            },
            Err(r) => *r,
        },
        _ => error(ROUTE, StatusCode::NOT_FOUND, format!("no raft call {call:?}")),
    };
    metrics::counter!("edgebox_orchestrator_raft_rpcs_total", "call" => match call {
        "append" => "append",
        "vote" => "vote",
        "snapshot" => "snapshot",
        "write" => "write",
        _ => "other",
    })
    .increment(1);
    result
}
