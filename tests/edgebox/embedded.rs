//! Roles brought by a program that embeds edgebox (`lifecycle::run_with`):
//! a panicking role stops the process with exit 1 and its name in the log;
//! roles that declare the same port are refused before anything binds.
//!
//! Each case re-runs this test binary as the child process (the supervisor
//! owns signals and the panic hook, so it must have a process of its own).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgebox::core::role::{Declared, ListenerDecl, Role, RoleCtx};
use futures_util::future::BoxFuture;

use crate::support::text;

const CHILD: &str = "EDGEBOX_EMBEDDED_CHILD";

struct Panicker;

impl Role for Panicker {
    fn declared(&self) -> Declared {
        Declared::default()
    }
    fn run(self: Box<Self>, ctx: RoleCtx) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            ctx.status.set_ready(true);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            panic!("deliberate failure inside the role");
        })
    }
}

struct Listener(SocketAddr);

impl Role for Listener {
    fn declared(&self) -> Declared {
        Declared { listeners: vec![ListenerDecl { name: "http", addr: self.0 }], files: vec![] }
    }
    fn run(self: Box<Self>, ctx: RoleCtx) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let _l = ctx.bind("http").await?;
            ctx.status.set_ready(true);
            ctx.shutdown.cancelled().await;
            Ok(())
        })
    }
}

/// Ignores shutdown: the drain deadline must end the process anyway.
struct Stubborn;

impl Role for Stubborn {
    fn declared(&self) -> Declared {
        Declared::default()
    }
    fn run(self: Box<Self>, ctx: RoleCtx) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            ctx.status.set_ready(true);
            std::future::pending::<()>().await;
            Ok(())
        })
    }
}

/// Logs every reload generation it is handed.
struct Reloader;

impl Role for Reloader {
    fn declared(&self) -> Declared {
        Declared::default()
    }
    fn run(self: Box<Self>, mut ctx: RoleCtx) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            ctx.status.set_ready(true);
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    changed = ctx.reload.changed() => {
                        changed?;
                        let generation = ctx.reload.borrow_and_update().generation;
                        tracing::info!(generation, "reloader saw a reload");
                    }
                }
            }
        })
    }
}

/// The child side: runs the supervisor with the roles the case names.
fn child_main(case: &str, data: &str) -> ! {
    let config = std::path::Path::new(data).with_file_name("edgebox.toml");
    std::fs::write(&config, "[edgebox]\nshutdown_timeout_ms = 1000\nroles = []\n").unwrap();
    let global = edgebox::cli::GlobalArgs {
        config: Some(config),
        data_dir: Some(data.into()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        log_format: Some(edgebox::core::config::LogFormat::Json),
        ..Default::default()
    };
    let inv = edgebox::commands::Invocation::new(global);
    let roles: Vec<(&'static str, Box<dyn Role>)> = match case {
        "panic" => vec![("panicker", Box::new(Panicker))],
        "conflict" => {
            let addr: SocketAddr = "127.0.0.1:47931".parse().unwrap();
            vec![("first", Box::new(Listener(addr))), ("second", Box::new(Listener(addr)))]
        }
        "stubborn" => vec![("stubborn", Box::new(Stubborn))],
        "reloader" => vec![("reloader", Box::new(Reloader))],
        other => panic!("unknown case {other}"),
    };
    let result = edgebox::core::lifecycle::run_with(&inv, None, roles);
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            edgebox::core::exit::report(&e);
            edgebox::core::exit::code_for(&e)
        }
    };
    std::process::exit(code.into());
}

fn child_command(case: &str, dir: &tempfile::TempDir) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "embedded::child", "--include-ignored", "--nocapture", "--test-threads", "1"])
        .env(CHILD, format!("{case}:{}", dir.path().join("data").display()))
        .env_remove("EDGEBOX_CONFIG");
    cmd
}

fn run_child(case: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    child_command(case, &dir).output().unwrap()
}

/// Starts the child, waits for "ready", then signals it with each of
/// `signals` in turn, each time waiting for a log line holding the paired
/// text; returns the exit code and every log line.
fn drive_child(case: &str, steps: &[(&str, &str)]) -> (Option<i32>, Vec<String>) {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = child_command(case, &dir).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let wait_for = |needle: &str, seen: &mut Vec<String>| loop {
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| panic!("no {needle:?} in {seen:?}"));
        seen.push(line.clone());
        if line.contains(needle) {
            break;
        }
    };
    wait_for("\"ready\"", &mut seen);
    for (signal, expect) in steps {
        let ok = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
        assert!(ok.success());
        wait_for(expect, &mut seen);
    }
    let code = child.wait().unwrap().code();
    // The reader thread ends at EOF, which disconnects the channel.
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }
    (code, seen)
}

/// Not a test on its own: the entry point of the child process (ignored, so
/// a normal run neither runs nor counts it).
#[test]
#[ignore = "entry point of the child process, run by the tests below"]
fn child() {
    if let Ok(spec) = std::env::var(CHILD) {
        let (case, data) = spec.split_once(':').unwrap();
        child_main(case, data);
    }
}

#[test]
fn a_panicking_role_stops_the_process_with_exit_1_and_its_name_in_the_log() {
    let out = run_child("panic");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err.lines().find(|l| l.contains("deliberate failure")).unwrap_or_else(|| panic!("no panic log: {err}"));
    assert!(line.contains("\"role\":\"panicker\""), "the panic log does not name the role: {line}");
}

#[test]
fn roles_declaring_the_same_port_are_refused_before_anything_binds() {
    let out = run_child("conflict");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("roles `first` and `second` both declare listener 127.0.0.1:47931"), "{err}");
    assert!(!err.contains("admin listening"), "something bound before the conflict check: {err}");
}

#[test]
fn a_role_that_ignores_shutdown_is_cut_off_at_the_drain_deadline() {
    // The child's config sets a 1 s deadline.
    let started = Instant::now();
    let (code, logs) = drive_child("stubborn", &[("TERM", "drain deadline passed")]);
    assert_eq!(code, Some(0), "{logs:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[test]
fn every_reload_signal_reaches_the_roles() {
    let (code, logs) =
        drive_child("reloader", &[("HUP", "\"generation\":1"), ("USR1", "\"generation\":2"), ("TERM", "\"stopped\"")]);
    assert_eq!(code, Some(0), "{logs:?}");
    assert!(logs.iter().any(|l| l.contains("reloader saw a reload") && l.contains("\"generation\":2")), "{logs:?}");
}
