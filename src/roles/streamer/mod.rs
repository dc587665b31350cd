//! streamer: MySQL/MariaDB binlog to Kafka change-data capture. The role
//! connects to the source as a replica (mysql/, source.rs), decodes the
//! row-based binlog (binlog/), turns each row change into a Debezium- or
//! Maxwell-style record keyed by primary key (envelope.rs), publishes with
//! an idempotent producer (publish.rs) and saves the position Kafka has
//! acknowledged (position.rs) in the store, with the schema history it
//! follows from DDL (schema/); snapshot.rs copies the tables at a position
//! before streaming from it; pipeline.rs ties one run together, and this
//! file restarts runs with backoff. cli.rs and dump.rs
//! print binlogs as JSON lines; bench.rs measures against
//! python-mysql-replication on the peers of peers.rs (MariaDB, tansu),
//! which the tests share; fuzz.rs feeds the decoder to the fuzz targets.

mod bench;
pub mod binlog;
mod cli;
pub mod config;
mod dump;
mod envelope;
mod exactly_once;
pub mod fuzz;
pub mod gtid;
pub mod mysql;
mod pipeline;
mod position;
mod publish;
pub mod schema;
mod snapshot;
mod source;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::core::ports::free_loopback;
use crate::core::role::{Declared, Role, RoleCtx, RoleEntry, StatusHandle, load_with};
use crate::core::store::Store;
use crate::core::telemetry::MetricDoc;
use config::StreamerConfig;
use source::SourceMisconfigured;

pub const ENTRY: RoleEntry = RoleEntry {
    name: "streamer",
    summary: "MySQL/MariaDB binlog to Kafka change-data capture (Debezium or Maxwell records)",
    feature: "streamer",
    default_config: config::DEFAULT,
    compliance_config: config::COMPLIANCE,
    migrations: &[],
    reloads: false,
    load: |section| load_with(section, Streamer::new),
    metrics: METRICS,
    command: cli::command,
    run_command: cli::run,
};

/// The streamer's metrics.
const METRICS: &[MetricDoc] = &[
    MetricDoc::gauge("edgebox_streamer_connected", "1 while the binlog stream from the source is open."),
    MetricDoc::counter("edgebox_streamer_restarts_total", "Times the pipeline stopped on an error and started again."),
    MetricDoc::counter("edgebox_streamer_bytes_total", "Binlog bytes read from the source."),
    MetricDoc::counter("edgebox_streamer_events_total", "Binlog events read, by type."),
    MetricDoc::counter(
        "edgebox_streamer_rows_total",
        "Row changes published to Kafka, by op (insert, update, delete).",
    ),
    MetricDoc::counter(
        "edgebox_streamer_oversized_total",
        "Row changes larger than kafka.max_message_bytes (handled as the config says).",
    ),
    MetricDoc::counter(
        "edgebox_streamer_schema_mismatch_total",
        "Row events whose columns disagree with the schema history (the binlog's metadata is used).",
    ),
    MetricDoc::counter(
        "edgebox_streamer_ddl_unparsed_total",
        "DDL statements or table definitions the schema history cannot follow.",
    ),
    MetricDoc::histogram(
        "edgebox_streamer_publish_seconds",
        "Time from sending a change to Kafka to its acknowledgement.",
    ),
    MetricDoc::histogram("edgebox_streamer_lag_seconds", "Time from the source's commit to Kafka's acknowledgement."),
    MetricDoc::gauge("edgebox_streamer_in_flight", "Messages sent to Kafka and not yet acknowledged."),
    MetricDoc::gauge(
        "edgebox_streamer_unacknowledged",
        "Binlog positions waiting for their changes' acknowledgements.",
    ),
    MetricDoc::counter("edgebox_streamer_kafka_commits_total", "Kafka transactions committed."),
    MetricDoc::counter(
        "edgebox_streamer_backpressure_waits_total",
        "Times publishing waited for acknowledgements before sending more.",
    ),
    MetricDoc::counter("edgebox_streamer_checkpoints_total", "Acknowledged binlog positions saved to the store."),
    MetricDoc::gauge("edgebox_streamer_position_file_number", "Number of the binlog file of the last saved position."),
    MetricDoc::gauge("edgebox_streamer_position_offset", "Offset in its binlog file of the last saved position."),
    MetricDoc::gauge("edgebox_streamer_snapshot_running", "1 while an initial snapshot is copying tables."),
    MetricDoc::gauge("edgebox_streamer_snapshot_tables_remaining", "Tables the running snapshot has yet to copy."),
    MetricDoc::counter("edgebox_streamer_snapshot_rows_total", "Rows copied by snapshots."),
];

pub struct Streamer {
    cfg: StreamerConfig,
}

impl Streamer {
    fn new(cfg: StreamerConfig) -> Result<Self, String> {
        cfg.validate()?;
        Ok(Self { cfg })
    }
}

impl Role for Streamer {
    fn declared(&self) -> Declared {
        Declared::default()
    }

    fn run(self: Box<Self>, ctx: RoleCtx) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let cfg = self.cfg;
            metrics::gauge!("edgebox_streamer_connected").set(0.0);
            let Some(src) = cfg.source.clone() else {
                tracing::info!("streamer: no [streamer.source]; idle");
                ctx.status.set_detail(serde_json::json!({ "source": null }));
                ctx.status.set_ready(true);
                ctx.shutdown.cancelled().await;
                return Ok(());
            };
            let max = Duration::from_secs(src.reconnect_max_s);
            let mut backoff = Duration::from_millis(250);
            let last_error = Arc::new(Mutex::new(None::<String>));
            let progress = snapshot::Progress::default();
            tokio::spawn(report(
                ctx.status.clone(),
                ctx.store.clone(),
                format!("{}:{}", src.host, src.port),
                (last_error.clone(), progress.clone()),
                ctx.shutdown.clone(),
            ));
            loop {
                ctx.status.set_ready(true);
                let started = std::time::Instant::now();
                let outcome = pipeline::run(&cfg, &src, &ctx.store, &ctx.shutdown, &progress).await;
                if ctx.shutdown.is_cancelled() {
                    return outcome;
                }
                metrics::gauge!("edgebox_streamer_connected").set(0.0);
                let Err(e) = outcome else { return Ok(()) };
                metrics::counter!("edgebox_streamer_restarts_total").increment(1);
                ctx.status.set_ready(false);
                // A run that streamed for a while starts the backoff over.
                if started.elapsed() > max {
                    backoff = Duration::from_millis(250);
                }
                let wait = if e.downcast_ref::<SourceMisconfigured>().is_some() { max } else { backoff };
                tracing::error!(error = %format!("{e:#}"), retry_in = ?wait, "streamer: stream stopped; resuming from the last acknowledged position");
                *last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:#}"));
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(crate::core::backoff::jitter(wait)) => {}
                }
                backoff = (backoff * 2).min(max);
            }
        })
    }
}

/// The source, the saved position, a running snapshot's progress and the
/// last failure on /v1/roles, every two seconds.
async fn report(
    status: StatusHandle,
    store: Store,
    source: String,
    (last_error, progress): (Arc<Mutex<Option<String>>>, snapshot::Progress),
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let position = position::load(&store).await.ok().flatten();
        let error = last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        status.set_detail(serde_json::json!({ "source": source, "position": position, "snapshot": progress.get(), "last_error": error }));
    }
}

#[cfg(test)]
mod fixture;
pub mod peers;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_exactly_once;
#[cfg(test)]
mod tests_failover;
#[cfg(test)]
mod tests_schema;
