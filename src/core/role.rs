//! The role contract: what a role declares, what it is given, how it runs.
//!
//! A role is a value built from its config section. Before anything binds, the
//! core collects every role's declared listeners and files and refuses
//! conflicts; then each role runs with a [`RoleCtx`] until shutdown. The table
//! entry ([`RoleEntry`]) erases the role's config type so the core can hold
//! every role in one static slice.

use std::any::Any;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::core::fileio::FileIo;
use crate::core::managed::ManagedRoles;
pub use crate::core::status::{RoleStatus, StatusBoard, StatusHandle};
use crate::core::store::{Migration, Store};
use crate::core::telemetry::MetricDoc;

/// Builds a role from its config section.
pub type LoadFn = fn(Option<toml::de::ValueDeserializer<'_>>) -> Result<Box<dyn Role>, toml::de::Error>;

/// One row of the multi-call table.
pub struct RoleEntry {
    /// The role's name: its subcommand, symlink name, config section and the
    /// prefix of its store tables and metrics.
    pub name: &'static str,
    /// One line for `--list` and `--help`.
    pub summary: &'static str,
    /// The Cargo feature that compiles it in.
    pub feature: &'static str,
    /// The role's documented default config section, as TOML text.
    pub default_config: &'static str,
    /// The role's store migrations, oldest first. The schema version is their
    /// count.
    pub migrations: &'static [Migration],
    /// Whether the role applies a new section while running (it watches
    /// `ctx.reload`). Others are restarted when desired state changes
    /// their section; SIGHUP leaves them on the config they started with,
    /// and /v1/roles says so.
    pub reloads: bool,
    /// Builds the role from its config section (`None`: the section is absent).
    pub load: LoadFn,
    /// A config section the compliance test runs the role with: every
    /// listener on port 0, no outside service needed.
    pub compliance_config: &'static str,
    /// Every metric the role records, with its help text.
    pub metrics: &'static [MetricDoc],
    /// Subcommands of the role besides `serve`, which the core adds.
    pub command: fn() -> clap::Command,
    /// Runs one of those subcommands.
    pub run_command: fn(&clap::ArgMatches, &crate::commands::Invocation) -> anyhow::Result<()>,
}

/// Builds a role's `load` function from its config type: an absent section is
/// the config's default; unknown keys are refused by the type itself
/// (`#[serde(deny_unknown_fields)]`); `build` may refuse the values with a
/// message naming the key.
pub fn load_with<C, R>(
    section: Option<toml::de::ValueDeserializer<'_>>,
    build: fn(C) -> Result<R, String>,
) -> Result<Box<dyn Role>, toml::de::Error>
where
    C: DeserializeOwned + Default,
    R: Role,
{
    let config = match section {
        Some(de) => C::deserialize(de)?,
        None => C::default(),
    };
    Ok(Box::new(build(config).map_err(<toml::de::Error as serde::de::Error>::custom)?))
}

/// For a role's tests: its documented default section parses to exactly
/// its config type's default, which it returns.
#[cfg(test)]
pub fn documented_default<C>(text: &str, section: &str) -> C
where
    C: DeserializeOwned + Default + PartialEq + std::fmt::Debug,
{
    let table: toml::Table = toml::from_str(text).expect("the documented default is TOML");
    let parsed: C = table[section].clone().try_into().expect("the documented default fits the config type");
    assert_eq!(parsed, C::default(), "[{section}]: the documented default differs from the code's");
    parsed
}

/// A role, built and not yet running.
pub trait Role: Any + Send {
    /// Every listener and file the role will use. Checked for conflicts with
    /// all other roles before any of them binds.
    fn declared(&self) -> Declared;
    /// Runs until `ctx.shutdown` fires, then returns once drained.
    fn run(self: Box<Self>, ctx: RoleCtx) -> BoxFuture<'static, anyhow::Result<()>>;
}

/// What a role will bind and own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Declared {
    pub listeners: Vec<ListenerDecl>,
    pub files: Vec<PathBuf>,
}

/// A TCP listener a role declares, by a name the role uses to bind it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerDecl {
    pub name: &'static str,
    pub addr: SocketAddr,
}

/// A listener or file claimed twice.
#[derive(Debug, thiserror::Error)]
pub enum Conflict {
    #[error("roles `{first}` and `{second}` both declare listener {addr}")]
    Listener { first: String, second: String, addr: SocketAddr },
    #[error("roles `{first}` and `{second}` both declare file {path}")]
    File { first: String, second: String, path: PathBuf },
}

/// Refuses two declarations of the same port on overlapping addresses (an
/// unspecified address overlaps every address of its family), or of the same
/// file. Port 0 asks the kernel for a free port and never conflicts.
pub fn check_conflicts(decls: &[(&str, &Declared)]) -> Result<(), Conflict> {
    let mut seen_addrs: Vec<(&str, SocketAddr)> = Vec::new();
    let mut seen_files: BTreeMap<PathBuf, &str> = BTreeMap::new();
    for (role, decl) in decls {
        for l in &decl.listeners {
            if l.addr.port() == 0 {
                continue;
            }
            if let Some((first, _)) = seen_addrs.iter().find(|(_, a)| overlaps(*a, l.addr)) {
                return Err(Conflict::Listener { first: first.to_string(), second: role.to_string(), addr: l.addr });
            }
            seen_addrs.push((role, l.addr));
        }
        for f in &decl.files {
            if let Some(first) = seen_files.insert(f.clone(), role) {
                return Err(Conflict::File { first: first.to_string(), second: role.to_string(), path: f.clone() });
            }
        }
    }
    Ok(())
}

fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Holds a rebuilt role until the role takes it.
type RebuiltSlot = Arc<Mutex<Option<Box<dyn Any + Send>>>>;

/// A new config, delivered on SIGHUP/SIGUSR1 after the whole file validated.
#[derive(Clone, Default)]
pub struct Reload {
    /// Increases by one per reload; 0 is the config the role started with.
    pub generation: u64,
    rebuilt: Option<RebuiltSlot>,
}

impl Reload {
    pub fn new(generation: u64, rebuilt: Box<dyn Role>) -> Self {
        let any: Box<dyn Any + Send> = rebuilt;
        Self { generation, rebuilt: Some(Arc::new(Mutex::new(Some(any)))) }
    }

    /// A reload that carries no new value for this role.
    pub fn unchanged(generation: u64) -> Self {
        Self { generation, rebuilt: None }
    }

    /// The role's value rebuilt from the new config, as its own type. Taken
    /// once; later calls (and a wrong type) give None.
    pub fn take<R: Role>(&self) -> Option<R> {
        let slot = self.rebuilt.as_ref()?;
        let taken = slot.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        taken.downcast::<R>().ok().map(|b| *b)
    }
}

/// What the supervisor hands every role alike.
#[derive(Clone)]
pub struct Shared {
    pub store: Store,
    pub data_dir: PathBuf,
    pub files: FileIo,
    pub shutdown: CancellationToken,
    /// Every file some role declared it writes, and that role.
    pub produced: Arc<BTreeMap<PathBuf, &'static str>>,
    pub managed: ManagedRoles,
}

/// A command for a running role from the CLI, through the control socket:
/// the role's own JSON, and where its answer goes.
pub struct RoleCommand {
    pub args: serde_json::Value,
    pub reply: tokio::sync::oneshot::Sender<Result<serde_json::Value, String>>,
}

/// The control socket's end of a role's command channel; `taken` turns
/// true once the role takes its receiver (roles without commands never do).
#[derive(Clone)]
pub struct CommandPort {
    pub tx: tokio::sync::mpsc::Sender<RoleCommand>,
    pub taken: Arc<std::sync::atomic::AtomicBool>,
}

impl CommandPort {
    /// A port and the receiving end to hand the role.
    pub fn new() -> (CommandPort, (tokio::sync::mpsc::Receiver<RoleCommand>, Arc<std::sync::atomic::AtomicBool>)) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let taken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        (CommandPort { tx, taken: taken.clone() }, (rx, taken))
    }
}

/// How long a role waits for a file another role writes at its first start.
const INPUT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Everything a role is given; no role reaches for a global.
pub struct RoleCtx {
    pub name: &'static str,
    pub store: Store,
    pub data_dir: PathBuf,
    /// File I/O on the path chosen at start (io_uring or the blocking pool).
    pub files: FileIo,
    /// Fires once when the process starts draining.
    pub shutdown: CancellationToken,
    /// Bumps on every accepted reload; a role that cannot apply a change says
    /// so in its log.
    pub reload: watch::Receiver<Reload>,
    pub status: StatusHandle,
    /// Starts, reconfigures and stops roles at runtime (the agent's use).
    pub managed: ManagedRoles,
    declared: Declared,
    produced: Arc<BTreeMap<PathBuf, &'static str>>,
    commands: Option<(tokio::sync::mpsc::Receiver<RoleCommand>, Arc<std::sync::atomic::AtomicBool>)>,
}

impl RoleCtx {
    pub fn new(
        name: &'static str,
        shared: &Shared,
        reload: watch::Receiver<Reload>,
        status: StatusHandle,
        declared: Declared,
        commands: (tokio::sync::mpsc::Receiver<RoleCommand>, Arc<std::sync::atomic::AtomicBool>),
    ) -> Self {
        Self {
            name,
            store: shared.store.clone(),
            data_dir: shared.data_dir.clone(),
            files: shared.files,
            shutdown: shared.shutdown.child_token(),
            reload,
            status,
            managed: shared.managed.clone(),
            declared,
            produced: shared.produced.clone(),
            commands: Some(commands),
        }
    }

    /// Commands sent to this role over the control socket (`edgebox <role>
    /// <command>`); a role that takes commands takes this once.
    pub fn commands(&mut self) -> tokio::sync::mpsc::Receiver<RoleCommand> {
        match self.commands.take() {
            Some((rx, taken)) => {
                taken.store(true, std::sync::atomic::Ordering::Release);
                rx
            }
            None => tokio::sync::mpsc::channel(1).1,
        }
    }

    /// Waits until each of `inputs` that another role declared it writes
    /// exists (a TLS certificate certguard issues on its first start), for
    /// up to a minute. Files no other role writes are not waited for: their
    /// absence is the caller's error to report.
    pub async fn inputs_ready(&self, inputs: &[&std::path::Path]) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + INPUT_WAIT;
        for path in inputs {
            let Some(writer) = self.produced.get(*path).filter(|w| **w != self.name) else { continue };
            if !path.exists() {
                tracing::info!(file = %path.display(), writer, "waiting for a file another role writes");
            }
            while !path.exists() {
                if tokio::time::Instant::now() >= deadline {
                    anyhow::bail!("{}: role `{writer}` did not write it within {INPUT_WAIT:?}", path.display());
                }
                tokio::select! {
                    _ = self.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                }
            }
        }
        Ok(())
    }

    /// Binds a listener the role declared. Binding anything undeclared is an
    /// error, so a role cannot open a port the conflict check did not see.
    pub async fn bind(&self, name: &str) -> anyhow::Result<TcpListener> {
        let decl = self
            .declared
            .listeners
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| anyhow::anyhow!("role `{}` binds listener `{name}` it did not declare", self.name))?;
        let listener = TcpListener::bind(decl.addr)
            .await
            .map_err(|e| anyhow::anyhow!("role `{}`: cannot bind {name} on {}: {e}", self.name, decl.addr))?;
        self.status.add_listener(name, listener.local_addr()?);
        Ok(listener)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(addrs: &[&str], files: &[&str]) -> Declared {
        Declared {
            listeners: addrs.iter().map(|a| ListenerDecl { name: "http", addr: a.parse().unwrap() }).collect(),
            files: files.iter().map(PathBuf::from).collect(),
        }
    }

    #[test]
    fn same_port_on_overlapping_addresses_conflicts() {
        let a = decl(&["0.0.0.0:9000"], &[]);
        let b = decl(&["127.0.0.1:9000"], &[]);
        let err = check_conflicts(&[("a", &a), ("b", &b)]).unwrap_err();
        assert!(err.to_string().contains("`a` and `b`"), "{err}");
    }

    #[test]
    fn distinct_addresses_and_port_zero_do_not_conflict() {
        let a = decl(&["127.0.0.1:9000", "127.0.0.1:0"], &["/x"]);
        let b = decl(&["127.0.0.2:9000", "127.0.0.1:0", "[::1]:9000"], &["/y"]);
        check_conflicts(&[("a", &a), ("b", &b)]).unwrap();
    }

    #[test]
    fn same_file_conflicts() {
        let a = decl(&[], &["/data/x"]);
        let b = decl(&[], &["/data/x"]);
        assert!(matches!(check_conflicts(&[("a", &a), ("b", &b)]), Err(Conflict::File { .. })));
    }
}
