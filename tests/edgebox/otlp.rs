//! OTLP trace export against a real OTLP/gRPC receiver built from the
//! opentelemetry-proto definitions: server spans carry the current HTTP
//! semantic conventions and continue the caller's W3C trace.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::support::{Appliance, http_get};

#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn attr(span: &Span, key: &str) -> Option<Value> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()).and_then(|v| v.value)
}

#[test]
fn server_spans_reach_a_real_otlp_receiver_with_semantic_conventions() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = Receiver::default();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let svc = TraceServiceServer::new(receiver.clone());
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });

    let cfg = format!("[telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\nservice_name = \"edgebox-test\"\n");
    let mut app = Appliance::start(&cfg, &["up"]);
    app.wait_ready();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{parent}-01");
    let (status, _) = http_get(app.admin, "/v1/roles", &[("traceparent", &traceparent)]);
    assert_eq!(status, 200);
    app.signal("TERM"); // shutdown flushes the batch exporter
    assert_eq!(app.wait_exit(Duration::from_secs(20)), Some(0));

    let deadline = Instant::now() + Duration::from_secs(10);
    let span = loop {
        let found = receiver.spans.lock().unwrap().iter().find(|(_, s)| s.name == "GET /v1/roles").cloned();
        if let Some(s) = found {
            break s;
        }
        let names: Vec<String> = receiver.spans.lock().unwrap().iter().map(|(_, s)| s.name.clone()).collect();
        assert!(
            Instant::now() < deadline,
            "no span named \"GET /v1/roles\" arrived; got {names:?}; logs: {:?}",
            app.logs.try_iter().collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (service, span) = span;
    assert_eq!(service, "edgebox-test");
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(hex(&span.trace_id), trace_id, "the caller's trace must continue");
    assert_eq!(hex(&span.parent_span_id), parent);
    assert_eq!(attr(&span, "http.request.method"), Some(Value::StringValue("GET".into())));
    assert_eq!(attr(&span, "http.route"), Some(Value::StringValue("/v1/roles".into())));
    assert_eq!(attr(&span, "url.path"), Some(Value::StringValue("/v1/roles".into())));
    assert_eq!(attr(&span, "http.response.status_code"), Some(Value::IntValue(200)));
    assert!(matches!(attr(&span, "http.response.body.size"), Some(Value::IntValue(n)) if n > 0));
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
