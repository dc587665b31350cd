//! The gateway end to end: a real appliance in front of real HTTP servers
//! on loopback, callers presenting X.509-SVIDs made here (curl over OpenSSL
//! for single requests, a pooled rustls client for load), OpenAPI routing,
//! validation and policy, canary routing with health fallback, reloads
//! under load, JWT-SVIDs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::support::free_port;
use crate::support::{Appliance, text};
use crate::tls::testpki::{Leaf, TestCa};

/// An HTTP server answering every request with JSON naming itself, the
/// method, path and headers it got; `/healthz` answers 200 or 500 as told.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub healthy: Arc<AtomicBool>,
}

impl Upstream {
    pub fn start(label: &'static str) -> Upstream {
        Self::start_with(label, None)
    }

    /// The same over TLS (edgebox's own listener TLS: with client_ca_file it
    /// takes only clients with a certificate from that CA).
    pub fn start_with(label: &'static str, tls: Option<edgebox::core::tls::ServerTlsConfig>) -> Upstream {
        let tls = tls.map(|t| edgebox::core::tls::ServerTls::load(&t, "upstream").unwrap());
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (hits, healthy) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(true)));
        let (h, ok) = (hits.clone(), healthy.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { continue };
                    let (h, ok, tls) = (h.clone(), ok.clone(), tls.clone());
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let (h, ok) = (h.clone(), ok.clone());
                            async move {
                                if req.uri().path() == "/healthz" {
                                    let status = if ok.load(Ordering::Relaxed) { 200 } else { 500 };
                                    let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"")));
                                    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                                    return Ok::<_, Infallible>(r);
                                }
                                h.fetch_add(1, Ordering::Relaxed);
                                if req.uri().path() == "/pets/999" {
                                    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                                }
                                let version = format!("{:?}", req.version());
                                let headers: serde_json::Map<String, serde_json::Value> = req
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                                    .collect();
                                let (method, uri) = (req.method().to_string(), req.uri().to_string());
                                let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                let answer = serde_json::json!({"upstream": label, "method": method, "uri": uri, "version": version,
                                    "headers": headers, "body": String::from_utf8_lossy(&body)});
                                let mut r = hyper::Response::new(Full::new(Bytes::from(answer.to_string())));
                                r.headers_mut().insert("content-type", "application/json".parse().unwrap());
                                Ok(r)
                            }
                        });
                        let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                        let _ = match tls {
                            None => builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc).await,
                            Some(tls) => match tls.accept(tcp).await {
                                Ok(s) => builder.serve_connection(hyper_util::rt::TokioIo::new(s), svc).await,
                                Err(_) => return,
                            },
                        };
                    });
                }
            });
        });
        Upstream { addr, hits, healthy }
    }
}

/// The API the tests route: nested schemas and $ref, path, query and body
/// parameters, allow lists.
const API: &str = r##"
openapi: 3.1.0
info: { title: pets, version: "1" }
components:
  schemas:
    Tag: { type: object, required: [name], properties: { name: { type: string, minLength: 1 } } }
    Pet:
      type: object
      required: [name, tags]
      properties:
        name: { type: string }
        tags: { type: array, items: { $ref: "#/components/schemas/Tag" } }
paths:
  /pets:
    x-edgebox-allow: ["spiffe://edge.example/node/*"]
    get:
      operationId: listPets
      parameters: [{ name: limit, in: query, schema: { type: integer, maximum: 100 } }]
    post:
      operationId: addPet
      requestBody: { required: true, content: { application/json: { schema: { $ref: "#/components/schemas/Pet" } } } }
  /pets/{id}:
    parameters: [{ name: id, in: path, required: true, schema: { type: integer } }]
    get: { operationId: getPet, x-edgebox-allow: ["spiffe://edge.example/node/*"] }
    delete: { operationId: deletePet, x-edgebox-allow: ["spiffe://edge.example/admin"] }
"##;

/// A PKI for one test: the gateway's server certificate, the edge.example
/// trust domain, and a foreign one.
struct Pki {
    dir: PathBuf,
    server_ca: TestCa,
    server: Leaf,
    edge: TestCa,
    other: TestCa,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let server_ca = TestCa::new(dir, "server");
        let server = server_ca.leaf(dir, "gateway", &["localhost", "127.0.0.1"]);
        Pki { dir: dir.to_owned(), server_ca, server, edge: TestCa::new(dir, "edge"), other: TestCa::new(dir, "other") }
    }

    fn svid(&self, file: &str, id: &str) -> Leaf {
        self.edge.svid(&self.dir, file, id, |_| {})
    }
}

/// The gateway config for one service; `extra` goes into [gateway],
/// `service` into its [[gateway.services]].
fn config(pki: &Pki, port: u16, upstream: SocketAddr, extra: &str, service: &str) -> String {
    let api = pki.dir.join("pets.yaml");
    if !api.exists() {
        std::fs::write(&api, API).unwrap();
    }
    format!(
        "[edgebox]\nroles = [\"gateway\"]\n[gateway]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n\
         [gateway.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nspiffe_bundles = {{ \"edge.example\" = \"{}\", \"other.example\" = \"{}\" }}\n\
         [[gateway.services]]\nname = \"pets\"\nopenapi_file = \"{}\"\nupstream = \"http://{upstream}\"\n{service}\n",
        pki.server.cert_file.display(),
        pki.server.key_file.display(),
        pki.edge.ca_file.display(),
        pki.other.ca_file.display(),
        api.display()
    )
}

/// One request by curl (OpenSSL), presenting `svid` if given: (status,
/// body), or curl's error when the connection failed.
fn curl(
    pki: &Pki,
    port: u16,
    svid: Option<&Leaf>,
    method: &str,
    path: &str,
    extra: &[&str],
) -> Result<(u16, String), String> {
    let client = svid.map(|l| (l.cert_file.as_path(), l.key_file.as_path()));
    crate::support::curl_tls(&pki.server_ca.ca_file, client, method, &format!("https://localhost:{port}{path}"), extra)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn svid_callers_reach_their_operations_and_everything_else_is_refused_early() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let upstream = Upstream::start("stable");
    let port = free_port();
    let app = Appliance::start(&config(&pki, port, upstream.addr, "", ""), &["up"]);
    app.wait_ready();
    let node = pki.svid("node1", "spiffe://edge.example/node/1");

    // Allowed: the upstream sees the path, the caller's ID, the trace and
    // colour headers; a caller's own x-edgebox-caller is not believed.
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let (status, body) = curl(
        &pki,
        port,
        Some(&node),
        "GET",
        "/pets?limit=5",
        &[
            "-H",
            &format!("traceparent: {trace}"),
            "-H",
            "x-edgebox-stage: blue",
            "-H",
            "x-edgebox-caller: spiffe://edge.example/admin",
        ],
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let seen = json(&body);
    assert_eq!(seen["uri"], "/pets?limit=5");
    assert_eq!(seen["headers"]["x-edgebox-caller"], "spiffe://edge.example/node/1");
    assert_eq!(seen["headers"]["traceparent"], trace);
    assert_eq!(seen["headers"]["x-edgebox-stage"], "blue");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    // HTTP/2 callers (ALPN h2) are served the same way.
    let (status, body) =
        curl(&pki, port, Some(&node), "GET", "/pets/2", &["--http2", "-H", "x-edgebox-stage: blue"]).unwrap();
    assert_eq!((status, json(&body)["headers"]["x-edgebox-stage"].as_str()), (200, Some("blue")), "{body}");
    let hits = upstream.hits.load(Ordering::Relaxed);

    // Refused before the upstream: unknown path, wrong method, policy,
    // invalid parameter, invalid nested body (with its JSON pointer).
    let (status, body) = curl(&pki, port, Some(&node), "GET", "/nope", &[]).unwrap();
    assert_eq!((status, json(&body)["status"].as_u64()), (404, Some(404)), "{body}");
    let (status, _) = curl(&pki, port, Some(&node), "PUT", "/pets/7", &["-i"]).unwrap();
    assert_eq!(status, 405);
    let out = std::process::Command::new("curl")
        .args(["-sS", "-i", "-X", "PUT", "--cacert"])
        .arg(&pki.server_ca.ca_file)
        .arg("--cert")
        .arg(&node.cert_file)
        .arg("--key")
        .arg(&node.key_file)
        .arg(format!("https://localhost:{port}/pets/7"))
        .output()
        .unwrap();
    let head = text(&out.stdout).to_ascii_lowercase();
    assert!(head.contains("allow: get, delete") && head.contains("application/problem+json"), "{head}");
    let (status, body) = curl(&pki, port, Some(&node), "DELETE", "/pets/7", &[]).unwrap();
    assert_eq!(status, 403, "{body}");
    let (status, body) = curl(&pki, port, Some(&node), "GET", "/pets?limit=500", &[]).unwrap();
    assert_eq!((status, json(&body)["errors"][0]["pointer"].as_str()), (400, Some("/limit")), "{body}");
    let (status, body) = curl(&pki, port, Some(&node), "GET", "/pets/abc", &[]).unwrap();
    assert_eq!((status, json(&body)["errors"][0]["in"].as_str()), (400, Some("path")), "{body}");
    let bad = r#"{"name":"rex","tags":[{"name":"dog"},{"name":""}]}"#;
    let (status, body) =
        curl(&pki, port, Some(&node), "POST", "/pets", &["-H", "content-type: application/json", "-d", bad]).unwrap();
    let problem = json(&body);
    assert_eq!(
        (status, problem["errors"][0]["pointer"].as_str(), problem["errors"][0]["in"].as_str()),
        (400, Some("/tags/1/name"), Some("body")),
        "{body}"
    );
    let (status, body) =
        curl(&pki, port, Some(&node), "POST", "/pets", &["-H", "content-type: application/json", "-d", "{\"name\":"])
            .unwrap();
    assert!(status == 400 && body.contains("not valid JSON"), "{body}");
    assert_eq!(upstream.hits.load(Ordering::Relaxed), hits, "nothing refused reached the upstream");
    let good = r#"{"name":"rex","tags":[{"name":"dog"}]}"#;
    let (status, body) =
        curl(&pki, port, Some(&node), "POST", "/pets", &["-H", "content-type: application/json", "-d", good]).unwrap();
    assert_eq!((status, json(&body)["body"].as_str()), (200, Some(good)));

    // Refused at the handshake, each for its reason.
    assert!(curl(&pki, port, None, "GET", "/pets", &[]).is_err(), "no certificate");
    let bad_svids = [
        (
            "ca_leaf",
            pki.edge.svid(&pki.dir, "ca", "spiffe://edge.example/node/2", |p| {
                p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
            }),
        ),
        ("untrusted_chain", pki.other.svid(&pki.dir, "foreign", "spiffe://edge.example/node/3", |_| {})),
        ("unknown_trust_domain", pki.edge.svid(&pki.dir, "stranger", "spiffe://stranger.example/node/4", |_| {})),
        (
            "invalid_chain",
            pki.edge.intermediate(&pki.dir, "notca", false).svid(
                &pki.dir,
                "badint",
                "spiffe://edge.example/node/6",
                |_| {},
            ),
        ),
        (
            "uri_san_count",
            pki.edge.svid(&pki.dir, "two", "spiffe://edge.example/node/5", |p| {
                p.subject_alt_names.push(rcgen::SanType::URI("spiffe://edge.example/x".try_into().unwrap()))
            }),
        ),
    ];
    for (reason, leaf) in &bad_svids {
        assert!(curl(&pki, port, Some(leaf), "GET", "/pets", &[]).is_err(), "{reason} got through");
        let line = app.wait_log("client refused at the TLS handshake");
        assert!(line.contains(reason), "{reason}: {line}");
    }
    let (_, metrics) = app.get("/metrics");
    assert!(
        metrics.contains("edgebox_svid_rejections_total{section=\"gateway.tls\",reason=\"ca_leaf\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edgebox_gateway_requests_total{")
            && metrics.contains("caller=\"spiffe://edge.example/node/1\"")
    );
    assert!(metrics.contains("edgebox_gateway_rejections_total{service=\"pets\",reason=\"invalid_request\"}"));
    // One access log line per request, with the caller.
    let access = app.wait_log("\"access\"");
    assert!(access.contains("spiffe://edge.example/node/1") && access.contains("/pets"), "{access}");
}

#[path = "../../src/roles/gateway/testjwt.rs"]
mod testjwt;

/// The side that answered a request.
fn side(body: &str) -> String {
    json(body)["upstream"].as_str().unwrap_or("?").to_owned()
}

#[test]
fn the_canary_takes_coloured_and_sticky_traffic_and_falls_back_while_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (stable, canary) = (Upstream::start("stable"), Upstream::start("canary"));
    let port = free_port();
    let service = format!(
        "[gateway.services.canary]\nupstream = \"http://{}\"\npercent = 30.0\nsticky_header = \"x-user\"\n\
         health_path = \"/healthz\"\nhealth_interval_ms = 200\nunhealthy_after = 2\n",
        canary.addr
    );
    let app =
        Appliance::start(&config(&pki, port, stable.addr, "metrics_caller = \"trust-domain\"", &service), &["up"]);
    app.wait_ready();
    let node = pki.svid("node1", "spiffe://edge.example/node/1");
    let get = |headers: &[&str]| {
        let (status, body) = curl(&pki, port, Some(&node), "GET", "/pets", headers).unwrap();
        assert_eq!(status, 200, "{body}");
        side(&body)
    };
    let coloured = ["-H", "x-edgebox-stage: canary"];
    assert_eq!(get(&coloured), "canary");
    // Sticky by x-user: each user always on one side, about 30% on the canary.
    let sides: Vec<String> = (0..40).map(|u| get(&["-H", &format!("x-user: user-{u}")])).collect();
    let again: Vec<String> = (0..40).map(|u| get(&["-H", &format!("x-user: user-{u}")])).collect();
    assert_eq!(sides, again, "stickiness");
    let on_canary = sides.iter().filter(|s| *s == "canary").count();
    assert!((4..=20).contains(&on_canary), "{on_canary} of 40 users on the canary at 30%");

    // Unhealthy canary: everything goes to stable, coloured or not; back
    // once its checks pass again.
    canary.healthy.store(false, Ordering::Relaxed);
    app.wait_log("gateway upstream unhealthy");
    assert_eq!(get(&coloured), "stable");
    assert!(sides.iter().enumerate().all(|(u, _)| get(&["-H", &format!("x-user: user-{u}")]) == "stable"));
    canary.healthy.store(true, Ordering::Relaxed);
    app.wait_log("gateway upstream healthy again");
    assert_eq!(get(&coloured), "canary");
    let (_, metrics) = app.get("/metrics");
    assert!(metrics.contains("edgebox_gateway_upstream_healthy{service=\"pets\",side=\"canary\"} 1"), "{metrics}");
    assert!(metrics.contains("upstream=\"canary\""), "requests are counted per upstream");
    assert!(
        metrics.contains("caller=\"edge.example\"") && !metrics.contains("caller=\"spiffe://"),
        "labelled by trust domain"
    );
}

/// A TLS client for "localhost" trusting `ca`, presenting an SVID.
fn svid_client(ca: &Path, cert: &Path, key: &Path) -> edgebox::core::tls::ClientTls {
    let cfg = edgebox::core::tls::ClientTlsConfig {
        ca_file: Some(ca.to_owned()),
        cert_file: Some(cert.to_owned()),
        key_file: Some(key.to_owned()),
        server_name: None,
    };
    edgebox::core::tls::ClientTls::load(&cfg, "localhost", "test client").unwrap()
}

/// A pooled HTTPS client presenting `svid`, as a load generator would.
fn pooled_client(
    pki: &Pki,
    svid: &Leaf,
) -> hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
> {
    let tls = svid_client(&pki.server_ca.ca_file, &svid.cert_file, &svid.key_file);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls.config()).clone())
        .https_only()
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
}

/// Documents, policies and trust bundles change under load: every request
/// answers 200, a broken document is refused while the old one serves, a
/// bundle rotation with the old and new CA overlapping admits both, and
/// the new operation is there after the reload.
#[test]
fn reloads_under_load_fail_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let upstream = Upstream::start("stable");
    let port = free_port();
    // The edge.example bundle is a file of its own, rotated below.
    let bundle = dir.path().join("edge-bundle.pem");
    std::fs::copy(&pki.edge.ca_file, &bundle).unwrap();
    let cfg = config(&pki, port, upstream.addr, "", "")
        .replace(&pki.edge.ca_file.display().to_string(), &bundle.display().to_string());
    let app = Appliance::start(&cfg, &["up"]);
    app.wait_ready();
    let node = pki.svid("node1", "spiffe://edge.example/node/1");
    let client = pooled_client(&pki, &node);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(Vec::<String>::new())));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, stop, ok, failed) = (client.clone(), stop.clone(), ok.clone(), failed.clone());
            rt.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let req = hyper::Request::get(format!("https://localhost:{port}/pets?limit=1"))
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    match client.request(req).await {
                        Ok(resp) if resp.status() == 200 => {
                            let _ = resp.into_body().collect().await;
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(resp) => failed.lock().unwrap().push(format!("status {}", resp.status())),
                        Err(e) => failed.lock().unwrap().push(format!("{e:?}")),
                    }
                }
            })
        })
        .collect();
    let api = dir.path().join("pets.yaml");
    let with_owners = format!("{API}  /owners:\n    get: {{ operationId: listOwners, x-edgebox-allow: [\"*\"] }}\n");
    for round in 0..4 {
        std::fs::write(&api, if round % 2 == 0 { with_owners.as_str() } else { API }).unwrap();
        app.wait_log("gateway: services reloaded");
        app.signal("USR1");
        app.wait_log("gateway: services reloaded");
    }
    std::fs::write(&api, "openapi: 3.1.0\npaths:\n  /a/{id}:\n    get: {}\n").unwrap();
    let refused = app.wait_log("new services refused");
    assert!(refused.contains("{id}"), "{refused}");
    std::fs::write(&api, &with_owners).unwrap();
    app.wait_log("gateway: services reloaded");
    // Bundle rotation: old and new CA together while the load runs.
    let next = TestCa::new(dir.path(), "edge-next");
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&pki.edge.ca_file).unwrap(),
        std::fs::read_to_string(&next.ca_file).unwrap()
    );
    std::fs::write(&bundle, both).unwrap();
    let rotated = next.svid(dir.path(), "node1-next", "spiffe://edge.example/node/1", |_| {});
    wait_for_ok(|| curl(&pki, port, Some(&rotated), "GET", "/owners", &[]));
    std::thread::sleep(std::time::Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        rt.block_on(w).unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    let served = ok.load(Ordering::Relaxed);
    eprintln!("reload under load: {served} requests served, {} failed", failed.len());
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        served + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(served > 100, "only {served} requests ran");
    // The old CA leaves the bundle: its SVIDs are refused, the new ones not.
    std::fs::copy(&next.ca_file, &bundle).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert!(curl(&pki, port, Some(&node), "GET", "/owners", &[]).is_err());
    assert_eq!(curl(&pki, port, Some(&rotated), "GET", "/owners", &[]).unwrap().0, 200);
}

/// Retries `f` for up to 10 s until it answers 200.
fn wait_for_ok(f: impl Fn() -> Result<(u16, String), String>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match f() {
            Ok((200, _)) => return,
            other if std::time::Instant::now() > deadline => panic!("never 200: {other:?}"),
            _ => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

#[test]
fn jwt_svids_stand_in_for_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let upstream = Upstream::start("stable");
    let port = free_port();
    let issuer = testjwt::JwtIssuer::new("k1");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, issuer.jwks.to_string()).unwrap();
    let access = dir.path().join("access.log");
    let extra = format!(
        "access_log = \"{}\"\n[gateway.jwt]\naudience = [\"spiffe://edge.example/gateway\"]\nbundles = {{ \"edge.example\" = \"{}\" }}\n",
        access.display(),
        jwks.display()
    );
    let cfg = config(&pki, port, upstream.addr, &extra, "")
        .replace("[[gateway.services]]", "client_cert_optional = true\n[[gateway.services]]");
    let app = Appliance::start(&cfg, &["up"]);
    app.wait_ready();
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 300;
    let token = |aud: &str| {
        issuer.token("k1", &serde_json::json!({"sub": "spiffe://edge.example/node/9", "aud": aud, "exp": exp}))
    };
    let bearer = |t: &str| format!("authorization: Bearer {t}");
    let (status, body) =
        curl(&pki, port, None, "GET", "/pets/3", &["-H", &bearer(&token("spiffe://edge.example/gateway"))]).unwrap();
    assert_eq!(status, 200, "{body}");
    let seen = json(&body);
    assert_eq!(seen["headers"]["x-edgebox-caller"], "spiffe://edge.example/node/9");
    assert!(seen["headers"].get("authorization").is_none(), "the token stays at the gateway");
    let (status, body) =
        curl(&pki, port, None, "GET", "/pets/3", &["-H", &bearer(&token("spiffe://other/aud"))]).unwrap();
    assert!(status == 401 && body.contains("JWT-SVID refused"), "{status} {body}");
    let (status, body) = curl(&pki, port, None, "GET", "/pets/3", &[]).unwrap();
    assert!(status == 401 && body.contains("X.509-SVID"), "{status} {body}");
    // A certificate, when presented, must still be a valid SVID.
    let bad = pki.other.svid(&pki.dir, "foreign", "spiffe://edge.example/node/3", |_| {});
    assert!(curl(&pki, port, Some(&bad), "GET", "/pets/3", &[]).is_err());
    // The access log file: a JSON line per request, flushed within 250 ms.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let lines = std::fs::read_to_string(&access).unwrap();
    let first = json(lines.lines().next().unwrap_or("{}"));
    assert_eq!(
        (first["caller"].as_str(), first["status"].as_u64(), first["route"].as_str()),
        (Some("spiffe://edge.example/node/9"), Some(200), Some("GET /pets/{id}")),
        "{lines}"
    );
    assert_eq!(lines.lines().count(), 3, "{lines}");
}

/// Upstreams over HTTP/2 (h2c) and over mutual TLS with the gateway's own
/// certificate; a slow upstream times out (504), a dead one is a 502;
/// hostile clients (garbage instead of TLS, oversized headers and bodies)
/// get clear answers and the gateway keeps serving.
#[test]
fn upstream_protocols_failures_and_hostile_clients() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    // The mTLS upstream trusts edge.example's CA and serves a certificate
    // from the server CA; the gateway presents its own SVID.
    let up_leaf = pki.server_ca.leaf(dir.path(), "upstream", &["localhost"]);
    let up_tls = edgebox::core::tls::ServerTlsConfig {
        cert_file: up_leaf.cert_file.clone(),
        key_file: up_leaf.key_file.clone(),
        client_ca_file: Some(pki.edge.ca_file.clone()),
        ..Default::default()
    };
    let (h2, mtls) = (Upstream::start("h2"), Upstream::start_with("mtls", Some(up_tls)));
    let gw_svid = pki.svid("gateway-svid", "spiffe://edge.example/gateway");
    let dead = free_port();
    let port = free_port();
    let api = dir.path().join("pets.yaml");
    std::fs::write(&api, API).unwrap();
    let service = |name: &str, upstream: &str, extra: &str| {
        format!(
            "[[gateway.services]]\nname = \"{name}\"\nopenapi_file = \"{}\"\nupstream = \"{upstream}\"\n{extra}\n",
            api.display()
        )
    };
    // One service per upstream, each under its own copy of the document.
    let mut cfg = config(
        &pki,
        port,
        h2.addr,
        "max_body_bytes = 1024\nbody_timeout_s = 1",
        "http2 = true\ntimeout_ms = 1000\nretries = 2",
    );
    for (name, prefix) in [("mtls", "/m"), ("dead", "/d")] {
        let doc = API.replace("  /pets", &format!("  {prefix}/pets"));
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, doc).unwrap();
        let upstream = match name {
            "mtls" => format!("https://localhost:{}", mtls.addr.port()),
            _ => format!("http://127.0.0.1:{dead}"),
        };
        let tls = match name {
            "mtls" => format!(
                "[gateway.services.upstream_tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                pki.server_ca.ca_file.display(),
                gw_svid.cert_file.display(),
                gw_svid.key_file.display()
            ),
            _ => String::new(),
        };
        cfg.push_str(&service(name, &upstream, &tls).replace(&api.display().to_string(), &path.display().to_string()));
    }
    let app = Appliance::start(&cfg, &["up"]);
    app.wait_ready();
    let node = pki.svid("node1", "spiffe://edge.example/node/1");
    let (status, body) = curl(&pki, port, Some(&node), "GET", "/pets/1", &[]).unwrap();
    assert_eq!((status, json(&body)["version"].as_str()), (200, Some("HTTP/2.0")), "{body}");
    let (status, body) = curl(&pki, port, Some(&node), "GET", "/m/pets/1", &[]).unwrap();
    assert_eq!((status, json(&body)["upstream"].as_str()), (200, Some("mtls")), "{body}");
    assert_eq!(json(&body)["uri"], "/m/pets/1");
    let (status, body) = curl(&pki, port, Some(&node), "GET", "/pets/999", &[]).unwrap();
    assert!(status == 504 && body.contains("did not answer in time"), "{status} {body}");
    assert!(app.wait_log("gateway upstream request failed").contains("did not answer within"));
    let (status, body) = curl(&pki, port, Some(&node), "GET", "/d/pets/1", &[]).unwrap();
    assert!(status == 502 && body.contains("\\\"dead\\\" is unavailable"), "{status} {body}");
    assert!(!body.contains(&dead.to_string()), "the upstream's address stays inside: {body}");
    assert!(app.wait_log("gateway upstream request failed").contains("refused"));

    // Hostile clients.
    let big = "x".repeat(2048);
    let (status, body) =
        curl(&pki, port, Some(&node), "POST", "/pets", &["-H", "content-type: application/json", "-d", &big]).unwrap();
    assert!(status == 413 && body.contains("1024"), "{status} {body}");
    let huge_header = format!("x-filler: {}", "y".repeat(100 * 1024));
    let answer = curl(&pki, port, Some(&node), "GET", "/pets/1", &["-H", &huge_header]);
    assert!(matches!(answer, Ok((431, _))) || answer.is_err(), "{answer:?}");
    for garbage in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0][..], &[0u8; 4096][..]] {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(15))).unwrap();
        let _ = tcp.write_all(garbage);
        let mut buf = Vec::new();
        let _ = tcp.read_to_end(&mut buf);
    }
    // A slow body (slowloris on the body): 408 once body_timeout_s passed.
    let client = svid_client(&pki.server_ca.ca_file, &node.cert_file, &node.key_file);
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut s = client.connect(tcp).unwrap();
    {
        use std::io::{Read, Write};
        let head = "POST /pets HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"na";
        s.write_all(head.as_bytes()).unwrap();
        s.flush().unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }
    assert_eq!(curl(&pki, port, Some(&node), "GET", "/pets/1", &[]).unwrap().0, 200, "still serving");
}

/// The whole platform on one device: certguard issues the gateway's own
/// X.509-SVID and the trust bundle the gateway checks callers against,
/// renews the SVID at half its (18 s) life with the gateway as the canary,
/// and the gateway serves the renewal without a restart; a caller's SVID
/// comes from `edgebox certguard issue`.
#[cfg(feature = "certguard")]
#[test]
fn certguard_keeps_the_gateways_svid_current_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let upstream = Upstream::start("stable");
    let port = free_port();
    std::fs::write(dir.path().join("pets.yaml"), API).unwrap();
    let cfg = format!(
        "[edgebox]\nroles = [\"certguard\", \"gateway\"]\n\
         [certguard]\ncheck_interval_s = 1\ntrust_bundle_file = \"{d}/ca.pem\"\nkey_file = \"{d}/kek\"\n\
         [[certguard.certs]]\nname = \"gateway\"\ndns_names = [\"localhost\"]\nspiffe_id = \"spiffe://edge.example/gateway\"\n\
         lifetime_hours = 0.005\n\
         [[certguard.certs.targets]]\ncert_file = \"{d}/gw.pem\"\nkey_file = \"{d}/gw.key\"\nprobe = \"127.0.0.1:{port}\"\ncanary = true\n\
         [gateway]\nlisten = \"127.0.0.1:{port}\"\n\
         [gateway.tls]\ncert_file = \"{d}/gw.pem\"\nkey_file = \"{d}/gw.key\"\nspiffe_bundles = {{ \"edge.example\" = \"{d}/ca.pem\" }}\n\
         [[gateway.services]]\nname = \"pets\"\nopenapi_file = \"{d}/pets.yaml\"\nupstream = \"http://{}\"\n",
        upstream.addr
    );
    let app = Appliance::start(&cfg, &["up"]);
    let first = app.wait_log("certguard installed a certificate");
    app.wait_ready();
    let data = app.dir.path().join("data");
    let (cert, key) = (dir.path().join("node.pem"), dir.path().join("node.key"));
    let out = crate::support::run(&[
        "--data-dir",
        data.to_str().unwrap(),
        "certguard",
        "issue",
        "--spiffe-id",
        "spiffe://edge.example/node/1",
        "--cert-out",
        cert.to_str().unwrap(),
        "--key-out",
        key.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let client = svid_client(&dir.path().join("ca.pem"), &cert, &key);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let served = || client.leaf_served_at(addr, std::time::Duration::from_secs(5)).unwrap();
    let before = served();
    let get = || {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(dir.path().join("ca.pem"))
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg(format!("https://localhost:{port}/pets/1"))
            .output()
            .unwrap();
        text(&out.stdout)
    };
    assert_eq!(get(), "200");
    let renewed = app.wait_log("certguard installed a certificate");
    assert!(renewed.contains("renewal time") && renewed != first, "{renewed}");
    let after = served();
    assert_ne!(after, before, "the gateway serves the renewed SVID");
    assert!(String::from_utf8_lossy(&after).contains("spiffe://edge.example/gateway"));
    assert_eq!(get(), "200", "callers still get through, no restart");
}

/// The benchmark runs end to end (briefly): direct, the gateway, nginx and
/// HAProxy each answer every request.
#[test]
fn the_benchmark_compares_the_gateway_with_nginx_and_haproxy() {
    let out = crate::support::run(&["gateway", "bench", "--seconds", "1", "--concurrency", "2"]);
    let table = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}{}", text(&out.stderr));
    for row in ["direct", "edgebox gateway", "nginx 1.22", "haproxy 2.6"] {
        let line = table
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no {row} row (scripts/setup.sh installs nginx and haproxy): {table}"));
        // …, errors, vCPU per 1k rps, proxy µs/req, driver µs/req.
        let errors: u64 = line.split_whitespace().rev().nth(3).unwrap().parse().unwrap();
        assert_eq!(errors, 0, "{line}");
        let driver = line.split_whitespace().last().unwrap();
        assert!(driver.split('+').all(|us| us.parse::<f64>().is_ok()), "{line}");
    }
    assert!(table.contains("gateway / nginx: requests/s"), "{table}");
    assert!(table.contains("gateway / haproxy: requests/s"), "{table}");
}

/// An HTTP/1.1 upstream written by hand, so the test sees its connections:
/// every answer names the connection it came on (numbered in accept
/// order), the Host header and the request line. A path containing
/// "hangup" closes the connection after its answer without saying so (as
/// an upstream's idle timeout would), "garbage" answers malformed bytes and
/// hangs up, and "/pets/999" answers after 3 s.
struct ConnUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl ConnUpstream {
    fn start() -> ConnUpstream {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                loop {
                    let Ok((mut tcp, _)) = listener.accept().await else { continue };
                    let conn = count.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        loop {
                            let head_end = loop {
                                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                    break i + 4;
                                }
                                let mut chunk = [0u8; 4096];
                                match tcp.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            };
                            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                            let header = |name: &str| {
                                head.lines()
                                    .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)))
                                    .map(|(_, v)| v.trim().to_owned())
                            };
                            let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                            while buf.len() < head_end + length {
                                let mut chunk = [0u8; 4096];
                                match tcp.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            }
                            buf.drain(..head_end + length);
                            let line = head.lines().next().unwrap_or_default().to_owned();
                            if line.contains("/pets/999") {
                                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                            }
                            if line.contains("garbage") {
                                let _ = tcp.write_all(b"HTTP/1.1 two hundred\r\n\x00\xff\r\n\r\n").await;
                                return;
                            }
                            let body =
                                serde_json::json!({"conn": conn, "host": header("host"), "line": line}).to_string();
                            if let Some(framed) = framed_answer(&line, &body) {
                                // In pieces, so the gateway reads the framing across reads.
                                let _ = tcp.set_nodelay(true);
                                for piece in framed.chunks(framed.len() / 3 + 1) {
                                    if tcp.write_all(piece).await.is_err() {
                                        return;
                                    }
                                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                                }
                                if line.contains("frame=close") || line.contains("frame=cut") {
                                    return;
                                }
                                continue;
                            }
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if tcp.write_all(answer.as_bytes()).await.is_err() || line.contains("hangup") {
                                return;
                            }
                        }
                    });
                }
            });
        });
        ConnUpstream { addr, accepted }
    }
}

/// A gateway in front of a `ConnUpstream`, with a client SVID.
struct ConnGateway {
    pki: Pki,
    upstream: ConnUpstream,
    port: u16,
    app: Appliance,
    node: Leaf,
    _dir: tempfile::TempDir,
}

impl ConnGateway {
    fn start(timeout_ms: u32) -> ConnGateway {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        let upstream = ConnUpstream::start();
        let port = free_port();
        let settings = format!("timeout_ms = {timeout_ms}\nretries = 0");
        let app = Appliance::start(&config(&pki, port, upstream.addr, "", &settings), &["up"]);
        app.wait_ready();
        let node = pki.svid("node1", "spiffe://edge.example/node/1");
        ConnGateway { pki, upstream, port, app, node, _dir: dir }
    }
}

/// The answer `ConnUpstream` gives a request line asking for a framing
/// (`frame=` in its query): chunked after interim answers and with
/// trailers, read to the connection's end, chunked beside a Content-Length,
/// or a Content-Length body cut short.
fn framed_answer(line: &str, body: &str) -> Option<Vec<u8>> {
    const HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n";
    let (a, b) = body.split_at(body.len() / 2);
    let chunks = format!("{:x};ext=1\r\n{a}\r\n{:X}\r\n{b}\r\n0\r\nx-trailer: t\r\n\r\n", a.len(), b.len());
    let frame = line.split_once("frame=")?.1.split([' ', '&']).next()?;
    Some(
        match frame {
            "chunked" => format!(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n{HEAD}transfer-encoding: chunked\r\n\r\n{chunks}"
            ),
            "close" => format!("{HEAD}\r\n{body}"),
            "both" => format!("{HEAD}content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n{chunks}"),
            "cut" => format!("{HEAD}content-length: {}\r\n\r\n{a}", body.len()),
            _ => return None,
        }
        .into_bytes(),
    )
}

/// One keep-alive HTTP/1.1 connection to the gateway over mTLS.
async fn h1_connection(pki: &Pki, svid: &Leaf, port: u16) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tls = svid_client(&pki.server_ca.ca_file, &svid.cert_file, &svid.key_file);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls.config())
        .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// (status, body) of one request on a client connection.
async fn exchange(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    sender.ready().await.unwrap();
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body))))
}

/// An HTTP/1.1 client's requests all go over one upstream connection its
/// connection owns; another client gets its own, and leaves it to the next
/// client when it closes; an upstream that closed
/// a parked connection gets the next request (a POST, not retryable) on a
/// new one; a timed-out exchange does not leave its connection parked, and
/// a malformed answer is a 502 that does not spoil the next request.
#[test]
fn http1_clients_keep_their_own_upstream_connection() {
    let ConnGateway { _dir, pki, upstream, port, app, node } = ConnGateway::start(1000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut first = h1_connection(&pki, &node, port).await;
        let mut conns = Vec::new();
        for id in 1..=3 {
            let (status, body) = exchange(&mut first, "GET", &format!("/pets/{id}"), "").await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["host"].as_str(), Some(upstream.addr.to_string().as_str()), "{body}");
            assert_eq!(body["line"], format!("GET /pets/{id} HTTP/1.1"));
            conns.push(body["conn"].as_u64().unwrap());
        }
        assert!(conns.iter().all(|c| *c == conns[0]), "one upstream connection for one client: {conns:?}");
        let mut second = h1_connection(&pki, &node, port).await;
        let (_, other) = exchange(&mut second, "GET", "/pets/1", "").await;
        assert_ne!(other["conn"].as_u64().unwrap(), conns[0], "{other}");
        assert_eq!(exchange(&mut first, "GET", "/pets/1", "").await.1["conn"].as_u64(), Some(conns[0]));
        // A client connection that closes leaves its upstream connection
        // idle for the next one.
        drop(second);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mut third = h1_connection(&pki, &node, port).await;
        assert_eq!(exchange(&mut third, "GET", "/pets/1", "").await.1["conn"], other["conn"]);

        // The upstream hangs up after this answer; the POST that follows
        // finds the parked connection closed and goes on a new one.
        let (status, _) = exchange(&mut first, "GET", "/pets?hangup=1", "").await;
        assert_eq!(status, 200);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (status, body) = exchange(&mut first, "POST", "/pets", r#"{"name":"rex","tags":[]}"#).await;
        assert_eq!(status, 200, "{body}");
        let after = body["conn"].as_u64().unwrap();
        assert!(after != conns[0] && after != other["conn"].as_u64().unwrap(), "{body}");

        // A timeout drops its connection: the next request opens another.
        let (status, body) = exchange(&mut first, "GET", "/pets/999", "").await;
        assert_eq!(status, 504, "{body}");
        let (status, body) = exchange(&mut first, "GET", "/pets/1", "").await;
        assert_eq!(status, 200, "{body}");
        let last = body["conn"].as_u64().unwrap();
        assert!(last > after, "{body}");

        // A malformed answer is a 502 naming the service, and the next
        // request goes on a new connection.
        let (status, body) = exchange(&mut first, "GET", "/pets?garbage=1", "").await;
        assert_eq!((status, body["status"].as_u64()), (502, Some(502)), "{body}");
        assert!(body["detail"].as_str().unwrap().contains("\"pets\" is unavailable"), "{body}");
        let (status, body) = exchange(&mut first, "GET", "/pets/1", "").await;
        assert_eq!((status, body["conn"].as_u64()), (200, Some(last + 1)), "{body}");
        // Open now: the first client's and the third's; the ones that
        // failed or timed out are closed and no longer counted.
        let (_, metrics) = app.get("/metrics");
        let gauge = "edgebox_gateway_upstream_owned_connections{service=\"pets\",upstream=\"stable\"} 2";
        assert!(metrics.contains(gauge), "{metrics}");
    });
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 5, "connections the upstream accepted");
}

/// Answers framed by chunks (after interim answers, with trailers), by the
/// connection's end, or by chunks beside a Content-Length reach the client
/// whole; only a connection left in step carries the next request, and a
/// body cut short fails its client connection without spoiling the next.
#[test]
fn upstream_answers_framed_every_way_reach_the_client_whole() {
    let ConnGateway { _dir, pki, upstream, port, app, node } = ConnGateway::start(2000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut client = h1_connection(&pki, &node, port).await;
        let mut conn_of = async |path: &str| {
            let (status, body) = exchange(&mut client, "GET", path, "").await;
            assert_eq!(status, 200, "{path}: {body}");
            assert_eq!(body["line"], format!("GET {path} HTTP/1.1"));
            body["conn"].as_u64().unwrap()
        };
        // Chunks leave the connection in step: the next request takes it.
        assert_eq!(conn_of("/pets?frame=chunked").await, 1);
        assert_eq!(conn_of("/pets/1").await, 1);
        // Read to the end: the connection goes with it.
        assert_eq!(conn_of("/pets?frame=close").await, 1);
        assert_eq!(conn_of("/pets/1").await, 2);
        // Chunks beside a Content-Length: read as chunks, then the
        // connection goes too (the framing was ambiguous).
        assert_eq!(conn_of("/pets?frame=both").await, 2);
        assert_eq!(conn_of("/pets/1").await, 3);
        // Cut short: the client's answer fails, not the next client's.
        client.ready().await.unwrap();
        let req = hyper::Request::get("/pets?frame=cut").header("host", "localhost").body(Full::new(Bytes::new()));
        if let Ok(resp) = client.send_request(req.unwrap()).await {
            assert!(resp.into_body().collect().await.is_err(), "a body cut short must not look whole");
        }
        let warning = app.wait_log("answer's body failed part-way");
        assert!(warning.contains("closed the connection in the middle of the answer's body"), "{warning}");
        let mut other = h1_connection(&pki, &node, port).await;
        let (status, body) = exchange(&mut other, "GET", "/pets/1", "").await;
        assert_eq!((status, body["conn"].as_u64()), (200, Some(4)), "{body}");
        // Open now: the other client's; the cut one is closed and uncounted.
        let (_, metrics) = app.get("/metrics");
        let gauge = "edgebox_gateway_upstream_owned_connections{service=\"pets\",upstream=\"stable\"} 1";
        assert!(metrics.contains(gauge), "{metrics}");
    });
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 4, "connections the upstream accepted");
}

/// `edgebox gateway check` compiles what the config names and prints each
/// operation with who may call it; a broken document fails with its place.
#[test]
fn check_prints_every_operation_and_who_may_call_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let cfg_file = dir.path().join("edgebox.toml");
    std::fs::write(&cfg_file, config(&pki, free_port(), "127.0.0.1:1".parse().unwrap(), "", "")).unwrap();
    let out = crate::support::run(&["--config", cfg_file.to_str().unwrap(), "gateway", "check"]);
    let listing = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{listing}{}", text(&out.stderr));
    assert!(listing.contains("DELETE /pets/{id}") && listing.contains("spiffe://edge.example/admin"), "{listing}");
    assert!(listing.contains("ok: 1 services"), "{listing}");
    std::fs::write(dir.path().join("pets.yaml"), "openapi: 3.0.0\npaths: {}\n").unwrap();
    let out = crate::support::run(&["--config", cfg_file.to_str().unwrap(), "gateway", "check"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("only OpenAPI 3.1"), "{}", text(&out.stderr));
}
