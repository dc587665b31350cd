//! tsdb: the embedded time-series database role.
//!
//! Collectors push Influx line protocol (`/write`, `/api/v2/write`) or
//! JSON lines (`/api/v1/import`); Grafana reads it as a Prometheus data
//! source (`/api/v1/query`, `/query_range`, `/series`, `/labels`). Samples
//! live in the shared store: an acknowledged write is a durable log record
//! and in the in-memory heads, checkpointed into compressed chunks every
//! `checkpoint_interval_s` (storage/, docs/tsdb-format.md).

mod bench;
mod cli;
pub mod config;
mod cores;
pub mod db;
pub mod forward;
pub mod gorilla;
pub mod http;
pub mod ingest;
pub mod lineproto;
pub mod params;
pub mod promql;
pub mod query;
pub mod remote_write;
pub mod storage;
mod transfer;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::core::auth::Auth;
use crate::core::exit::ConfigProblem;
use crate::core::httpserve::serve;
use crate::core::role::{Declared, ListenerDecl, Role, RoleCtx, RoleEntry, load_with};
use crate::core::telemetry::MetricDoc;
use crate::core::tls::ServerTls;
use config::TsdbConfig;
use storage::{Limits, Storage};

pub const ENTRY: RoleEntry = RoleEntry {
    name: "tsdb",
    summary: "embedded time-series database: line protocol in, Prometheus API out",
    feature: "tsdb",
    default_config: config::DEFAULT,
    compliance_config: config::COMPLIANCE,
    migrations: storage::MIGRATIONS,
    reloads: false,
    load: |section| load_with(section, Tsdb::new),
    metrics: METRICS,
    command: cli::command,
    run_command: cli::run,
};

/// The tsdb's metrics.
const METRICS: &[MetricDoc] = &[
    MetricDoc::gauge("edgebox_tsdb_series", "Series in the index."),
    MetricDoc::counter("edgebox_tsdb_samples_appended_total", "Samples accepted and written to the write-ahead log."),
    MetricDoc::counter(
        "edgebox_tsdb_samples_rejected_total",
        "Samples refused, by reason: out_of_order or future (too far ahead of the clock).",
    ),
    MetricDoc::counter(
        "edgebox_tsdb_cardinality_limit_hits_total",
        "Writes refused because they would pass a series or label limit.",
    ),
    MetricDoc::counter("edgebox_tsdb_checkpoints_total", "Checkpoints: heads sealed into chunks, the log truncated."),
    MetricDoc::counter("edgebox_tsdb_sealed_samples_total", "Samples sealed from heads into compressed chunks."),
    MetricDoc::counter(
        "edgebox_tsdb_size_retention_chunks_dropped_total",
        "Chunks dropped, oldest first, to keep the data under its size limit.",
    ),
    MetricDoc::counter("edgebox_tsdb_rollup_buckets_total", "5-minute and 1-hour rollup buckets written."),
    MetricDoc::gauge("edgebox_tsdb_rollup_watermark_seconds", "Time up to which rollups are complete, Unix seconds."),
    MetricDoc::gauge("edgebox_tsdb_forward_backlog_batches", "Batches waiting to be forwarded upstream."),
    MetricDoc::counter("edgebox_tsdb_forward_batches_sent_total", "Batches the upstream accepted."),
    MetricDoc::counter(
        "edgebox_tsdb_forward_batches_dropped_total",
        "Batches the upstream refused as invalid (dropped, not retried).",
    ),
    MetricDoc::counter("edgebox_tsdb_forward_failures_total", "Forwarding attempts that failed and will be retried."),
    MetricDoc::gauge(
        "edgebox_tsdb_queries_running",
        "PromQL queries being evaluated (at most tsdb.max_concurrent_queries).",
    ),
    MetricDoc::gauge("edgebox_tsdb_queries_waiting", "PromQL queries waiting for a query slot."),
];

/// The role, built from its config section.
pub struct Tsdb {
    cfg: TsdbConfig,
}

impl Tsdb {
    fn new(cfg: TsdbConfig) -> Result<Self, String> {
        cfg.validate()?;
        Ok(Self { cfg })
    }
}

impl Role for Tsdb {
    fn declared(&self) -> Declared {
        Declared { listeners: vec![ListenerDecl { name: "http", addr: self.cfg.listen }], files: vec![] }
    }

    fn run(self: Box<Self>, ctx: RoleCtx) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let cfg = self.cfg;
            let auth = Auth::load(cfg.auth, cfg.token_file.as_ref(), "tsdb.token_file")?;
            let limits = Limits {
                out_of_order_ms: (cfg.out_of_order_window_s as i64).saturating_mul(1000),
                max_future_ms: (cfg.max_future_s as i64).saturating_mul(1000),
                max_series: cfg.max_series,
                max_series_per_metric: cfg.max_series_per_metric,
            };
            let store = ctx.store.clone();
            // TLS files may come from certguard on its first start.
            let mut inputs = cfg.tls.as_ref().map(|t| t.files()).unwrap_or_default();
            inputs.extend(cfg.forward_tls.files());
            ctx.inputs_ready(&inputs).await?;
            let tls =
                cfg.tls.as_ref().map(|t| ServerTls::load(t, "tsdb.tls")).transpose().map_err(ConfigProblem::from)?;
            let upstream = forward::Sender::load(&cfg)?;
            let batch = cfg.forward_batch_samples;
            let forwarding = upstream.is_some();
            let retention = cfg.retention();
            let storage = Arc::new(
                tokio::task::spawn_blocking(move || {
                    let s = Storage::open(store, limits)?.with_retention(retention);
                    anyhow::Ok(if forwarding { s.with_forwarding(batch) } else { s })
                })
                .await??,
            );
            tracing::info!(series = storage.series_count(), "tsdb storage opened");
            let api = Arc::new(http::Api {
                storage: storage.clone(),
                auth,
                max_body: cfg.max_body_bytes,
                queries: query::Queries::new(
                    query::QueryLimits {
                        max_samples: cfg.max_query_samples,
                        timeout: Duration::from_secs(cfg.query_timeout_s),
                    },
                    cfg.max_concurrent_queries,
                ),
                limits: lineproto::Limits::default(),
                keys: ingest::KeyCache::new(cfg.max_series.saturating_mul(2).min(4_000_000)),
            });
            let listener = ctx.bind("http").await?;
            tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), "tsdb listening");
            let checkpoints = tokio::spawn(checkpoint_forever(storage.clone(), cfg.clone(), ctx.shutdown.clone()));
            let forwarder = upstream.map(|u| {
                tracing::info!(upstream = %u.upstream.url, "tsdb forwarding enabled");
                tokio::spawn(forward::forward_forever(storage.clone(), u, ctx.shutdown.clone()))
            });
            ctx.status.set_ready(true);
            let handler = move |req| http::handle(api.clone(), req);
            serve(http::NAME, listener, tls, handler, ctx.shutdown.clone(), Duration::from_secs(5)).await;
            if let Err(e) = checkpoints.await {
                tracing::warn!(error = %e, "tsdb checkpoint task ended abnormally");
            }
            // A batch in flight is sent again after a restart (at least
            // once; the upstream keeps one copy of each sample).
            if let Some(f) = forwarder {
                f.abort();
            }
            Ok(())
        })
    }
}

/// Checkpoints the heads, rolls up settled hours and applies retention
/// every `checkpoint_interval_s`, or sooner when the log grew past its
/// bound; a last checkpoint at shutdown makes the next start quick.
async fn checkpoint_forever(storage: Arc<Storage>, cfg: TsdbConfig, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(cfg.checkpoint_interval_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tick.tick() => false,
            _ = storage.checkpoint_wanted.notified() => false,
        };
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        // Rollups first: raw retention drops only what they already cover.
        match storage.roll_up(now).await {
            Ok(Some((upto, buckets))) => tracing::info!(upto_ms = upto, buckets, "tsdb rollup pass"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "tsdb rollup pass failed; will retry"),
        }
        let horizon = match storage.raw_horizon(now).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "tsdb retention horizon unknown; keeping raw samples");
                None
            }
        };
        let started = std::time::Instant::now();
        match storage.checkpoint(horizon).await {
            Ok(s) if s.series > 0 => tracing::info!(
                series = s.series,
                sealed_samples = s.sealed_samples,
                log_records = s.records,
                ms = started.elapsed().as_millis() as u64,
                "tsdb checkpoint"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "tsdb checkpoint failed; will retry"),
        }
        if cfg.retention_max_bytes > 0 {
            match storage.enforce_size(cfg.retention_max_bytes).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    chunks = n,
                    max_bytes = cfg.retention_max_bytes,
                    "tsdb size retention dropped the oldest chunks"
                ),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "tsdb size retention failed; will retry"),
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
