//! Unit tests of the gateway's parts: OpenAPI compilation and matching,
//! request validation with JSON pointers, policy decisions, JWT-SVIDs.

use http::{HeaderMap, HeaderValue, Method};
use serde_json::{Value, json};

use super::fuzz::SAMPLE_API;
use super::identity::JwtVerifier;
use super::openapi::{Api, read};
use super::policy::{Decision, Policy, decide};
use super::testjwt::JwtIssuer;
use super::validate::check;
use crate::core::tls::spiffe::SpiffeId;

fn petstore() -> Api {
    let doc: Value = serde_yaml_ng::from_str(SAMPLE_API).unwrap();
    Api::compile(&doc, "pets.yaml", None).unwrap()
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn routes_match_concrete_paths_first_and_know_their_methods() {
    let api = petstore();
    let m = api.find("/pets/mine").unwrap();
    assert_eq!(m.route.template, "/pets/mine");
    let m = api.find("/pets/42").unwrap();
    assert_eq!((m.route.template.as_str(), m.params.clone()), ("/pets/{id}", vec![("id", "42".into())]));
    assert_eq!(m.route.operation(&Method::DELETE).unwrap().id, "deletePet");
    assert!(m.route.operation(&Method::POST).is_none());
    assert_eq!(m.route.allowed(), "GET, DELETE");
    let m = api.find("/files/report%20one.json").unwrap();
    assert_eq!(m.params, vec![("name", std::borrow::Cow::from("report one"))]);
    for missing in ["/", "/pets/1/2", "/files/x.txt", "pets", "/petsx"] {
        assert!(api.find(missing).is_none(), "{missing}");
    }
}

#[test]
fn allow_lists_come_from_the_operation_its_path_or_the_document() {
    let api = petstore();
    let op = |path: &str, m: Method| api.find(path).unwrap().route.operation(&m).unwrap().clone();
    assert_eq!(op("/pets", Method::POST).allow.as_deref().unwrap(), ["spiffe://edge.example/node/writer"]);
    assert_eq!(op("/pets", Method::GET).allow.as_deref().unwrap(), ["spiffe://edge.example/node/*"]);
    assert_eq!(op("/pets/1", Method::GET).allow.as_deref().unwrap(), ["spiffe://edge.example/admin"]);
    assert!(op("/pets/1", Method::DELETE).allow.as_deref().unwrap().is_empty());
}

#[test]
fn parameters_are_read_as_their_type_and_failures_name_their_pointer() {
    let api = petstore();
    let m = api.find("/pets").unwrap();
    let list = m.route.operation(&Method::GET).unwrap();
    let tenant = headers(&[("x-tenant", "acme")]);
    assert!(check(list, &[], Some("limit=5&ids=1&ids=2"), &tenant, b"").is_ok());
    let e = check(list, &[], Some("limit=500"), &tenant, b"").unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.errors[0]["in"].as_str(), e.errors[0]["pointer"].as_str()),
        (400, Some("query"), Some("/limit"))
    );
    let e = check(list, &[], Some("limit=ten"), &tenant, b"").unwrap_err();
    assert!(e.errors[0]["detail"].as_str().unwrap().contains("integer"), "{:?}", e.errors);
    let e = check(list, &[], Some("ids=1&ids=x"), &tenant, b"").unwrap_err();
    assert_eq!(e.errors[0]["pointer"], "/ids/1");
    let e = check(list, &[], None, &HeaderMap::new(), b"").unwrap_err();
    assert_eq!((e.errors[0]["in"].as_str(), e.errors[0]["pointer"].as_str()), (Some("header"), Some("/x-tenant")));
    let e = check(list, &[], None, &headers(&[("x-tenant", "ACME")]), b"").unwrap_err();
    assert!(e.errors[0]["detail"].as_str().unwrap().contains("does not match"), "{:?}", e.errors);
    let m = api.find("/pets/abc").unwrap();
    let e = check(m.route.operation(&Method::GET).unwrap(), &m.params, None, &HeaderMap::new(), b"").unwrap_err();
    assert_eq!((e.errors[0]["in"].as_str(), e.errors[0]["pointer"].as_str()), (Some("path"), Some("/id")));
}

#[test]
fn json_bodies_are_validated_through_refs_to_the_failing_pointer() {
    let api = petstore();
    let add = api.find("/pets").unwrap().route.operation(&Method::POST).unwrap().clone();
    let json_ct = headers(&[("content-type", "application/json; charset=utf-8")]);
    let good = json!({"name": "rex", "age": null, "tags": [{"name": "dog"}]}).to_string();
    assert!(check(&add, &[], None, &json_ct, good.as_bytes()).is_ok());
    let nested = json!({"name": "rex", "tags": [{"name": "dog"}, {"name": ""}]}).to_string();
    let e = check(&add, &[], None, &json_ct, nested.as_bytes()).unwrap_err();
    assert_eq!((e.errors[0]["in"].as_str(), e.errors[0]["pointer"].as_str()), (Some("body"), Some("/tags/1/name")));
    let extra = json!({"name": "rex", "tags": [], "owner": "me"}).to_string();
    assert!(check(&add, &[], None, &json_ct, extra.as_bytes()).is_err(), "additionalProperties: false");
    let e = check(&add, &[], None, &json_ct, b"{\"name\": ").unwrap_err();
    assert!(e.detail.contains("not valid JSON"), "{}", e.detail);
    let e = check(&add, &[], None, &json_ct, b"").unwrap_err();
    assert!(e.detail.contains("required"), "{}", e.detail);
    let e = check(&add, &[], None, &headers(&[("content-type", "text/plain")]), b"rex").unwrap_err();
    assert_eq!(e.status.as_u16(), 415);
    let body = e.response();
    assert_eq!(body.headers()["content-type"], "application/problem+json");
}

#[test]
fn documents_that_cannot_be_served_are_refused_with_the_place_named() {
    let compile = |yaml: &str| {
        let doc: Value = serde_yaml_ng::from_str(yaml).unwrap();
        Api::compile(&doc, "d.yaml", None).err().map(|e| format!("{e:#}")).unwrap_or_default()
    };
    assert!(compile("openapi: 3.0.3\npaths: {}").contains("only OpenAPI 3.1"));
    let e = compile("openapi: 3.1.0\npaths:\n  /a/{id}:\n    get: {}");
    assert!(e.contains("/paths/~1a~1{id}/get") && e.contains("{id}"), "{e}");
    let e = compile("openapi: 3.1.0\npaths:\n  /a:\n    get:\n      parameters: [{$ref: 'other.yaml#/p'}]");
    assert!(e.contains("outside the document"), "{e}");
    let e = compile("openapi: 3.1.0\npaths:\n  /a:\n    get:\n      parameters: [{$ref: '#/nothing'}]");
    assert!(e.contains("points at nothing"), "{e}");
    let e = compile("openapi: 3.1.0\npaths:\n  /a:\n    get:\n      x-edgebox-allow: ['https://x']");
    assert!(e.contains("x-edgebox-allow"), "{e}");
    let e = compile(
        "openapi: 3.1.0\npaths:\n  /a:\n    get:\n      parameters: [{name: q, in: query, schema: {$ref: '#/missing'}}]",
    );
    assert!(e.contains("/paths/~1a/get/parameters/0"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"openapi\": ").unwrap();
    assert!(format!("{:#}", read(&bad).unwrap_err()).contains("not valid JSON"));
}

#[test]
fn a_policy_file_overrides_the_document_and_may_only_shadow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, "mode = \"shadow\"\n[[rules]]\noperation = \"getPet\"\nallow = [\"spiffe://edge.example/ops/*\"]\n[[rules]]\noperation = \"DELETE /pets/{id}\"\nallow = [\"*\"]\n").unwrap();
    let policy = Policy::load(&path).unwrap();
    let doc: Value = serde_yaml_ng::from_str(SAMPLE_API).unwrap();
    let api = Api::compile(&doc, "pets.yaml", Some(&policy)).unwrap();
    let m = api.find("/pets/1").unwrap();
    let get = m.route.operation(&Method::GET).unwrap();
    assert_eq!((get.allow.as_deref().unwrap(), get.shadow), (&["spiffe://edge.example/ops/*".to_owned()][..], true));
    assert_eq!(m.route.operation(&Method::DELETE).unwrap().allow.as_deref().unwrap(), ["*"]);
    let listed = api.find("/pets").unwrap().route.operation(&Method::GET).unwrap().clone();
    assert!(!listed.shadow, "operations without a rule keep the document's mode");
    std::fs::write(&path, "[[rules]]\noperation = \"nope\"\nallow = []\n").unwrap();
    let e = Api::compile(&doc, "pets.yaml", Some(&Policy::load(&path).unwrap())).err().unwrap();
    assert!(e.to_string().contains("\"nope\""), "{e}");
    std::fs::write(&path, "mode = \"maybe\"\n").unwrap();
    assert!(Policy::load(&path).unwrap_err().to_string().contains("maybe"));
}

#[test]
fn decisions_deny_by_default() {
    let id = SpiffeId::parse("spiffe://edge.example/node/7").unwrap();
    let allow = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(decide(Some(&id), Some(&allow(&["spiffe://edge.example/node/7"])), false), Decision::Allow);
    assert_eq!(decide(Some(&id), Some(&allow(&["spiffe://edge.example/node/*"])), false), Decision::Allow);
    assert_eq!(decide(Some(&id), Some(&allow(&["*"])), false), Decision::Allow);
    assert!(matches!(decide(Some(&id), Some(&allow(&["spiffe://edge.example/node"])), false), Decision::Deny(_)));
    assert!(matches!(decide(Some(&id), Some(&allow(&["spiffe://other.example/node/*"])), false), Decision::Deny(_)));
    assert!(matches!(decide(Some(&id), None, false), Decision::Deny(_)));
    assert!(matches!(decide(None, Some(&allow(&["spiffe://edge.example/node/*"])), false), Decision::Deny(_)));
    assert_eq!(decide(None, Some(&allow(&["*"])), false), Decision::Allow);
    assert!(matches!(decide(Some(&id), Some(&[]), true), Decision::ShadowDeny(_)));
}

#[test]
fn jwt_svids_need_their_trust_domains_key_an_expiry_and_the_audience() {
    let dir = tempfile::tempdir().unwrap();
    let (edge, other) = (JwtIssuer::new("k1"), JwtIssuer::new("k9"));
    std::fs::write(dir.path().join("edge.json"), edge.jwks.to_string()).unwrap();
    std::fs::write(dir.path().join("other.json"), other.jwks.to_string()).unwrap();
    let cfg = super::config::JwtConfig {
        audience: vec!["spiffe://edge.example/gateway".into()],
        bundles: [
            ("edge.example".into(), dir.path().join("edge.json")),
            ("other.example".into(), dir.path().join("other.json")),
        ]
        .into_iter()
        .collect(),
        leeway_s: 0,
    };
    let v = JwtVerifier::load(&cfg).unwrap();
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 300;
    let claims = |sub: &str, aud: &str, exp: Option<u64>| {
        let mut c = json!({"sub": sub, "aud": aud});
        if let Some(e) = exp {
            c["exp"] = e.into();
        }
        c
    };
    let good = claims("spiffe://edge.example/node/1", "spiffe://edge.example/gateway", Some(exp));
    assert_eq!(v.verify(&edge.token("k1", &good)).unwrap().to_string(), "spiffe://edge.example/node/1");
    let e =
        v.verify(&edge.token("k1", &claims("spiffe://edge.example/node/1", "someone-else", Some(exp)))).unwrap_err();
    assert!(e.contains("Audience"), "{e}");
    let e = v
        .verify(&edge.token("k1", &claims("spiffe://edge.example/node/1", "spiffe://edge.example/gateway", None)))
        .unwrap_err();
    assert!(e.contains("exp"), "{e}");
    let e = v
        .verify(
            &edge
                .token("k1", &claims("spiffe://edge.example/node/1", "spiffe://edge.example/gateway", Some(exp - 600))),
        )
        .unwrap_err();
    assert!(e.contains("Expired"), "{e}");
    // other.example's key cannot vouch for an edge.example subject.
    let e = v.verify(&other.token("k9", &good)).unwrap_err();
    assert!(e.contains("no key"), "{e}");
    let e = v.verify(&other.token("k1", &good)).unwrap_err();
    assert!(e.contains("InvalidSignature") || e.contains("signature"), "{e}");
    let e = v.verify(&edge.token("k1", &claims("https://x", "spiffe://edge.example/gateway", Some(exp)))).unwrap_err();
    assert!(e.contains("sub"), "{e}");
    let hs =
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &good, &jsonwebtoken::EncodingKey::from_secret(b"k"))
            .unwrap();
    assert!(v.verify(&hs).unwrap_err().contains("not allowed"));
    assert!(v.verify("garbage").is_err());
}

#[test]
fn pathological_patterns_run_in_linear_time_or_are_refused_at_load() {
    let doc = |pattern: &str| {
        let yaml = format!(
            "openapi: 3.1.0\npaths:\n  /a:\n    get:\n      parameters: [{{name: q, in: query, schema: {{type: string, pattern: '{pattern}'}}}}]\n"
        );
        let doc: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        Api::compile(&doc, "p.yaml", None)
    };
    let api = doc("^(a+)+$").unwrap();
    let op = api.find("/a").unwrap().route.operation(&Method::GET).unwrap().clone();
    let hostile = format!("q={}!", "a".repeat(50_000));
    let started = std::time::Instant::now();
    assert!(check(&op, &[], Some(&hostile), &HeaderMap::new(), b"").is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
    let e = doc("^(?=a)a$").err().unwrap();
    assert!(format!("{e:#}").contains("/paths/~1a/get/parameters/0/schema"), "{e:#}");
}
