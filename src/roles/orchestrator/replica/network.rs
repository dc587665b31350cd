//! How Raft members reach each other: one HTTP/2 connection per peer
//! (fleet/client.rs; h2c, or TLS checked against the members' CA) to the
//! peer's own listener, JSON requests to `/raft/append`, `/raft/vote` and
//! `/raft/snapshot`, authenticated with the orchestrator's bearer token.
//! rpc.rs is the receiving side. Also forwards a follower's writes to the
//! leader (`/raft/write`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Node, NodeId, TypeConfig};
use crate::core::tls::{ClientTls, ClientTlsConfig};
use crate::roles::fleet::client::{Conn, Target};

/// Largest answer a member sends back.
const MAX_ANSWER: usize = 16 << 20;

/// How members check each other's certificates over https.
pub enum MemberTls {
    /// Against this CA bundle, for the host in the member's URL.
    Ca(ClientTlsConfig),
    /// Exactly the certificate this member presents (shared by all).
    Pinned(ClientTls),
}

/// What members need to dial each other.
pub struct Dialer {
    pub tls: Option<MemberTls>,
    pub token: Option<String>,
}

impl Dialer {
    /// Opens a connection to the member at `url`.
    pub async fn open(&self, url: &str) -> anyhow::Result<Conn> {
        let target = Target::parse(url).map_err(|e| anyhow::anyhow!("raft member {e}"))?;
        let tls = match &self.tls {
            Some(MemberTls::Ca(cfg)) => Some(ClientTls::load(cfg, &target.host, "orchestrator.raft")?),
            Some(MemberTls::Pinned(t)) => Some(t.clone()),
            None => None,
        };
        Conn::open(&target, tls.as_ref(), self.token.clone()).await
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

/// One POST with a deadline: the JSON answer, or why there is none.
pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
    conn: &mut Conn,
    path: &str,
    req: &Req,
    deadline: Duration,
) -> Result<Resp, String> {
    let body = Bytes::from(serde_json::to_vec(req).map_err(|e| format!("encoding {path}: {e}"))?);
    let (status, bytes) = tokio::time::timeout(deadline, conn.post(path, body, MAX_ANSWER))
        .await
        .map_err(|_| format!("{path}: no answer within {deadline:?}"))?
        .map_err(|e| format!("{path}: {e:#}"))?;
    if status != 200 {
        return Err(format!("{path}: {status} {}", String::from_utf8_lossy(&bytes).trim()));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("{path}: an answer that is not one: {e}"))
}

pub struct Network {
    pub dialer: Arc<Dialer>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Peer {
        Peer { target, url: node.addr.clone(), dialer: self.dialer.clone(), conn: None }
    }
}

/// One peer: its connection is opened when first needed and dropped on
/// any failure, to be opened again on the next call.
pub struct Peer {
    target: NodeId,
    url: String,
    dialer: Arc<Dialer>,
    conn: Option<Conn>,
}

impl Peer {
    async fn rpc<Req, Resp, E>(
        &mut self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let c = tokio::time::timeout(option.hard_ttl(), self.dialer.open(&self.url))
                    .await
                    .map_err(|_| Failed(format!("connecting to {}: timed out", self.url)))
                    .and_then(|r| r.map_err(|e| Failed(format!("{e:#}"))))
                    .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
                self.conn.insert(c)
            }
        };
        let answer: Result<Result<Resp, RaftError<NodeId, E>>, String> = call(conn, path, req, option.hard_ttl()).await;
        match answer {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new_with_node(self.target, Node { addr: self.url.clone() }, e)))
            }
            Err(e) => {
                self.conn = None;
                Err(RPCError::Network(NetworkError::new(&Failed(e))))
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.rpc("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>> {
        self.rpc("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.rpc("/raft/vote", &rpc, &option).await
    }
}
