//! `edgebox up` as an operator runs it: admin endpoints, signals, reload,
//! authentication, a second instance, backups under a running appliance.

use std::time::Duration;

use crate::support::{Appliance, http_get, run, text};

#[test]
fn admin_endpoints_answer_and_sigterm_drains() {
    let mut app = Appliance::start("", &["up"]);
    app.wait_ready();
    assert_eq!(app.get("/healthz"), (200, "ok\n".to_owned()));
    let (status, body) = app.get("/v1/roles");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["roles"]["admin"]["ready"], true, "{v}");
    assert!(v["edgebox"]["io"].is_string());
    let (_, metrics) = app.get("/metrics");
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "edgebox_uptime_seconds",
        "edgebox_io_uring_active",
        "edgebox_runtime_workers",
        "edgebox_store_commits_total",
        "edgebox_store_file_bytes",
        "http_server_request_duration_seconds_bucket{http_request_method=\"GET\",http_route=\"/v1/roles\"",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert_eq!(app.get("/nope").0, 404);
    app.signal("TERM");
    assert_eq!(app.wait_exit(Duration::from_secs(15)), Some(0));
}

/// Nothing scrapes /metrics here, as on a device nobody monitors yet: the
/// histogram samples of every request must still be folded into buckets and
/// freed, not held until a scrape that never comes.
#[test]
fn memory_stays_flat_under_load_when_nothing_scrapes_metrics() {
    let app = Appliance::start("", &["up"]);
    app.wait_ready();
    let pid = app.child.id();
    // The first round sets the plateau: the allocator's pages and at most
    // one upkeep interval's samples.
    pipeline_healthz(app.admin, 300_000);
    std::thread::sleep(Duration::from_millis(1500));
    let plateau = resident_kib(pid);
    pipeline_healthz(app.admin, 600_000);
    std::thread::sleep(Duration::from_millis(1500));
    let grew = resident_kib(pid).saturating_sub(plateau);
    // Held samples cost about 60 bytes a request (3 histograms): 34 MiB here.
    assert!(grew < 10 * 1024, "RSS grew {grew} KiB over 600 000 more requests, from {plateau} KiB");
    assert_eq!(app.get("/healthz").0, 200);
}

/// `total` GET /healthz on 4 connections, pipelined 500 at a time.
fn pipeline_healthz(admin: std::net::SocketAddr, total: usize) {
    use std::io::{Read, Write};
    const BATCH: usize = 500;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {admin}\r\n\r\n").repeat(BATCH);
    let answer = b"\r\n\r\nok\n";
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let mut c = std::net::TcpStream::connect(admin).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut buf = vec![0; 64 * 1024];
                for _ in 0..total / 4 / BATCH {
                    c.write_all(request.as_bytes()).unwrap();
                    let (mut seen, mut tail) = (0, Vec::new());
                    while seen < BATCH {
                        let n = c.read(&mut buf).unwrap();
                        assert!(n > 0, "the admin listener closed a pipelined connection");
                        tail.extend_from_slice(&buf[..n]);
                        seen += tail.windows(answer.len()).filter(|w| w == answer).count();
                        let keep = tail.len().min(answer.len() - 1);
                        tail.drain(..tail.len() - keep);
                    }
                }
            });
        }
    });
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
    line.split_whitespace().nth(1).and_then(|k| k.parse().ok()).expect("VmRSS in kB")
}

#[test]
fn sigint_also_drains_cleanly() {
    let mut app = Appliance::start("", &["up"]);
    app.wait_ready();
    app.signal("INT");
    assert_eq!(app.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn sighup_reloads_a_valid_config_and_rejects_a_broken_one() {
    let mut app = Appliance::start("[log]\nlevel = \"info\"\n", &["up"]);
    app.wait_ready();
    let cfg = app.dir.path().join("edgebox.toml");
    std::fs::write(&cfg, crate::support::with_free_ports("[log]\nlevel = \"debug\"\n[store]\ncache_mb = 32\n"))
        .unwrap();
    app.signal("HUP");
    app.wait_log("log level changed");
    let line = app.wait_log("only after a restart");
    assert!(line.contains("[store]"), "{line}");
    app.wait_log("config reloaded");
    std::fs::write(&cfg, "[log]\nlevel = \n").unwrap();
    app.signal("USR1");
    let line = app.wait_log("reload rejected");
    assert!(line.contains("edgebox.toml:2"), "{line}");
    assert_eq!(app.get("/healthz").0, 200, "a rejected reload must leave the appliance serving");
    let (_, metrics) = app.get("/metrics");
    assert!(metrics.contains("edgebox_reloads_total{result=\"rejected\"} 1"), "{metrics}");
    app.signal("TERM");
    assert_eq!(app.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn forced_blocking_io_is_reported() {
    let app = Appliance::start("", &["--io", "blocking", "up"]);
    app.wait_ready();
    let (_, metrics) = app.get("/metrics");
    assert!(metrics.contains("edgebox_io_uring_active 0"), "{metrics}");
    let (_, roles) = app.get("/v1/roles");
    assert!(roles.contains("blocking pool"), "{roles}");
}

#[test]
fn bearer_auth_guards_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token-0123456789\n").unwrap();
    let cfg = format!("[admin]\nauth = \"bearer\"\ntoken_file = \"{}\"\n", token.display());
    let app = Appliance::start(&cfg, &["up"]);
    assert_eq!(app.get("/metrics").0, 401);
    let wrong = http_get(app.admin, "/metrics", &[("Authorization", "Bearer s3cret-token-0123456780")]);
    assert_eq!(wrong.0, 401);
    let right = http_get(app.admin, "/metrics", &[("Authorization", "Bearer s3cret-token-0123456789")]);
    assert_eq!(right.0, 200);
    let logs = app.logs_so_far();
    assert!(!logs.iter().any(|l| l.contains("s3cret")), "the token leaked into the logs");
}

#[test]
fn a_second_appliance_on_the_same_data_dir_is_refused() {
    let app = Appliance::start("", &["up"]);
    app.wait_ready();
    let data = app.dir.path().join("data");
    let out = run(&["--data-dir", data.to_str().unwrap(), "--admin-listen", "127.0.0.1:0", "up"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("open in another process") || err.contains("already running"), "{err}");
}

#[test]
fn backup_and_info_work_while_the_appliance_runs_and_restore_waits_for_it() {
    let app = Appliance::start("", &["up"]);
    app.wait_ready();
    let data = app.dir.path().join("data");
    let d = data.to_str().unwrap();
    let dest = app.dir.path().join("live-backup.redb");
    let out = run(&["--data-dir", d, "store", "backup", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let info = run(&["--data-dir", d, "store", "info", "--json"]);
    assert_eq!(info.status.code(), Some(0), "{}", text(&info.stderr));
    assert!(text(&info.stdout).contains("meta.schema"));
    let check = run(&["--data-dir", d, "store", "check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(text(&check.stderr).contains("stop the appliance"), "{}", text(&check.stderr));
    let restore = run(&["--data-dir", d, "store", "restore", dest.to_str().unwrap()]);
    assert_eq!(restore.status.code(), Some(1));
    // The backup itself is a whole, clean store.
    let mut db = redb::Database::open(&dest).unwrap();
    assert!(db.check_integrity().unwrap());
}

#[test]
fn hostile_admin_clients_get_errors_not_hangs() {
    use std::io::{Read, Write};
    let app = Appliance::start("", &["up"]);
    app.wait_ready();
    // Garbage instead of HTTP.
    let mut s = std::net::TcpStream::connect(app.admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"\x00\x01\x02 not http at all\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(buf.is_empty() || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 400"), "{buf:?}");
    // An oversized header block.
    let mut s = std::net::TcpStream::connect(app.admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let huge = format!("GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(200_000));
    let _ = s.write_all(huge.as_bytes());
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let head = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || head.starts_with("HTTP/1.1 431") || head.starts_with("HTTP/1.1 400"), "{head}");
    // A method the admin API does not take.
    let mut s = std::net::TcpStream::connect(app.admin).unwrap();
    s.write_all(b"DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    assert!(buf.starts_with("HTTP/1.1 405"), "{buf}");
    assert_eq!(app.get("/healthz").0, 200, "the appliance must still serve");
}
