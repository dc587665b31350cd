//! The access log: one JSON line per request with the caller's SPIFFE ID.
//! Through the process log by default (target `edgebox::gateway::access`),
//! or to a file of its own through a buffer flushed every 250 ms and at
//! shutdown (as nginx's `access_log … buffer=`): a busy gateway then pays
//! a memcpy per request, not a write(2). The file is reopened on every
//! reload (SIGUSR1 after logrotate moved it).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use serde::Serialize;

/// One request, as logged.
#[derive(Serialize)]
pub struct Entry<'a> {
    pub ts: f64,
    pub caller: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub service: &'a str,
    pub upstream: &'a str,
    pub status: u16,
    pub duration_ms: f64,
}

pub enum AccessLog {
    /// Through the process log.
    Log,
    Off,
    File(Mutex<BufWriter<File>>),
}

impl AccessLog {
    /// `"log"`, `"off"`, or a file path (appended to, created 0640).
    pub fn open(spec: &str) -> anyhow::Result<AccessLog> {
        Ok(match spec {
            "log" => AccessLog::Log,
            "off" => AccessLog::Off,
            path => {
                use std::os::unix::fs::OpenOptionsExt;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .open(Path::new(path))
                    .with_context(|| format!("gateway.access_log: opening {path}"))?;
                AccessLog::File(Mutex::new(BufWriter::with_capacity(64 << 10, file)))
            }
        })
    }

    pub fn write(&self, e: &Entry<'_>) {
        match self {
            AccessLog::Off => {}
            AccessLog::Log => tracing::info!(target: "edgebox::gateway::access", parent: None, caller = e.caller,
                method = e.method, path = e.path, route = e.route, service = e.service, upstream = e.upstream,
                status = e.status, duration_ms = e.duration_ms, "access"),
            AccessLog::File(w) => {
                let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
                let written = serde_json::to_writer(&mut *w, e).map_err(std::io::Error::from);
                if written.and_then(|()| w.write_all(b"\n")).is_err() {
                    metrics::counter!("edgebox_gateway_access_log_errors_total").increment(1);
                }
            }
        }
    }

    pub fn flush(&self) {
        if let AccessLog::File(w) = self
            && w.lock().unwrap_or_else(|p| p.into_inner()).flush().is_err()
        {
            metrics::counter!("edgebox_gateway_access_log_errors_total").increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(caller: &str, status: u16) -> Entry<'_> {
        Entry {
            ts: 1.5,
            caller,
            method: "GET",
            path: "/pets/1",
            route: "/pets/{id}",
            service: "pets",
            upstream: "stable",
            status,
            duration_ms: 0.25,
        }
    }

    #[test]
    fn lines_from_several_threads_reach_the_file_whole_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(path.to_str().unwrap()).unwrap();
        // Enough to fill the buffer more than once.
        let per_thread = (64 << 10) / 150 + 7;
        std::thread::scope(|s| {
            for t in 0..3 {
                let log = &log;
                s.spawn(move || {
                    let caller = format!("spiffe://edge.example/node/{t}");
                    for i in 0..per_thread {
                        log.write(&entry(&caller, 200 + (i % 3) as u16));
                    }
                });
            }
        });
        let before_flush = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(
            before_flush > 0 && before_flush < 3 * per_thread,
            "{before_flush}: a full buffer went, the rest waits"
        );
        log.flush();
        log.write(&entry("spiffe://edge.example/last", 204));
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3 * per_thread + 1, "every line once, whole");
        for t in 0..3 {
            let caller = format!("spiffe://edge.example/node/{t}");
            assert_eq!(lines.iter().filter(|l| l["caller"] == caller.as_str()).count(), per_thread);
        }
        assert_eq!(lines.last().unwrap()["status"], 204, "dropping the log flushed it");
    }
}
