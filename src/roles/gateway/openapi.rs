//! OpenAPI 3.1 documents compiled for the request path: every operation
//! with its parameters (path-item ones merged in, `$ref`s followed), its
//! request body's media types, and JSON Schema 2020-12 validators for each
//! parameter and JSON body. Schemas keep their `$ref`s: they are compiled
//! against the whole document registered under one base URI, so
//! `#/components/schemas/…` resolves without copying anything. Nothing is
//! fetched: a reference outside the document is an error at load. Patterns
//! run on a linear-time regex engine.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use jsonschema::Validator;
use serde_json::Value;

/// Where a parameter is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Path,
    Query,
    Header,
    Cookie,
}

impl Location {
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::Header => "header",
            Location::Cookie => "cookie",
        }
    }
}

/// The JSON type a parameter's text is read as before validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Integer,
    Number,
    Boolean,
    /// Repeated (`?id=1&id=2`) or comma-separated values of the item kind.
    Array(ScalarKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarKind {
    String,
    Integer,
    Number,
    Boolean,
}

pub struct Param {
    pub name: String,
    pub location: Location,
    pub required: bool,
    pub kind: Kind,
    /// Arrays: `?id=1&id=2` (explode, the form default) or `?id=1,2`.
    pub explode: bool,
    pub schema: Option<Validator>,
}

pub struct RequestBody {
    pub required: bool,
    /// Media types as the document lists them (`application/json`,
    /// `application/*`, `*/*`), each with its schema if a JSON one.
    pub media: Vec<(String, Option<Validator>)>,
}

pub struct Operation {
    /// operationId, else "METHOD /template".
    pub id: String,
    /// "METHOD /template": the route label in metrics and logs.
    pub route: String,
    pub params: Vec<Param>,
    pub body: Option<RequestBody>,
    /// Who may call it: the policy file's rule, else x-edgebox-allow of the
    /// operation, its path item, or the document; None denies everyone.
    pub allow: Option<Vec<String>>,
    /// Denials are logged, not enforced (the rule's source is in shadow mode).
    pub shadow: bool,
}

/// One path template and its operations.
pub struct Route {
    pub template: String,
    segments: Vec<Segment>,
    pub operations: Vec<(http::Method, Arc<Operation>)>,
}

#[derive(Debug, PartialEq)]
enum Segment {
    Literal(String),
    /// `prefix{name}suffix`, one parameter per segment.
    Param {
        prefix: String,
        name: String,
        suffix: String,
    },
}

/// A compiled document.
pub struct Api {
    pub routes: Vec<Route>,
}

/// A matched request: the route, and the path parameters by name (decoded).
pub struct Matched<'a, 'p> {
    pub route: &'a Route,
    /// Each path parameter's name and its percent-decoded value.
    pub params: Vec<(&'a str, Cow<'p, str>)>,
}

const METHODS: [(&str, http::Method); 8] = [
    ("get", http::Method::GET),
    ("put", http::Method::PUT),
    ("post", http::Method::POST),
    ("delete", http::Method::DELETE),
    ("options", http::Method::OPTIONS),
    ("head", http::Method::HEAD),
    ("patch", http::Method::PATCH),
    ("trace", http::Method::TRACE),
];

/// Base URI the document is registered under for `$ref` resolution.
const BASE: &str = "https://openapi.edgebox.invalid/document";

/// Reads a document from JSON or YAML.
pub fn read(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(json) if text.trim_start().starts_with('{') => {
            bail!("{}: not valid JSON: {json}", path.display())
        }
        Err(_) => serde_yaml_ng::from_str(&text).map_err(|e| anyhow!("{}: not valid YAML: {e}", path.display()))?,
    };
    Ok(doc)
}

impl Api {
    /// Compiles a document with its policy file's rules; `name` is its file
    /// in errors.
    pub fn compile(doc: &Value, name: &str, policy: Option<&super::policy::Policy>) -> anyhow::Result<Api> {
        let version = doc.get("openapi").and_then(Value::as_str).unwrap_or("");
        if !version.starts_with("3.1.") {
            bail!("{name}: openapi {version:?}: only OpenAPI 3.1 documents (JSON Schema 2020-12) are taken");
        }
        let registry = jsonschema::Registry::new()
            .draft(jsonschema::Draft::Draft202012)
            .add(BASE, doc.clone())
            .and_then(|r| r.prepare())
            .map_err(|e| anyhow!("{name}: {e}"))?;
        // A schema is compiled as a reference to its place in the document,
        // so its own `$ref`s resolve against the document.
        let compile = |at: &str| -> anyhow::Result<Validator> {
            let fragment = percent_encoding::utf8_percent_encode(at, FRAGMENT);
            let schema = serde_json::json!({ "$ref": format!("{BASE}#{fragment}") });
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .with_registry(&registry)
                .should_validate_formats(true)
                // Linear-time regexes: a `pattern` is checked against
                // hostile input, so no backtracking (look-around and
                // back-references are refused at load).
                .with_pattern_options(jsonschema::PatternOptions::regex())
                .offline()
                .build(&schema)
                .map_err(|e| anyhow!("{name} {at}: schema does not compile: {e}"))
        };
        let doc_allow = allow_list(doc, name, "")?;
        let doc_shadow = match doc.get("x-edgebox-mode").and_then(Value::as_str) {
            None | Some("enforce") => false,
            Some("shadow") => true,
            Some(other) => bail!("{name} /x-edgebox-mode: {other:?} is neither \"enforce\" nor \"shadow\""),
        };
        let mut routes = Vec::new();
        let paths = doc.get("paths").and_then(Value::as_object).into_iter().flatten();
        for (template, item) in paths {
            let at = format!("/paths/{}", escape(template));
            let (item, at) = resolve(doc, item, &at).with_context(|| name.to_owned())?;
            let segments = parse_template(template).map_err(|e| anyhow!("{name} {at}: {e}"))?;
            let item_params = item.get("parameters");
            let item_allow = allow_list(item, name, &at)?;
            let mut operations = Vec::new();
            for (key, method) in &METHODS {
                let Some(op) = item.get(*key) else { continue };
                let op_at = format!("{at}/{key}");
                let route = format!("{} {template}", method.as_str());
                let id = op.get("operationId").and_then(Value::as_str).map_or_else(|| route.clone(), str::to_owned);
                let mut params: Vec<Param> = Vec::new();
                for (list, list_at) in
                    [(item_params, format!("{at}/parameters")), (op.get("parameters"), format!("{op_at}/parameters"))]
                {
                    for (i, p) in list.and_then(Value::as_array).into_iter().flatten().enumerate() {
                        let p_at = format!("{list_at}/{i}");
                        let (p, p_at) = resolve(doc, p, &p_at).with_context(|| name.to_owned())?;
                        let param = param(doc, p, &p_at, name, &compile)?;
                        params.retain(|q| !(q.name == param.name && q.location == param.location));
                        params.push(param);
                    }
                }
                for seg in &segments {
                    if let Segment::Param { name: pname, .. } = seg
                        && !params.iter().any(|p| p.location == Location::Path && &p.name == pname)
                    {
                        bail!("{name} {op_at}: path parameter {{{pname}}} is not declared");
                    }
                }
                let body = match op.get("requestBody") {
                    Some(b) => {
                        let b_at = format!("{op_at}/requestBody");
                        let (b, b_at) = resolve(doc, b, &b_at).with_context(|| name.to_owned())?;
                        Some(request_body(b, &b_at, &compile)?)
                    }
                    None => None,
                };
                let (allow, shadow) = match policy.and_then(|p| p.rule(&id, &route)) {
                    Some(rule) => (Some(rule.to_vec()), policy.is_some_and(|p| p.shadow)),
                    None => {
                        let allow =
                            allow_list(op, name, &op_at)?.or_else(|| item_allow.clone()).or_else(|| doc_allow.clone());
                        (allow, doc_shadow)
                    }
                };
                operations.push((method.clone(), Arc::new(Operation { id, route, params, body, allow, shadow })));
            }
            routes.push(Route { template: template.clone(), segments, operations });
        }
        // Concrete paths before templated ones (OpenAPI's matching rule):
        // compare segment by segment, a literal winning over a parameter.
        routes.sort_by(|a, b| {
            let rank = |r: &Route| r.segments.iter().map(|s| matches!(s, Segment::Param { .. })).collect::<Vec<_>>();
            rank(a).cmp(&rank(b))
        });
        if let Some(policy) = policy {
            let known = |op: &str| routes.iter().flat_map(|r| &r.operations).any(|(_, o)| o.id == op || o.route == op);
            if let Some(unknown) = policy.operations().find(|op| !known(op)) {
                bail!("{name}: the policy file names operation {unknown:?}, which the document does not have");
            }
        }
        Ok(Api { routes })
    }

    /// The route for a request path, if any.
    pub fn find<'p>(&self, path: &'p str) -> Option<Matched<'_, 'p>> {
        let path = path.strip_prefix('/')?;
        let count = path.split('/').count();
        'routes: for route in &self.routes {
            if route.segments.len() != count {
                continue;
            }
            let mut params = Vec::new();
            for (seg, part) in route.segments.iter().zip(path.split('/')) {
                match seg {
                    Segment::Literal(l) if l == part => {}
                    Segment::Literal(_) => continue 'routes,
                    Segment::Param { prefix, name, suffix } => {
                        let Some(v) = part.strip_prefix(prefix.as_str()).and_then(|v| v.strip_suffix(suffix.as_str()))
                        else {
                            continue 'routes;
                        };
                        if v.is_empty() {
                            continue 'routes;
                        }
                        params.push((name.as_str(), percent_encoding::percent_decode_str(v).decode_utf8_lossy()));
                    }
                }
            }
            return Some(Matched { route, params });
        }
        None
    }
}

impl Route {
    pub fn operation(&self, method: &http::Method) -> Option<&Arc<Operation>> {
        self.operations.iter().find(|(m, _)| m == method).map(|(_, op)| op)
    }

    /// The Allow header of a 405.
    pub fn allowed(&self) -> String {
        self.operations.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// Follows local `$ref`s (`#/json/pointer`) to the object they name, and
/// its pointer in the document.
fn resolve<'a>(doc: &'a Value, mut v: &'a Value, at: &str) -> anyhow::Result<(&'a Value, String)> {
    let mut here = at.to_owned();
    for _ in 0..32 {
        let Some(r) = v.get("$ref").and_then(Value::as_str) else { return Ok((v, here)) };
        let pointer = r.strip_prefix('#').ok_or_else(|| anyhow!("{at}: $ref {r:?} is outside the document"))?;
        here = percent_encoding::percent_decode_str(pointer).decode_utf8_lossy().into_owned();
        v = doc.pointer(&here).ok_or_else(|| anyhow!("{at}: $ref {r:?} points at nothing"))?;
    }
    bail!("{at}: $ref chain longer than 32 (a cycle?)")
}

/// Characters escaped in a URI fragment holding a JSON pointer.
const FRAGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'~').remove(b'-').remove(b'.').remove(b'_');

/// A JSON pointer segment.
fn escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn parse_template(template: &str) -> Result<Vec<Segment>, String> {
    let rest = template.strip_prefix('/').ok_or("a path template starts with /")?;
    rest.split('/')
        .map(|seg| match seg.find('{') {
            None if seg.contains('}') => Err(format!("unbalanced braces in {seg:?}")),
            None => Ok(Segment::Literal(seg.to_owned())),
            Some(open) => {
                let close = seg.find('}').filter(|c| *c > open + 1).ok_or(format!("bad parameter in {seg:?}"))?;
                let (prefix, name, suffix) = (&seg[..open], &seg[open + 1..close], &seg[close + 1..]);
                if suffix.contains(['{', '}']) {
                    return Err(format!("one parameter per path segment ({seg:?})"));
                }
                Ok(Segment::Param { prefix: prefix.to_owned(), name: name.to_owned(), suffix: suffix.to_owned() })
            }
        })
        .collect()
}

fn allow_list(v: &Value, name: &str, at: &str) -> anyhow::Result<Option<Vec<String>>> {
    let Some(list) = v.get("x-edgebox-allow") else { return Ok(None) };
    let items = list.as_array().ok_or_else(|| anyhow!("{name} {at}/x-edgebox-allow: a list of SPIFFE ID patterns"))?;
    items
        .iter()
        .map(|i| {
            let p = i.as_str().ok_or_else(|| anyhow!("{name} {at}/x-edgebox-allow: a list of strings"))?;
            super::policy::check_pattern(p).map_err(|e| anyhow!("{name} {at}/x-edgebox-allow: {e}"))?;
            Ok(p.to_owned())
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map(Some)
}

/// Compiles the schema at a pointer in the document.
type Compile<'a> = dyn Fn(&str) -> anyhow::Result<Validator> + 'a;

fn param(doc: &Value, p: &Value, at: &str, name: &str, compile: &Compile<'_>) -> anyhow::Result<Param> {
    let pname =
        p.get("name").and_then(Value::as_str).ok_or_else(|| anyhow!("{name} {at}: parameter without a name"))?;
    let location = match p.get("in").and_then(Value::as_str) {
        Some("path") => Location::Path,
        Some("query") => Location::Query,
        Some("header") => Location::Header,
        Some("cookie") => Location::Cookie,
        other => bail!("{name} {at}: parameter {pname:?} has in = {other:?}"),
    };
    let required = location == Location::Path || p.get("required").and_then(Value::as_bool).unwrap_or(false);
    let schema = p.get("schema");
    let kind = match schema {
        Some(s) => kind_of(doc, s, at)?,
        None => Kind::String,
    };
    let explode = p
        .get("explode")
        .and_then(Value::as_bool)
        .unwrap_or(location == Location::Query || location == Location::Cookie);
    let schema = schema.map(|_| compile(&format!("{at}/schema"))).transpose()?;
    Ok(Param { name: pname.to_owned(), location, required, kind, explode, schema })
}

/// The kind a parameter's text is read as: its schema's type (the first
/// that is not "null"), following `$ref`.
fn kind_of(doc: &Value, schema: &Value, at: &str) -> anyhow::Result<Kind> {
    let (schema, _) = resolve(doc, schema, at)?;
    let scalar = |s: &Value| -> anyhow::Result<Option<ScalarKind>> {
        let (s, _) = resolve(doc, s, at)?;
        let t = match s.get("type") {
            Some(Value::String(t)) => Some(t.as_str()),
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null"),
            _ => None,
        };
        Ok(match t {
            Some("integer") => Some(ScalarKind::Integer),
            Some("number") => Some(ScalarKind::Number),
            Some("boolean") => Some(ScalarKind::Boolean),
            Some("array") => None,
            _ => Some(ScalarKind::String),
        })
    };
    Ok(match scalar(schema)? {
        Some(ScalarKind::String) => Kind::String,
        Some(ScalarKind::Integer) => Kind::Integer,
        Some(ScalarKind::Number) => Kind::Number,
        Some(ScalarKind::Boolean) => Kind::Boolean,
        None => Kind::Array(match schema.get("items") {
            Some(items) => scalar(items)?.unwrap_or(ScalarKind::String),
            None => ScalarKind::String,
        }),
    })
}

fn request_body(b: &Value, at: &str, compile: &Compile<'_>) -> anyhow::Result<RequestBody> {
    let required = b.get("required").and_then(Value::as_bool).unwrap_or(false);
    let mut media = Vec::new();
    for (mt, m) in b.get("content").and_then(Value::as_object).into_iter().flatten() {
        let schema = match (is_json(mt) || mt.contains('*'), m.get("schema")) {
            (true, Some(_)) => Some(compile(&format!("{at}/content/{}/schema", escape(mt)))?),
            _ => None,
        };
        media.push((mt.to_ascii_lowercase(), schema));
    }
    Ok(RequestBody { required, media })
}

/// Whether a media type is JSON: application/json or a +json suffix.
pub fn is_json(media_type: &str) -> bool {
    let mt = media_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mt == "application/json" || mt.ends_with("+json")
}
