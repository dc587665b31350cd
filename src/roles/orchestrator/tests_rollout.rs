//! Deployments and rollouts over the real API (loopback HTTP, a store on
//! disk), with the fleet's agents played in process: they heartbeat and
//! report the desired state they applied through the same calls the
//! heartbeat stream makes, so each step of a rollout can be checked.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::tests::{Server, call, start, store};
use crate::roles::fleet;

/// A role section valid in every build that has the orchestrator.
const CONFIG: &str = "[orchestrator]\nlisten = \"127.0.0.1:0\"\n";

fn register(s: &Server, ids: impl IntoIterator<Item = (String, &'static str)>) -> impl Future<Output = ()> {
    let addr = s.addr;
    let nodes: Vec<(String, &str)> = ids.into_iter().collect();
    async move {
        for (id, site) in nodes {
            let body = json!({"id": id, "arch": "arm64", "labels": {"site": site}}).to_string();
            assert!(call(addr, Method::POST, "/v1/nodes", &body).await.0.is_success());
        }
    }
}

/// Every node heartbeats once (so it is ready).
fn beat_all(s: &Server, ids: &[String]) {
    for id in ids {
        assert!(s.api.heartbeat(id, None, Instant::now()));
    }
}

/// What each node is to run now.
fn desired(s: &Server, ids: &[String]) -> BTreeMap<String, String> {
    ids.iter().map(|id| (id.clone(), s.api.rollouts.desired_id(&s.api.registry, id))).collect()
}

/// Nodes whose desired state is `want`.
fn holding(s: &Server, ids: &[String], want: &str) -> Vec<String> {
    desired(s, ids).into_iter().filter(|(_, d)| d == want).map(|(id, _)| id).collect()
}

/// Waits until `f` holds (the test server steps rollouts every 20 ms).
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Agents report what they were given: ok, or failed for those in `failing`.
fn report_all(s: &Server, ids: &[String], failing: &[&str]) {
    for (id, d) in desired(s, ids) {
        let failed = if failing.contains(&id.as_str()) && !d.is_empty() {
            let dep = d.split('@').next().unwrap_or_default().to_owned();
            BTreeMap::from([(dep, "tsdb: cannot bind 127.0.0.1:9201: address in use".to_owned())])
        } else {
            BTreeMap::new()
        };
        s.api.rollouts.report(&id, d, failed);
    }
}

/// The deployment once its rollout reaches `want` (within 5 s).
async fn phase(s: &Server, name: &str, want: &str) -> Value {
    let mut v = Value::Null;
    for _ in 0..250 {
        v = call(s.addr, Method::GET, &format!("/v1/deployments/{name}"), "").await.1;
        if v["phase"] == want {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name} never reached {want}: {v}");
}

async fn put(s: &Server, name: &str, spec: Value) -> (StatusCode, Value) {
    call(s.addr, Method::PUT, &format!("/v1/deployments/{name}"), &spec.to_string()).await
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:02}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_takes_its_canaries_first_then_at_most_max_unavailable_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&store(dir.path()), 60_000).await;
    let (fleet, others) = (ids("a", 20), ids("b", 5));
    register(&s, fleet.iter().map(|i| (i.clone(), "plant-a"))).await;
    register(&s, others.iter().map(|i| (i.clone(), "plant-b"))).await;
    beat_all(&s, &fleet);
    beat_all(&s, &others);
    let spec = json!({"selector": "site=plant-a", "config": CONFIG,
        "strategy": {"canary_percent": 10, "max_unavailable": 3}});
    let (st, v) = put(&s, "web", spec.clone()).await;
    assert_eq!((st, v["version"].as_u64()), (StatusCode::CREATED, Some(1)), "{v}");
    assert_eq!(put(&s, "web", spec).await.1["version"], 1, "the same spec again is no new version");

    // 10% of 20: two canaries, and no more until both report.
    until("two canaries", || holding(&s, &fleet, "web@1").len() == 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(holding(&s, &fleet, "web@1").len(), 2, "the rest waits for the canaries");
    report_all(&s, &fleet, &[]);
    // Then three at a time: never more than three assigned and unreported.
    until("three more", || holding(&s, &fleet, "web@1").len() == 5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(holding(&s, &fleet, "web@1").len(), 5, "max_unavailable holds");
    for _ in 0..10 {
        report_all(&s, &fleet, &[]);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    until("all twenty", || holding(&s, &fleet, "web@1").len() == 20).await;
    report_all(&s, &fleet, &[]);
    let v = phase(&s, "web", "complete").await;
    assert_eq!((v["progress"]["selected"].as_u64(), v["progress"]["updated"].as_u64()), (Some(20), Some(20)));
    assert!(holding(&s, &others, "").len() == 5, "plant-b is not selected");
    // A node's whole desired state: the deployment at its version.
    let (_, d) = call(s.addr, Method::GET, &format!("/v1/nodes/{}/desired", fleet[0]), "").await;
    assert_eq!((d["id"].as_str(), d["deployments"][0]["config"].as_str()), (Some("web@1"), Some(CONFIG)));

    // A node registering later that matches is given the deployment too.
    let late = vec!["a-late".to_owned()];
    register(&s, [(late[0].clone(), "plant-a")]).await;
    beat_all(&s, &late);
    until("the late node", || holding(&s, &late, "web@1").len() == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_pauses_the_rollout_until_resumed_or_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&store(dir.path()), 60_000).await;
    let fleet = ids("n", 10);
    register(&s, fleet.iter().map(|i| (i.clone(), "p"))).await;
    beat_all(&s, &fleet);
    let spec = |port: u16| {
        json!({"config": format!("[orchestrator]\nlisten = \"127.0.0.1:{port}\"\n"),
            "strategy": {"canary_percent": 20, "max_unavailable": 2}})
    };
    put(&s, "web", spec(0)).await;
    until("two canaries", || holding(&s, &fleet, "web@1").len() == 2).await;
    let canaries = holding(&s, &fleet, "web@1");
    report_all(&s, &fleet, &[canaries[0].as_str()]);
    let v = phase(&s, "web", "paused").await;
    let reason = v["paused_reason"].as_str().unwrap();
    assert!(reason.contains(&canaries[0]) && reason.contains("address in use"), "{reason}");
    assert_eq!(v["progress"]["failures"][0]["node"], canaries[0].as_str());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(holding(&s, &fleet, "web@1").len(), 2, "a paused rollout moves no node");

    // A fixed version rolls out from where the fleet stands; nodes not yet
    // moved keep version 1, which the orchestrator keeps meanwhile.
    let mut fixed = spec(0);
    fixed["config"] = json!("[orchestrator]\nlisten = \"127.0.0.1:0\"\nmax_labels = 16\n");
    let (st, v) = put(&s, "web", fixed).await;
    assert_eq!((st, v["version"].as_u64()), (StatusCode::OK, Some(2)), "{v}");
    until("two on version 2", || holding(&s, &fleet, "web@2").len() == 2).await;
    let still_v1 = holding(&s, &fleet, "web@1");
    if let Some(n) = still_v1.first() {
        let (_, d) = call(s.addr, Method::GET, &format!("/v1/nodes/{n}/desired"), "").await;
        assert_eq!(d["deployments"][0]["version"], 1, "{d}");
    }
    for _ in 0..20 {
        report_all(&s, &fleet, &[]);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    until("all on version 2", || holding(&s, &fleet, "web@2").len() == 10).await;
    report_all(&s, &fleet, &[]);
    until("version 1 dropped", || {
        s.api.rollouts.get("web", &s.api.registry, &s.api.detector).is_some_and(|(d, _)| d.older.is_empty())
    })
    .await;

    // Resume: failures seen so far are accepted, new ones pause again.
    let (st, _) = call(s.addr, Method::POST, "/v1/deployments/nope/resume", "").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = call(s.addr, Method::POST, "/v1/deployments/web/resume", "").await;
    assert_eq!((st, v["phase"].as_str()), (StatusCode::OK, Some("rolling")), "{v}");
    // Removing the deployment takes it off every node at once.
    assert_eq!(call(s.addr, Method::DELETE, "/v1/deployments/web", "").await.0, StatusCode::OK);
    assert_eq!(holding(&s, &fleet, "").len(), 10);
    assert_eq!(call(s.addr, Method::DELETE, "/v1/deployments/web", "").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_blobs_by_digest_and_a_deployment_needs_them_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&store(dir.path()), 60_000).await;
    let (st, v) = call(s.addr, Method::POST, "/v1/blobs", "package authz\ndefault allow := false\n").await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let digest = v["digest"].as_str().unwrap().to_owned();
    assert_eq!(digest, fleet::digest_of(b"package authz\ndefault allow := false\n"));
    let (st, _) = call(s.addr, Method::GET, &format!("/v1/blobs/{digest}"), "").await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = call(s.addr, Method::GET, "/v1/blobs/sha256:nothex", "").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let absent = fleet::digest_of(b"never uploaded");
    assert_eq!(call(s.addr, Method::GET, &format!("/v1/blobs/{absent}"), "").await.0, StatusCode::NOT_FOUND);
    // A blob over the limit is refused.
    let big = "x".repeat((1 << 20) + 1);
    assert_eq!(call(s.addr, Method::POST, "/v1/blobs", &big).await.0, StatusCode::PAYLOAD_TOO_LARGE);

    let with_files = |d: &str| json!({"config": CONFIG, "files": {"policies/authz.rego": d}});
    let (st, v) = put(&s, "policy", with_files(&absent)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("policies/authz.rego"), "{v}");
    assert_eq!(call(s.addr, Method::GET, "/v1/deployments/policy", "").await.0, StatusCode::NOT_FOUND);
    let (st, v) = put(&s, "policy", with_files(&digest)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    register(&s, [("n1".to_owned(), "p")]).await;
    beat_all(&s, &["n1".to_owned()]);
    until("n1 assigned", || !holding(&s, &["n1".to_owned()], "policy@1").is_empty()).await;
    let (_, d) = call(s.addr, Method::GET, "/v1/nodes/n1/desired", "").await;
    assert_eq!(d["deployments"][0]["files"]["policies/authz.rego"], digest.as_str());
    assert_eq!(call(s.addr, Method::GET, "/v1/nodes/ghost/desired", "").await.0, StatusCode::NOT_FOUND);

    // A blob a deployment names stays; once nothing names it, it can go.
    let blob = format!("/v1/blobs/{digest}");
    let (st, v) = call(s.addr, Method::DELETE, &blob, "").await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["deployments"], json!(["policy"]), "{v}");
    assert!(v["error"].as_str().unwrap().contains("policy"), "{v}");
    assert_eq!(call(s.addr, Method::GET, &blob, "").await.0, StatusCode::OK, "still served");
    assert_eq!(call(s.addr, Method::DELETE, "/v1/deployments/policy", "").await.0, StatusCode::OK);
    let (st, v) = call(s.addr, Method::DELETE, &blob, "").await;
    assert_eq!((st, v["deleted"].as_str()), (StatusCode::OK, Some(digest.as_str())), "{v}");
    assert_eq!(call(s.addr, Method::GET, &blob, "").await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(s.addr, Method::DELETE, &blob, "").await.0, StatusCode::NOT_FOUND, "already gone");
    assert_eq!(call(s.addr, Method::DELETE, "/v1/blobs/sha256:nothex", "").await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deployments_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&store(dir.path()), 60_000).await;
    for (name, body, needle) in [
        ("web", json!({"config": CONFIG, "replicas": 3}).to_string(), "unknown field"),
        ("web", "{not json".to_owned(), "deployment"),
        ("Web!", json!({"config": CONFIG}).to_string(), "deployment name"),
        ("web", json!({"config": CONFIG, "selector": "tier in (a"}).to_string(), "selector"),
        ("web", json!({"config": "[edgebox]\nroles = []\n"}).to_string(), "device's own"),
        ("web", json!({"config": "[orchestrator]\nlisten = 7\n"}).to_string(), "orchestrator.listen"),
        ("web", json!({"config": "[nosuch]\n"}).to_string(), "nosuch"),
        ("web", json!({"config": CONFIG, "strategy": {"canary_percent": 150}}).to_string(), "canary_percent"),
    ] {
        let (st, v) = call(s.addr, Method::PUT, &format!("/v1/deployments/{name}"), &body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{body}: {v}");
    }
    let huge = json!({"config": format!("{CONFIG}# {}\n", "x".repeat(8192))}).to_string();
    assert_eq!(call(s.addr, Method::PUT, "/v1/deployments/web", &huge).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(call(s.addr, Method::PATCH, "/v1/deployments/web", "").await.0, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_and_assignments_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let fleet = ids("n", 4);
    let before = {
        let s = start(&store, 60_000).await;
        register(&s, fleet.iter().map(|i| (i.clone(), "p"))).await;
        beat_all(&s, &fleet);
        put(&s, "web", json!({"config": CONFIG, "strategy": {"canary_percent": 50, "max_unavailable": 4}})).await;
        until("canaries", || holding(&s, &fleet, "web@1").len() == 2).await;
        desired(&s, &fleet)
    };
    let s = start(&store, 60_000).await;
    assert_eq!(desired(&s, &fleet), before);
    let (_, v) = call(s.addr, Method::GET, "/v1/deployments/web", "").await;
    assert_eq!((v["version"].as_u64(), v["phase"].as_str()), (Some(1), Some("rolling")), "{v}");
}
