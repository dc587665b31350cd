//! Running roles in one process: `edgebox up` and `edgebox <role> serve`.
//!
//! The supervisor opens the store, builds the admin service and every enabled
//! role, refuses conflicting declarations before anything binds, runs each
//! role in its own span, and turns signals into lifecycle events: SIGTERM and
//! SIGINT drain within the deadline, SIGHUP and SIGUSR1 reload the config. A
//! panic anywhere is logged (inside the role's span, so with its name) and
//! ends the process with exit code 1.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::commands::Invocation;
use crate::core::admin::{self, AdminService};
use crate::core::config::{CoreConfig, LoadedConfig};
use crate::core::exit::ConfigProblem;
use crate::core::fileio::FileIo;
use crate::core::managed::{self, Manager, ManagerParts};
use crate::core::role::{Declared, Reload, Role, RoleCtx, Shared, StatusBoard, StatusHandle, check_conflicts};
use crate::core::runtime::{self, IoPath};
use crate::core::store::{CORE_SCHEMA, SchemaOwner, Store, StoreOptions};
use crate::core::{control, telemetry};

/// Every schema owner compiled in: the core, then each role.
pub fn schema_owners() -> Vec<SchemaOwner> {
    std::iter::once(CORE_SCHEMA)
        .chain(crate::roles::ROLES.iter().map(|r| SchemaOwner { name: r.name, migrations: r.migrations }))
        .collect()
}

/// Runs the enabled roles (or just `only`) until a signal stops them.
pub fn run(inv: &Invocation, only: Option<&'static str>) -> anyhow::Result<()> {
    run_with(inv, only, Vec::new())
}

/// [`run`] plus roles that are not in the table: for programs that embed
/// edgebox and bring roles of their own. They get the same context, checks
/// and lifecycle as table roles.
pub fn run_with(
    inv: &Invocation,
    only: Option<&'static str>,
    extra: Vec<(&'static str, Box<dyn Role>)>,
) -> anyhow::Result<()> {
    run_inner(inv, only, extra, None)
}

/// Runs the table role `name` alone, as `role` (built from its command
/// line, e.g. `edgebox agent --join URL`) instead of from the config file.
pub fn run_alone(inv: &Invocation, name: &'static str, role: Box<dyn Role>) -> anyhow::Result<()> {
    run_inner(inv, Some(name), Vec::new(), Some(role))
}

fn run_inner(
    inv: &Invocation,
    only: Option<&'static str>,
    extra: Vec<(&'static str, Box<dyn Role>)>,
    replace: Option<Box<dyn Role>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let loaded = inv.load_config()?;
    let core = &loaded.core;
    prepare_data_dir(&core.edgebox.data_dir)?;
    let io = runtime::choose(core.edgebox.io).map_err(|e| ConfigProblem(format!("{e:#}")))?;
    let workers = if core.edgebox.workers == 0 { runtime::default_workers() } else { core.edgebox.workers };
    let rt = runtime::build(workers, &io).context("cannot start the runtime")?;
    let result = rt.block_on(supervise(inv, loaded, (only, replace), extra, io, workers, started));
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}

/// Creates the data directory and proves it is writable, so an unusable one
/// is a config error at start, not a store error later.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    let problem = |what: &str, e: std::io::Error| ConfigProblem(format!("data_dir {}: {what}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(|e| problem("cannot create it", e))?;
    let probe = dir.join(format!(".edgebox-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| problem("not writable", e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

struct Running {
    name: &'static str,
    status: StatusHandle,
    reload: watch::Sender<Reload>,
}

async fn supervise(
    inv: &Invocation,
    loaded: LoadedConfig,
    (only, replace): (Option<&'static str>, Option<Box<dyn Role>>),
    extra: Vec<(&'static str, Box<dyn Role>)>,
    io: IoPath,
    workers: usize,
    started: Instant,
) -> anyhow::Result<()> {
    let core = loaded.core.clone();
    let mut telemetry = telemetry::init(&core.log, &core.telemetry)?;
    install_panic_hook();
    if let IoPath::Blocking { reason } = &io {
        tracing::warn!(reason = %reason, "io_uring not in use; file I/O runs on the blocking pool");
    }

    let store_path = core.store_path();
    let opts = StoreOptions { cache_bytes: core.store.cache_mb << 20, max_batch: core.store.max_batch };
    let store = {
        let path = store_path.clone();
        tokio::task::spawn_blocking(move || Store::open(&path, &schema_owners(), &opts)).await??
    };

    let enabled: Vec<&'static str> = match only {
        Some(name) => vec![name],
        None => loaded.enabled_roles(),
    };
    let mut roles: Vec<(&'static str, Box<dyn Role>)> =
        loaded.roles.into_iter().filter(|r| enabled.contains(&r.entry.name)).map(|r| (r.entry.name, r.role)).collect();
    if let Some(role) = replace
        && let Some(slot) = roles.iter_mut().find(|(n, _)| Some(*n) == only)
    {
        slot.1 = role;
    }
    for (name, role) in extra {
        if name == admin::NAME || roles.iter().any(|(n, _)| *n == name) {
            return Err(ConfigProblem(format!("two roles are named `{name}`")).into());
        }
        roles.push((name, role));
    }
    let readiness = Arc::new(Notify::new());
    let statuses: Vec<(&'static str, StatusHandle)> = std::iter::once(admin::NAME)
        .chain(roles.iter().map(|(n, _)| *n))
        .map(|n| (n, StatusHandle::new(readiness.clone())))
        .collect();
    let facts = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "target": env!("EDGEBOX_TARGET"),
        "io": io.to_string(),
        "workers": workers,
        "store": store_path,
    });
    let board = StatusBoard::new(statuses.clone());
    let admin = AdminService::new(
        &core.admin,
        telemetry.prometheus.clone(),
        board.clone(),
        telemetry::ProcessMetrics::new(io.is_uring(), store_path.clone()),
        facts,
    )?;
    roles.insert(0, (admin::NAME, Box::new(admin)));

    let decls: Vec<(&str, Declared)> = roles.iter().map(|(n, r)| (*n, r.declared())).collect();
    let refs: Vec<(&str, &Declared)> = decls.iter().map(|(n, d)| (*n, d)).collect();
    check_conflicts(&refs).map_err(|e| ConfigProblem(e.to_string()))?;

    let shutdown = CancellationToken::new();
    let ctl_path = core.control_socket();
    let ctl = control::bind(&ctl_path)?;
    let command_senders = control::RoleCommands::default();
    let mut command_receivers = Vec::new();
    for (name, _) in &roles {
        let (port, receiver) = crate::core::role::CommandPort::new();
        command_senders.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), port);
        command_receivers.push(receiver);
    }
    let control_task =
        tokio::spawn(control::serve(ctl, ctl_path, store.clone(), command_senders.clone(), shutdown.clone()));

    let (managed, inbox) = managed::channel(board.clone());
    let produced = decls.iter().flat_map(|(n, d)| d.files.iter().map(|f| (f.clone(), *n))).collect();
    let shared = Shared {
        store: store.clone(),
        data_dir: core.edgebox.data_dir.clone(),
        files: FileIo::new(&io),
        shutdown: shutdown.clone(),
        produced: Arc::new(produced),
        managed,
    };
    let deadline = Duration::from_millis(core.edgebox.shutdown_timeout_ms);
    let manager = Manager::new(
        shared.clone(),
        ManagerParts {
            fixed: decls.iter().map(|(n, d)| (*n, d.clone())).collect(),
            board,
            readiness: readiness.clone(),
            commands: command_senders,
            drain: deadline,
        },
        inbox,
    );
    let mut tasks = JoinSet::new();
    let mut running = Vec::new();
    for (((name, role), (decl_name, declared)), commands) in roles.into_iter().zip(decls).zip(command_receivers) {
        debug_assert_eq!(name, decl_name);
        let status = statuses.iter().find(|(n, _)| *n == name).map(|(_, s)| s.clone()).unwrap_or_default();
        status.set_state("starting");
        let (reload_tx, reload_rx) = watch::channel(Reload::default());
        let ctx = RoleCtx::new(name, &shared, reload_rx, status.clone(), declared, commands);
        let span = tracing::info_span!("role", role = name);
        tasks.spawn(async move { (name, role.run(ctx).await) }.instrument(span));
        running.push(Running { name, status, reload: reload_tx });
    }
    tasks.spawn(async move { ("managed roles", manager.run().await) }.instrument(tracing::info_span!("managed")));
    let announce = tokio::spawn(announce_ready(running.iter().map(|r| r.status.clone()).collect(), readiness, started));

    let outcome = wait_for_stop(inv, &core, &telemetry, &mut tasks, &running, &shutdown).await;
    shutdown.cancel();
    running.iter().for_each(|r| r.status.set_state("draining"));
    drain(&mut tasks, deadline).await;
    let _ = control_task.await;
    announce.abort();
    drop((shared, store));
    telemetry.shutdown();
    tracing::info!(uptime_s = started.elapsed().as_secs_f64(), "stopped");
    outcome
}

/// Logs "ready" with the start-up time once every role is ready.
async fn announce_ready(statuses: Vec<StatusHandle>, changed: Arc<Notify>, started: Instant) {
    loop {
        let next_change = changed.notified();
        if statuses.iter().all(|s| s.snapshot().ready) {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            metrics::gauge!("edgebox_startup_seconds").set(ms / 1000.0);
            tracing::info!(startup_ms = format!("{ms:.1}"), "ready");
            return;
        }
        next_change.await;
    }
}

/// Waits for a stop signal or a role that ends; handles reloads meanwhile.
async fn wait_for_stop(
    inv: &Invocation,
    started_with: &CoreConfig,
    telemetry: &telemetry::Telemetry,
    tasks: &mut JoinSet<(&'static str, anyhow::Result<()>)>,
    running: &[Running],
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut generation = 0u64;
    let mut current = started_with.clone();
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!(signal = "SIGTERM", "draining"); return Ok(()); }
            _ = int.recv() => { tracing::info!(signal = "SIGINT", "draining"); return Ok(()); }
            _ = hup.recv() => {
                generation += 1;
                current = reload(inv, &current, telemetry, running, generation).await.unwrap_or(current);
            }
            _ = usr1.recv() => {
                generation += 1;
                current = reload(inv, &current, telemetry, running, generation).await.unwrap_or(current);
            }
            joined = tasks.join_next() => {
                let Some(joined) = joined else { return Ok(()) };
                return match joined {
                    Ok((name, Ok(()))) if shutdown.is_cancelled() => { tracing::info!(role = name, "stopped"); Ok(()) }
                    Ok((name, Ok(()))) => Err(anyhow::anyhow!("role `{name}` stopped on its own")),
                    Ok((name, Err(e))) => Err(e.context(format!("role `{name}` failed"))),
                    Err(e) => Err(anyhow::anyhow!("a role task ended abnormally: {e}")),
                };
            }
        }
    }
}

/// Re-reads the config; only a file that validates whole is delivered.
/// Returns the new core config when it was accepted.
async fn reload(
    inv: &Invocation,
    current: &CoreConfig,
    telemetry: &telemetry::Telemetry,
    running: &[Running],
    generation: u64,
) -> Option<CoreConfig> {
    let inv = inv.clone();
    let loaded = tokio::task::spawn_blocking(move || inv.load_config()).await;
    let loaded = match loaded {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            metrics::counter!("edgebox_reloads_total", "result" => "rejected").increment(1);
            tracing::error!(generation, error = %format!("{e:#}"), "reload rejected; the running config stays");
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "reload task failed");
            return None;
        }
    };
    metrics::counter!("edgebox_reloads_total", "result" => "accepted").increment(1);
    apply_core_changes(current, &loaded.core, telemetry, generation);
    let mut rebuilt: BTreeMap<&str, Box<dyn Role>> = loaded.roles.into_iter().map(|r| (r.entry.name, r.role)).collect();
    for r in running {
        let msg = match rebuilt.remove(r.name) {
            Some(role) => Reload::new(generation, role),
            None => Reload::unchanged(generation),
        };
        let reloads = crate::roles::find(r.name).is_none_or(|e| e.reloads);
        r.status.note_reload(if reloads {
            format!("generation {generation} delivered")
        } else {
            format!("generation {generation}: this role applies config changes at restart")
        });
        let _ = r.reload.send(msg);
    }
    tracing::info!(generation, "config reloaded");
    Some(loaded.core)
}

/// The log level changes at once; the other core settings are fixed for the
/// life of the process, and a change to them is named in the log.
fn apply_core_changes(old: &CoreConfig, new: &CoreConfig, telemetry: &telemetry::Telemetry, generation: u64) {
    if old.log.level != new.log.level {
        match telemetry.set_log_level(&new.log.level) {
            Ok(()) => tracing::info!(generation, level = %new.log.level, "log level changed"),
            Err(e) => tracing::warn!(generation, error = %format!("{e:#}"), "log level not changed"),
        }
    }
    let mut needs_restart = Vec::new();
    if old.edgebox != new.edgebox {
        needs_restart.push("[edgebox]");
    }
    if old.log.format != new.log.format {
        needs_restart.push("log.format");
    }
    if old.admin != new.admin {
        needs_restart.push("[admin]");
    }
    if old.store != new.store {
        needs_restart.push("[store]");
    }
    if old.telemetry != new.telemetry {
        needs_restart.push("[telemetry]");
    }
    if !needs_restart.is_empty() {
        tracing::warn!(generation, changed = %needs_restart.join(", "), "these settings apply only after a restart");
    }
}

async fn drain(tasks: &mut JoinSet<(&'static str, anyhow::Result<()>)>, deadline: Duration) {
    let all = async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((name, Err(e))) => {
                    tracing::error!(role = name, error = %format!("{e:#}"), "role failed while draining")
                }
                Ok((name, Ok(()))) => tracing::debug!(role = name, "drained"),
                Err(e) => tracing::error!(error = %e, "role task ended abnormally while draining"),
            }
        }
    };
    if tokio::time::timeout(deadline, all).await.is_err() {
        tracing::warn!(
            deadline_ms = deadline.as_millis() as u64,
            remaining = tasks.len(),
            "drain deadline passed; stopping anyway"
        );
        tasks.abort_all();
    }
}

/// Logs a panic inside the current span (so with the role's name) and ends
/// the process with exit code 1, the same with panic=unwind and panic=abort.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        tracing::error!(panic = %msg, location = %location, "panic; stopping with exit code 1");
        eprintln!("edgebox: panic at {location}: {msg}");
        std::process::exit(crate::core::exit::RUNTIME as i32);
    }));
}
