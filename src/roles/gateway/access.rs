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
