//! Process and runtime metrics, sampled when /metrics is scraped.
//!
//! Read from /proc so they cost nothing between scrapes; names follow the
//! Prometheus client conventions (process_*) so existing dashboards work.

use std::time::Instant;

use metrics::gauge;

/// Samples process facts into gauges.
pub struct ProcessMetrics {
    started: Instant,
    store: std::path::PathBuf,
}

impl ProcessMetrics {
    pub fn new(io_uring: bool, store: std::path::PathBuf) -> Self {
        gauge!("edgebox_io_uring_active").set(if io_uring { 1.0 } else { 0.0 });
        gauge!("edgebox_build_info", "version" => env!("CARGO_PKG_VERSION"), "target" => env!("EDGEBOX_TARGET"))
            .set(1.0);
        if let Ok(start) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            gauge!("process_start_time_seconds").set(start.as_secs_f64());
        }
        Self { started: Instant::now(), store }
    }

    /// Updates the gauges; called before each render.
    pub fn sample(&self) {
        gauge!("edgebox_uptime_seconds").set(self.started.elapsed().as_secs_f64());
        if let Some(rss) = rss_bytes() {
            gauge!("process_resident_memory_bytes").set(rss as f64);
        }
        if let Ok(meta) = std::fs::metadata(&self.store) {
            gauge!("edgebox_store_file_bytes").set(meta.len() as f64);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            gauge!("process_open_fds").set(dir.count() as f64);
        }
        if let Some(cpu) = cpu_seconds() {
            gauge!("process_cpu_seconds_total").set(cpu);
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let m = handle.metrics();
            gauge!("edgebox_runtime_workers").set(m.num_workers() as f64);
            gauge!("edgebox_runtime_alive_tasks").set(m.num_alive_tasks() as f64);
            gauge!("edgebox_runtime_global_queue_depth").set(m.global_queue_depth() as f64);
        }
    }
}

/// Resident set size, from VmRSS in /proc/self/status (in kB whatever the
/// page size).
pub fn rss_bytes() -> Option<u64> {
    rss_of("self")
}

/// [`rss_bytes`] of another process (`pid`, or "self"): for the benches.
pub fn rss_of(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn cpu_seconds() -> Option<f64> {
    cpu_seconds_of("self")
}

/// CPU seconds (user and system) a process (`pid`, or "self") has used.
pub fn cpu_seconds_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, in clock ticks (USER_HZ, 100 on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
