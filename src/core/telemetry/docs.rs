//! What each metric means: the `# HELP` line beside it on `/metrics`.
//!
//! The core's metrics are described here, each role's in its table entry
//! (`RoleEntry::metrics`). A test reads the source: a metric recorded
//! without a description, or described and never recorded, fails it.

/// The kind a metric is recorded as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric's name, kind and help text.
pub struct MetricDoc {
    pub kind: Kind,
    pub name: &'static str,
    pub help: &'static str,
}

impl MetricDoc {
    pub const fn counter(name: &'static str, help: &'static str) -> MetricDoc {
        MetricDoc { kind: Kind::Counter, name, help }
    }

    pub const fn gauge(name: &'static str, help: &'static str) -> MetricDoc {
        MetricDoc { kind: Kind::Gauge, name, help }
    }

    pub const fn histogram(name: &'static str, help: &'static str) -> MetricDoc {
        MetricDoc { kind: Kind::Histogram, name, help }
    }
}

/// The core's metrics: process, runtime, store, listeners, reloads.
pub const CORE: &[MetricDoc] = &[
    MetricDoc::gauge("edgebox_build_info", "Always 1; the labels carry the edgebox version and target triple."),
    MetricDoc::gauge("edgebox_io_uring_active", "1 when file I/O runs on io_uring, 0 on the blocking-pool fallback."),
    MetricDoc::gauge("edgebox_uptime_seconds", "Seconds since the appliance started."),
    MetricDoc::gauge("edgebox_startup_seconds", "Seconds from process start until every role was ready."),
    MetricDoc::gauge("edgebox_runtime_workers", "Worker threads of the shared async runtime."),
    MetricDoc::gauge("edgebox_runtime_alive_tasks", "Tasks alive on the shared runtime."),
    MetricDoc::gauge("edgebox_runtime_global_queue_depth", "Tasks waiting in the runtime's global queue."),
    MetricDoc::gauge("process_start_time_seconds", "Process start time, seconds since the Unix epoch."),
    MetricDoc::gauge("process_resident_memory_bytes", "Resident memory of the process, in bytes."),
    MetricDoc::gauge("process_open_fds", "Open file descriptors of the process."),
    MetricDoc::gauge("process_cpu_seconds_total", "User and system CPU time the process has used, in seconds."),
    MetricDoc::gauge("edgebox_store_file_bytes", "Size of the embedded store's file, in bytes."),
    MetricDoc::counter("edgebox_store_commits_total", "Write transactions committed to the embedded store."),
    MetricDoc::histogram("edgebox_store_commit_batch_size", "Writes grouped into one store commit."),
    MetricDoc::histogram(
        "edgebox_store_commit_duration_seconds",
        "Time to commit one batch to the store, fsync included.",
    ),
    MetricDoc::counter("edgebox_reloads_total", "Config reloads (SIGHUP, SIGUSR1), by result: accepted or rejected."),
    MetricDoc::counter("edgebox_managed_applies_total", "Desired-state role changes applied, by result: ok or failed."),
    MetricDoc::gauge("edgebox_managed_roles", "Roles running from the orchestrator's desired state."),
    MetricDoc::counter("edgebox_admin_requests_total", "Requests to the admin listener."),
    MetricDoc::counter(
        "edgebox_unauthorized_requests_total",
        "Requests refused for a missing or wrong bearer token, by role.",
    ),
    MetricDoc::counter(
        "edgebox_tls_handshake_failures_total",
        "TLS handshakes that failed or timed out on a role's listener, by role.",
    ),
    MetricDoc::counter(
        "edgebox_svid_rejections_total",
        "Client X.509-SVIDs refused at the handshake, by config section and reason.",
    ),
    MetricDoc::histogram(
        "http_server_request_duration_seconds",
        "HTTP requests served, from the head read to the body sent, by method, route, status and role.",
    ),
    MetricDoc::histogram(
        "http_server_request_body_size_bytes",
        "Request body sizes, by method, route, status and role.",
    ),
    MetricDoc::histogram(
        "http_server_response_body_size_bytes",
        "Response body sizes, by method, route, status and role.",
    ),
    MetricDoc::histogram("rpc_server_call_duration_seconds", "gRPC calls served, by method, gRPC status and role."),
];

/// Hands every description to the installed recorder.
pub fn describe(docs: &[MetricDoc]) {
    for d in docs {
        match d.kind {
            Kind::Counter => metrics::describe_counter!(d.name, d.help),
            Kind::Gauge => metrics::describe_gauge!(d.name, d.help),
            Kind::Histogram => metrics::describe_histogram!(d.name, d.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;

    /// Every metric a `counter!`, `gauge!` or `histogram!` call names with a
    /// literal in the files under `dir`, with its kind and file.
    fn recorded(dir: &Path, out: &mut BTreeMap<String, (Kind, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                recorded(&path, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (macro_name, kind) in
                [("counter!(", Kind::Counter), ("gauge!(", Kind::Gauge), ("histogram!(", Kind::Histogram)]
            {
                for (at, _) in text.match_indices(macro_name) {
                    let rest = text[at + macro_name.len()..].trim_start();
                    let Some(quoted) = rest.strip_prefix('"') else { continue };
                    let name = &quoted[..quoted.find('"').unwrap()];
                    if name.is_empty()
                        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    {
                        continue; // not a metric name: the patterns above
                    }
                    out.insert(name.to_owned(), (kind, path.display().to_string()));
                }
            }
        }
    }

    /// The source tree of the core, or of one role.
    fn metrics_in(sub: &str) -> BTreeMap<String, (Kind, String)> {
        let mut out = BTreeMap::new();
        recorded(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(sub), &mut out);
        out.retain(|name, _| !name.starts_with("t_"));
        out
    }

    fn check(what: &str, docs: &[MetricDoc], recorded: &BTreeMap<String, (Kind, String)>) {
        for (name, (kind, file)) in recorded {
            let doc = docs.iter().find(|d| d.name == name);
            let doc = doc.unwrap_or_else(|| panic!("{file} records {name}, which {what}'s table does not describe"));
            assert_eq!(doc.kind, *kind, "{file} records {name} as a {kind:?}; {what}'s table says {:?}", doc.kind);
            assert!(doc.help.ends_with('.') && doc.help.len() >= 10, "{name}: help text `{}`", doc.help);
        }
        for d in docs {
            assert!(recorded.contains_key(d.name), "{what}'s table describes {}, which nothing records", d.name);
        }
    }

    #[test]
    fn every_metric_the_core_records_is_described_and_nothing_else() {
        check("the core", CORE, &metrics_in("core"));
    }

    #[test]
    fn every_metric_a_role_records_is_described_in_its_entry_under_its_prefix() {
        for entry in crate::roles::ROLES {
            let recorded = metrics_in(&format!("roles/{}", entry.name));
            check(entry.name, entry.metrics, &recorded);
            let prefix = format!("edgebox_{}_", entry.name);
            for d in entry.metrics {
                assert!(d.name.starts_with(&prefix), "{}: {} is outside its prefix {prefix}", entry.name, d.name);
            }
        }
    }
}
