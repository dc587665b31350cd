//! Entry points for the fuzz targets (fuzz/fuzz_targets/gateway_*.rs):
//! hostile requests against a compiled document, hostile bearer tokens,
//! hostile upstream answers. Each must end in an error, never a panic or a
//! hang.

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::core::h1codec;

use super::identity::JwtVerifier;
use super::openapi::Api;

/// A store API: nested schemas, $ref'd parameters, bodies and schemas,
/// path, query and header parameters, and allow lists at every level.
pub const SAMPLE_API: &str = r##"
openapi: 3.1.0
info: { title: pets, version: "1" }
x-edgebox-allow: ["spiffe://edge.example/admin"]
components:
  parameters:
    Limit:
      name: limit
      in: query
      schema: { type: integer, minimum: 1, maximum: 100 }
  schemas:
    Tag:
      type: object
      required: [name]
      properties: { name: { type: string, minLength: 1 } }
    Pet:
      type: object
      required: [name, tags]
      additionalProperties: false
      properties:
        name: { type: string }
        age: { type: [integer, "null"], minimum: 0 }
        tags: { type: array, items: { $ref: "#/components/schemas/Tag" } }
  requestBodies:
    PetBody:
      required: true
      content:
        application/json:
          schema: { $ref: "#/components/schemas/Pet" }
paths:
  /pets:
    x-edgebox-allow: ["spiffe://edge.example/node/*"]
    get:
      operationId: listPets
      parameters:
        - $ref: "#/components/parameters/Limit"
        - { name: ids, in: query, schema: { type: array, items: { type: integer } } }
        - { name: x-tenant, in: header, required: true, schema: { type: string, pattern: "^[a-z]+$" } }
    post:
      operationId: addPet
      x-edgebox-allow: ["spiffe://edge.example/node/writer"]
      requestBody: { $ref: "#/components/requestBodies/PetBody" }
  /pets/mine:
    get: { operationId: myPets }
  /pets/{id}:
    parameters:
      - { name: id, in: path, required: true, schema: { type: integer } }
    get: { operationId: getPet }
    delete: { operationId: deletePet, x-edgebox-allow: [] }
  /files/{name}.json:
    get:
      operationId: getFile
      x-edgebox-allow: ["*"]
      parameters: [{ name: name, in: path, required: true, schema: { type: string } }]
"##;

fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        let doc = serde_yaml_ng::from_str(SAMPLE_API).expect("the sample document parses");
        Api::compile(&doc, "sample", None).expect("the sample document compiles")
    })
}

/// A request made of `data`: a method byte, then NUL-separated path,
/// query, header name, header value and body; routed and validated.
pub fn request(data: &[u8]) {
    let Some((&m, rest)) = data.split_first() else { return };
    let method = [Method::GET, Method::POST, Method::PUT, Method::DELETE][usize::from(m % 4)].clone();
    let mut parts = rest.splitn(5, |b| *b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let (path, query, name, value, body) = (next(), next(), next(), next(), next());
    let path = String::from_utf8_lossy(path);
    let query = String::from_utf8_lossy(query);
    let mut headers = HeaderMap::new();
    if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
        headers.insert(n, v);
    }
    if let Some(m) = api().find(&path)
        && let Some(op) = m.route.operation(&method)
    {
        let _ = super::validate::check(op, &m.params, Some(&query), &headers, body);
    }
}

/// `data` as a bearer token.
pub fn bearer(data: &[u8]) {
    static VERIFIER: OnceLock<JwtVerifier> = OnceLock::new();
    let v = VERIFIER.get_or_init(|| {
        let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#;
        let set = serde_json::from_str(jwks).expect("a JWKS");
        JwtVerifier::with_keys(vec!["spiffe://edge.example/gateway".into()], [("edge.example".to_owned(), set)].into())
    });
    let _ = v.verify(&String::from_utf8_lossy(data));
}

/// `data` as an upstream's answer: a method byte, a piece-size byte, then
/// the bytes. Arriving in pieces must decode as arriving whole does.
pub fn answer(data: &[u8]) {
    let [m, step, answer @ ..] = data else { return };
    let method = [Method::GET, Method::HEAD, Method::POST][usize::from(m % 3)].clone();
    let whole = h1codec::decode_in_pieces(answer, &method, answer.len().max(1));
    let pieces = h1codec::decode_in_pieces(answer, &method, usize::from(*step).max(1));
    match (whole, pieces) {
        (Ok(w), Ok(p)) => {
            assert_eq!((w.0.response.status(), w.0.keep_alive), (p.0.response.status(), p.0.keep_alive));
            assert_eq!((w.1, w.2), (p.1, p.2), "body and what follows it");
        }
        (Err(_), Err(_)) => {}
        (w, p) => panic!("whole: {:?}, in pieces: {:?}", w.err(), p.err()),
    }
}
