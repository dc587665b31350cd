//! One telemetry plane: logs, metrics and traces for every role.
//!
//! Logs are tracing events (text on a terminal, JSON otherwise). Metrics go
//! through the `metrics` facade into one Prometheus registry rendered by the
//! admin listener. Spans are exported over OTLP/gRPC when configured. The
//! tracing subscriber and the metrics recorder are process-wide by the nature
//! of those facades; everything else is passed around in values.

pub mod docs;
mod handles;
mod http;
mod otlp;
pub mod process;

use std::io::IsTerminal;
use std::sync::mpsc;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

pub use docs::MetricDoc;
pub use handles::{HandleCache, Lookup};
pub use http::{HttpTelemetryLayer, MatchedRoute};
pub use process::ProcessMetrics;

use crate::core::config::{LogConfig, LogFormat, TelemetryConfig};

/// How often histogram samples are folded into their buckets. The recorder
/// keeps every sample until then, so this bounds its memory between scrapes
/// (the gateway at 60k requests/s grew 5 MB/s when nothing scraped it).
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Keeps the exporters alive; flushes spans when dropped.
pub struct Telemetry {
    pub prometheus: PrometheusHandle,
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    filter: reload::Handle<EnvFilter, Registry>,
    /// Dropping it stops the upkeep thread.
    _upkeep: mpsc::Sender<()>,
}

impl Telemetry {
    /// Applies a new log filter at run time (on config reload).
    pub fn set_log_level(&self, level: &str) -> anyhow::Result<()> {
        let filter = filter(&LogConfig { level: level.to_owned(), format: LogFormat::Auto })?;
        self.filter.reload(filter).map_err(|e| anyhow::anyhow!("cannot apply log level: {e}"))
    }

    /// Flushes pending spans (bounded by the exporter's own timeout).
    pub fn shutdown(&mut self) {
        if let Some(Err(e)) = self.tracer.take().map(|p| p.shutdown()) {
            tracing::warn!(error = %e, "OTLP trace exporter did not shut down cleanly");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Sets up logging only, for short commands that never serve.
pub fn init_logging(log: &LogConfig) -> anyhow::Result<()> {
    let filter = filter(log)?;
    tracing_subscriber::registry().with(filter).with(fmt_layer(log.format)).try_init()?;
    Ok(())
}

/// Sets up logs, metrics and (if configured) OTLP trace export. Must run
/// inside the runtime: the gRPC exporter spawns its connection task there.
pub fn init(log: &LogConfig, telemetry: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    let recorder = recorder()?;
    let prometheus = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| anyhow::anyhow!("metrics recorder already set: {e}"))?;
    docs::describe(docs::CORE);
    crate::roles::ROLES.iter().for_each(|r| docs::describe(r.metrics));
    // Descriptions reach `/metrics` at an upkeep: the first one now.
    prometheus.run_upkeep();
    let _upkeep = spawn_upkeep(prometheus.clone(), UPKEEP_EVERY)?;

    let tracer = match &telemetry.otlp_endpoint {
        Some(endpoint) => Some(otlp::provider(endpoint, telemetry)?),
        None => None,
    };
    let otel_layer = tracer.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider;
        tracing_opentelemetry::layer().with_tracer(p.tracer("edgebox"))
    });
    // Per-request spans exist for trace export alone (log lines leave them
    // out), so without an exporter they are not made at all: making,
    // entering and closing one cost a busy proxy about 3% of its CPU.
    let no_request_spans = tracer.is_none().then(|| tracing_subscriber::filter::filter_fn(|m| !is_request_span(m)));
    let (filter_layer, filter) = reload::Layer::new(filter(log)?);
    tracing_subscriber::registry()
        .with(filter_layer)
        .with(no_request_spans)
        .with(otel_layer)
        .with(fmt_layer(log.format))
        .try_init()?;
    Ok(Telemetry { prometheus, tracer, filter, _upkeep })
}

/// Drains histogram samples into their buckets every `every` until the
/// returned sender drops: without it the recorder holds every sample since
/// the last scrape. Its own thread, because a drain of a busy second's
/// samples takes milliseconds a runtime worker would stall for.
fn spawn_upkeep(prometheus: PrometheusHandle, every: Duration) -> anyhow::Result<mpsc::Sender<()>> {
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                prometheus.run_upkeep();
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot start the metrics upkeep thread: {e}"))?;
    Ok(stop)
}

/// The registry, with bucket bounds fit for what each histogram measures:
/// seconds unless its name says bytes or a batch size.
fn recorder() -> anyhow::Result<PrometheusRecorder> {
    const SECONDS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
    const BYTES: [f64; 11] =
        [64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0];
    const COUNTS: [f64; 12] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];
    Ok(PrometheusBuilder::new()
        .set_buckets(&SECONDS)?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &BYTES)?
        .set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), &COUNTS)?
        .build_recorder())
}

fn filter(log: &LogConfig) -> anyhow::Result<EnvFilter> {
    // openraft narrates every vote and append at info: quieter than ours
    // unless the filter asks for it by name.
    let default = log.level.split(',').find(|d| !d.contains('=')).unwrap_or("").trim().to_ascii_lowercase();
    let spec = match !log.level.contains("openraft") && ["info", "debug", "trace"].contains(&default.as_str()) {
        true => format!("{},openraft=warn", log.level),
        false => log.level.clone(),
    };
    EnvFilter::try_new(&spec).map_err(|e| {
        anyhow::Error::new(crate::core::exit::ConfigProblem(format!(
            "log level `{}` is not a valid filter: {e}",
            log.level
        )))
    })
}

/// Log lines to stderr: JSON, or text (coloured only on a terminal).
fn fmt_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // Per-request spans go to trace export, not into log lines: formatting
    // their dozen fields for every request cost a busy listener a quarter
    // of its CPU. Events inside a request still log, with their own fields.
    let request_spans = tracing_subscriber::filter::filter_fn(|m| !is_request_span(m));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if json(format) {
        layer.json().with_filter(request_spans).boxed()
    } else {
        layer.with_ansi(std::io::stderr().is_terminal()).with_filter(request_spans).boxed()
    }
}

/// The per-request server spans of [`HttpTelemetryLayer`].
fn is_request_span(m: &tracing::Metadata<'_>) -> bool {
    m.is_span() && m.target() == http::SPAN_TARGET
}

fn json(format: LogFormat) -> bool {
    match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(text: &str, name: &str, le: &str) -> u64 {
        let prefix = format!("{name}_bucket{{le=\"{le}\"}} ");
        let line = text.lines().find_map(|l| l.strip_prefix(prefix.as_str()));
        line.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    }

    #[test]
    fn histograms_get_buckets_in_their_own_unit() {
        let recorder = recorder().unwrap();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("t_request_body_size_bytes").record(3000.0);
            metrics::histogram!("t_request_duration_seconds").record(0.003);
            metrics::histogram!("t_commit_batch_size").record(3.0);
        });
        let text = handle.render();
        assert_eq!(bucket(&text, "t_request_body_size_bytes", "1024"), 0);
        assert_eq!(bucket(&text, "t_request_body_size_bytes", "4096"), 1);
        assert_eq!(bucket(&text, "t_request_duration_seconds", "0.0025"), 0);
        assert_eq!(bucket(&text, "t_request_duration_seconds", "0.005"), 1);
        assert_eq!(bucket(&text, "t_commit_batch_size", "2"), 0);
        assert_eq!(bucket(&text, "t_commit_batch_size", "4"), 1);
    }
}
