//! The control socket of a running appliance: <data_dir>/edgebox.ctl.
//!
//! Store operations that need the live store (a backup taken while roles keep
//! writing, info on a locked store) reach the running process here. A Unix
//! socket with mode 0600 means only the store's owner can ask; the protocol is
//! one JSON request line and one JSON answer line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::core::role::{CommandPort, RoleCommand};
use crate::core::store::Store;

/// The longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// A consistent copy of the live store to `path` (on the appliance's host).
    Backup { path: PathBuf },
    /// Store size and tables.
    StoreInfo,
    /// A command for a running role, in that role's own JSON.
    Role { role: String, command: serde_json::Value },
}

/// Where role commands go, by role name (managed roles come and go).
pub type RoleCommands = std::sync::Arc<std::sync::RwLock<std::collections::HashMap<String, CommandPort>>>;

/// How long a role may take to answer a command (a certificate rollout
/// waits for reloads and probes).
const ROLE_ANSWER: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    #[serde(default)]
    pub result: serde_json::Value,
    #[serde(default)]
    pub error: Option<String>,
}

/// Parses one request line; the error names what was wrong and where.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    serde_json::from_slice::<Request>(line).map_err(|e| format!("bad request at column {}: {e}", e.column()))
}

/// Binds the socket (replacing a stale one from a crashed run) with mode 0600.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("{}: another edgebox is already running on this data directory", path.display());
        }
        std::fs::remove_file(path)?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| anyhow::anyhow!("{}: cannot bind control socket: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers requests until shutdown, then removes the socket.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    store: Store,
    roles: RoleCommands,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => { tracing::warn!(error = %e, "control socket accept failed"); continue; }
            },
        };
        let (store, roles) = (store.clone(), roles.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(stream, store, &roles).await {
                tracing::debug!(error = %e, "control request failed");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn answer(stream: UnixStream, store: Store, roles: &RoleCommands) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let n = BufReader::new(read).take(MAX_REQUEST as u64).read_line(&mut line).await?;
    let reply = if n == 0 || !line.ends_with('\n') {
        Answer {
            ok: false,
            result: serde_json::Value::Null,
            error: Some("request must be one JSON line under 64 KiB".into()),
        }
    } else {
        match parse_request(line.as_bytes()) {
            Err(e) => Answer { ok: false, result: serde_json::Value::Null, error: Some(e) },
            Ok(req) => match execute(req, &store, roles).await {
                Ok(result) => Answer { ok: true, result, error: None },
                Err(e) => Answer { ok: false, result: serde_json::Value::Null, error: Some(format!("{e:#}")) },
            },
        }
    };
    let mut out = serde_json::to_vec(&reply)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

async fn execute(req: Request, store: &Store, roles: &RoleCommands) -> anyhow::Result<serde_json::Value> {
    match req {
        Request::Backup { path } => {
            tracing::info!(path = %path.display(), "backup requested over the control socket");
            let bytes = store.backup(path.clone()).await?;
            Ok(serde_json::json!({ "path": path, "bytes": bytes }))
        }
        Request::StoreInfo => {
            let store = store.clone();
            let info = tokio::task::spawn_blocking(move || store.info()).await??;
            Ok(serde_json::to_value(info)?)
        }
        Request::Role { role, command } => {
            let to = roles.read().unwrap_or_else(|p| p.into_inner()).get(&role).cloned();
            let to = to.ok_or_else(|| anyhow::anyhow!("role `{role}` is not running here"))?;
            if !to.taken.load(std::sync::atomic::Ordering::Acquire) {
                anyhow::bail!("role `{role}` takes no commands (or has not started yet)");
            }
            let (reply, answer) = tokio::sync::oneshot::channel();
            to.tx
                .send(RoleCommand { args: command, reply })
                .await
                .map_err(|_| anyhow::anyhow!("role `{role}` takes no commands"))?;
            match tokio::time::timeout(ROLE_ANSWER, answer).await {
                Ok(Ok(result)) => result.map_err(anyhow::Error::msg),
                Ok(Err(_)) => anyhow::bail!("role `{role}` takes no commands"),
                Err(_) => anyhow::bail!("role `{role}` did not answer within {ROLE_ANSWER:?}"),
            }
        }
    }
}

/// Sends one request to a running appliance (blocking; for the CLI).
pub fn call(socket: &Path, req: &Request) -> anyhow::Result<serde_json::Value> {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| anyhow::anyhow!("{}: cannot reach the running appliance: {e}", socket.display()))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(600)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    std::io::BufReader::new(stream).read_line(&mut answer)?;
    let answer: Answer =
        serde_json::from_str(&answer).map_err(|e| anyhow::anyhow!("bad answer from the appliance: {e}"))?;
    if answer.ok { Ok(answer.result) } else { anyhow::bail!("{}", answer.error.unwrap_or_default()) }
}
