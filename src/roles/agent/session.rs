//! One connection to the orchestrator: which credentials it uses (a join
//! token first, then the node certificate, on https; the bearer token on
//! http), registration, and the heartbeat stream that carries the node's
//! reports up and the orchestrator's directives down.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use serde_json::json;

use super::Refused;
use super::applier::Desire;
use super::node_cert::NodeCert;
use crate::core::role::RoleCtx;
use crate::core::tls::{ClientTls, ClientTlsConfig};
use crate::roles::fleet::client::{self, Conn, Target};

/// Where and as whom the agent connects.
pub struct Link<'a> {
    pub target: &'a Target,
    /// `[agent.tls]` (or the defaults for an https orchestrator).
    pub tls: Option<&'a ClientTlsConfig>,
    /// The join token (https) or bearer token (http).
    pub token: Option<String>,
    pub node_cert: NodeCert,
}

impl Link<'_> {
    /// Whether sessions present the node certificate (https, and no
    /// certificate of the device's own configured).
    fn uses_node_cert(&self) -> bool {
        self.target.tls && self.tls.is_none_or(|t| t.cert_file.is_none())
    }

    /// The TLS and bearer token for the next connection. An https agent
    /// with a join token and no node certificate yet joins first.
    async fn credentials(
        &self,
        registration: &serde_json::Value,
    ) -> anyhow::Result<(Option<ClientTls>, Option<String>)> {
        let host = &self.target.host;
        let base = self.tls.cloned().unwrap_or_default();
        if !self.target.tls {
            return Ok((None, self.token.clone()));
        }
        if !self.uses_node_cert() {
            return Ok((Some(ClientTls::load(&base, host, "agent.tls")?), self.token.clone()));
        }
        let present = self.node_cert.present();
        if present && self.node_cert.expired() {
            match &self.token {
                Some(_) => {
                    tracing::warn!(cert = %self.node_cert.cert.display(), "agent: the node certificate has ended; joining again")
                }
                None => anyhow::bail!(
                    "the node certificate {} has ended (the device was offline past its renewal); join again with a join token",
                    self.node_cert.cert.display()
                ),
            }
        }
        if !present || self.node_cert.expired() {
            let Some(token) = &self.token else {
                return Ok((Some(ClientTls::load(&base, host, "agent.tls")?), None));
            };
            let server_only = ClientTls::load(&base, host, "agent.tls")?;
            let mut conn = Conn::open(self.target, Some(&server_only), Some(token.clone())).await?;
            let id = registration["id"].as_str().unwrap_or_default();
            let spiffe_id = self.node_cert.join(&mut conn, id, registration["machine_id"].as_str()).await?;
            tracing::info!(spiffe_id = %spiffe_id, "agent: joined; presenting the node certificate from now on");
        }
        let with_cert = ClientTlsConfig {
            cert_file: Some(self.node_cert.cert.clone()),
            key_file: Some(self.node_cert.key.clone()),
            ..base
        };
        Ok((Some(ClientTls::load(&with_cert, host, "agent.tls")?), None))
    }

    /// When this session renews the node certificate (seconds since the
    /// epoch), if it presents one.
    fn renew_at(&self) -> Option<i64> {
        self.uses_node_cert().then(|| self.node_cert.lifetime().map(|(renew, _)| renew)).flatten()
    }
}

/// One connection: register, then heartbeat until the stream ends.
pub async fn session(
    link: &Link<'_>,
    registration: &serde_json::Value,
    state: &Mutex<serde_json::Value>,
    ctx: &RoleCtx,
    desire: &Desire,
) -> anyhow::Result<()> {
    let (tls, token) = link.credentials(registration).await?;
    let mut conn = Conn::open(link.target, tls.as_ref(), token).await?;
    let (status, answer) = conn.post_json("/v1/nodes", registration).await.context("registering")?;
    if let Some(m) = client::moved(status, &answer) {
        return Err(m.into());
    }
    match status {
        200 | 201 => {}
        400 | 401 | 403 | 409 => {
            return Err(Refused(format!("registration refused ({status}): {}", answer["error"])).into());
        }
        _ => anyhow::bail!("registration answered {status}: {}", answer["error"]),
    }
    let id = registration["id"].as_str().unwrap_or_default();
    let (beats, mut directives) = conn.stream(id).await?;
    let mut buf = Vec::new();
    let first = client::next_line(&mut directives, &mut buf).await?.context("the stream closed at once")?;
    // A zero interval would make the ticker panic: refused like a missing one.
    let mut interval =
        first["interval_ms"].as_u64().filter(|&i| i > 0).context("no usable interval in the first directive")?;
    let mut revision = first["revision"].as_u64().unwrap_or(0);
    let mut wanted = first["desired"].as_str().map(str::to_owned);
    tracing::info!(node = id, interval_ms = interval, revision, "agent: registered and heartbeating");
    metrics::gauge!("edgebox_agent_connected").set(1.0);
    {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s["connected"] = json!(true);
        s["interval_ms"] = json!(interval);
        s["revision"] = json!(revision);
        ctx.status.set_detail(s.clone());
    }
    let mut tick = tokio::time::interval(Duration::from_millis(interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let renew_at = link.renew_at();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if renew_at.is_some_and(|at| super::node_cert::now_s() >= at) {
                    let spiffe_id = link.node_cert.renew(&mut conn, id).await.context("renewing the node certificate")?;
                    tracing::info!(spiffe_id = %spiffe_id, "agent: node certificate renewed; reconnecting with it");
                    return Ok(());
                }
                if let Some(w) = &wanted {
                    desire.fetch_if_new(w, &conn, id);
                }
                let (applied, failed) = desire.report(&ctx.managed);
                let line = format!("{}\n", json!({"applied_revision": revision, "desired": applied, "failed": failed}));
                beats.send(Bytes::from(line)).await.map_err(|_| anyhow::anyhow!("the heartbeat stream closed"))?;
                metrics::counter!("edgebox_agent_heartbeats_total").increment(1);
            }
            line = client::next_line(&mut directives, &mut buf) => {
                let Some(d) = line? else { anyhow::bail!("the orchestrator closed the stream") };
                if let Some(e) = d["error"].as_str() {
                    anyhow::bail!("the orchestrator closed the stream: {e}");
                }
                if let Some(i) = d["interval_ms"].as_u64().filter(|&i| i != interval && i > 0) {
                    interval = i;
                    tick = tokio::time::interval(Duration::from_millis(interval));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    tracing::info!(interval_ms = interval, "agent: heartbeat interval reassigned");
                }
                revision = d["revision"].as_u64().unwrap_or(revision);
                if let Some(w) = d["desired"].as_str() {
                    desire.fetch_if_new(w, &conn, id);
                    wanted = Some(w.to_owned());
                }
                let (applied, failed) = desire.report(&ctx.managed);
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                s["interval_ms"] = json!(interval);
                s["revision"] = json!(revision);
                s["desired"] = json!(applied);
                s["failed"] = json!(failed);
                ctx.status.set_detail(s.clone());
            }
        }
    }
}
