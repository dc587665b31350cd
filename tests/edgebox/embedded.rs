//! Roles brought by a program that embeds edgebox (`lifecycle::run_with`):
//! a panicking role stops the process with exit 1 and its name in the log;
//! roles that declare the same port are refused before anything binds.
//!
//! Each case re-runs this test binary as the child process (the supervisor
//! owns signals and the panic hook, so it must have a process of its own).

use std::net::SocketAddr;
use std::process::Command;

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

/// The child side: runs the supervisor with the roles the case names.
fn child_main(case: &str, data: &str) -> ! {
    let global = edgebox::cli::GlobalArgs {
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

fn run_child(case: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "embedded::child", "--include-ignored", "--nocapture", "--test-threads", "1"])
        .env(CHILD, format!("{case}:{}", dir.path().join("data").display()))
        .env_remove("EDGEBOX_CONFIG")
        .output()
        .unwrap()
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
