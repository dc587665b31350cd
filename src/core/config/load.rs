//! Parsing and validating the config file, with file:line:column errors.
//!
//! The document is parsed once into spanned values; each section is then
//! deserialized on its own (the core's into typed structs, a role's by its
//! table entry), so one bad section does not hide the errors of another and
//! every error keeps its position in the original text.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::{AuthMode, CoreConfig};
use crate::core::role::{Role, RoleEntry};
use crate::roles::ROLES;

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    /// Dotted key at fault, e.g. `admin.listen`, when one is known.
    pub key: Option<String>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read config: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{}", render(file, problems))]
    Invalid { file: String, problems: Vec<Problem> },
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Read { .. } => &[],
        }
    }
}

fn render(file: &str, problems: &[Problem]) -> String {
    let mut out = String::new();
    if problems.len() > 1 {
        out.push_str(&format!("{file}: {} config errors", problems.len()));
    }
    for (i, p) in problems.iter().enumerate() {
        if problems.len() > 1 || i > 0 {
            out.push_str("\n  ");
        }
        out.push_str(&p.to_string_in(file));
    }
    out
}

impl Problem {
    fn to_string_in(&self, file: &str) -> String {
        match &self.key {
            Some(k) => format!("{file}:{}:{}: `{k}`: {}", self.line, self.column, self.message),
            None => format!("{file}:{}:{}: {}", self.line, self.column, self.message),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_in("config"))
    }
}

/// A role compiled in, built from its section.
pub struct LoadedRole {
    pub entry: &'static RoleEntry,
    pub role: Box<dyn Role>,
}

/// The whole config: the core's sections and every compiled-in role, built.
pub struct LoadedConfig {
    pub core: CoreConfig,
    pub roles: Vec<LoadedRole>,
    /// The file it came from; None for built-in defaults.
    pub source: Option<PathBuf>,
}

impl LoadedConfig {
    /// Role `name` as built from this config, as its own type (for a role's
    /// CLI commands, which read its section).
    pub fn into_role<R: Role>(self, name: &str) -> anyhow::Result<R> {
        let role = self.roles.into_iter().find(|r| r.entry.name == name);
        let role = role.ok_or_else(|| anyhow::anyhow!("role `{name}` is not compiled into this binary"))?;
        let any: Box<dyn std::any::Any> = role.role;
        any.downcast::<R>().map(|r| *r).map_err(|_| anyhow::anyhow!("role `{name}` has an unexpected type"))
    }

    /// The roles `edgebox up` runs, in table order.
    pub fn enabled_roles(&self) -> Vec<&'static str> {
        match &self.core.edgebox.roles {
            Some(names) => ROLES.iter().filter(|r| names.iter().any(|n| n == r.name)).map(|r| r.name).collect(),
            None => ROLES.iter().map(|r| r.name).collect(),
        }
    }
}

pub const CORE_SECTIONS: &[&str] = &["edgebox", "log", "admin", "store", "telemetry"];

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
    let text = String::from_utf8(text).map_err(|e| ConfigError::Invalid {
        file: file.clone(),
        problems: vec![Problem {
            line: 0,
            column: 0,
            key: None,
            message: format!("not UTF-8 (invalid byte at offset {})", e.utf8_error().valid_up_to()),
        }],
    })?;
    let mut loaded = load_text(&text, &file)?;
    loaded.source = Some(path.to_owned());
    Ok(loaded)
}

/// Validates config text; `file` names it in errors.
pub fn load_text(text: &str, file: &str) -> Result<LoadedConfig, ConfigError> {
    let invalid = |problems| ConfigError::Invalid { file: file.to_owned(), problems };
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(invalid(syntax.iter().map(|e| from_toml_error(text, e, None)).collect()));
    }
    let root = root.into_inner();
    let mut problems = Vec::new();
    let mut core = CoreConfig::default();
    let mut role_sections: Vec<(&'static RoleEntry, &Spanned<DeValue<'_>>)> = Vec::new();

    for (key, value) in root.iter() {
        let name: &str = key.get_ref();
        match name {
            "edgebox" => section(text, name, value, &mut core.edgebox, &mut problems),
            "log" => section(text, name, value, &mut core.log, &mut problems),
            "admin" => section(text, name, value, &mut core.admin, &mut problems),
            "store" => section(text, name, value, &mut core.store, &mut problems),
            "telemetry" => section(text, name, value, &mut core.telemetry, &mut problems),
            _ => match crate::roles::find(name) {
                Some(entry) => role_sections.push((entry, value)),
                None => problems.push(at(
                    text,
                    key.span(),
                    Some(name),
                    format!("unknown section; expected one of: {}", known_sections().join(", ")),
                )),
            },
        }
    }

    let mut roles = Vec::new();
    for entry in ROLES {
        let value = role_sections.iter().find(|(e, _)| e.name == entry.name).map(|(_, v)| *v);
        match (entry.load)(value.map(|v| ValueDeserializer::from((*v).clone()))) {
            Ok(role) => roles.push(LoadedRole { entry, role }),
            Err(e) => problems.push(with_key(text, &e, entry.name, value)),
        }
    }

    validate(text, &root, &core, &mut problems);
    if !problems.is_empty() {
        problems.sort_by_key(|p| (p.line, p.column));
        return Err(invalid(problems));
    }
    Ok(LoadedConfig { core, roles, source: None })
}

/// Builds one role from a section given as a value (desired state the
/// agent applies); the error names the key at fault.
pub fn load_section(entry: &RoleEntry, section: &toml::Value) -> Result<Box<dyn Role>, String> {
    let mut doc = toml::Table::new();
    doc.insert(entry.name.to_owned(), section.clone());
    let text = toml::to_string(&doc).map_err(|e| format!("[{}]: {e}", entry.name))?;
    let root = DeTable::parse(&text).map_err(|e| format!("[{}]: {e}", entry.name))?.into_inner();
    let value = root.iter().find(|(k, _)| k.get_ref() == entry.name).map(|(_, v)| v);
    (entry.load)(value.map(|v| ValueDeserializer::from(v.clone()))).map_err(|e| {
        let p = with_key(&text, &e, entry.name, value);
        match p.key {
            Some(k) => format!("`{k}`: {}", p.message),
            None => format!("[{}]: {}", entry.name, p.message),
        }
    })
}

/// The full documented default config: the core's sections, then each role's.
pub fn default_config_text() -> String {
    let mut out = include_str!("defaults.toml").to_owned();
    for role in ROLES {
        out.push('\n');
        out.push_str(role.default_config.trim_end());
        out.push('\n');
    }
    out
}

fn known_sections() -> Vec<&'static str> {
    CORE_SECTIONS.iter().copied().chain(ROLES.iter().map(|r| r.name)).collect()
}

fn section<T: DeserializeOwned>(
    text: &str,
    name: &str,
    value: &Spanned<DeValue<'_>>,
    slot: &mut T,
    problems: &mut Vec<Problem>,
) {
    match T::deserialize(ValueDeserializer::from(value.clone())) {
        Ok(v) => *slot = v,
        Err(e) => problems.push(with_key(text, &e, name, Some(value))),
    }
}

/// Turns a deserialization error into a problem naming the innermost key
/// whose span holds the error.
fn with_key(text: &str, err: &toml::de::Error, section: &str, value: Option<&Spanned<DeValue<'_>>>) -> Problem {
    match (err.span(), value) {
        (Some(span), Some(v)) => from_toml_error(text, err, Some(key_at(v, span.start, section.to_owned()))),
        // Errors a role raises after parsing carry no span: point at its section.
        (None, Some(v)) => at(text, v.span(), Some(section), err.message().trim().to_owned()),
        _ => from_toml_error(text, err, Some(section.to_owned())),
    }
}

fn key_at(value: &Spanned<DeValue<'_>>, offset: usize, path: String) -> String {
    if let DeValue::Table(table) = value.get_ref() {
        for (k, v) in table.iter() {
            let key_span = k.span();
            if key_span.contains(&offset) || v.span().contains(&offset) {
                return key_at(v, offset, format!("{path}.{}", k.get_ref()));
            }
        }
    }
    path
}

fn from_toml_error(text: &str, err: &toml::de::Error, key: Option<String>) -> Problem {
    let span = err.span().unwrap_or(0..0);
    at(text, span, key.as_deref(), err.message().trim().to_owned())
}

fn at(text: &str, span: Range<usize>, key: Option<&str>, message: String) -> Problem {
    let (line, column) = line_col(text, span.start);
    Problem { line, column, key: key.map(str::to_owned), message }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

fn span_of(root: &DeTable<'_>, path: &[&str]) -> Range<usize> {
    let mut table = root;
    let mut span = 0..0;
    for (i, part) in path.iter().enumerate() {
        let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref() == part) else {
            break;
        };
        span = if i + 1 == path.len() { k.span() } else { v.span() };
        match v.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    span
}

/// Checks that cross keys: role names exist, the admin listener is not left
/// open to the network without authentication.
fn validate(text: &str, root: &DeTable<'_>, core: &CoreConfig, problems: &mut Vec<Problem>) {
    if let Some(names) = &core.edgebox.roles {
        for name in names {
            if crate::roles::find(name).is_none() {
                let compiled: Vec<_> = ROLES.iter().map(|r| r.name).collect();
                problems.push(at(
                    text,
                    span_of(root, &["edgebox", "roles"]),
                    Some("edgebox.roles"),
                    format!(
                        "role `{name}` is not compiled into this binary (compiled in: {})",
                        if compiled.is_empty() { "none".to_owned() } else { compiled.join(", ") }
                    ),
                ));
            }
        }
    }
    let admin = &core.admin;
    if let Some(p) =
        crate::core::auth::problem(admin.auth, admin.listen, admin.token_file.as_deref(), admin.client_certs())
    {
        let key = if admin.auth == AuthMode::None { "listen" } else { "auth" };
        problems.push(at(text, span_of(root, &["admin", key]), Some(&format!("admin.{key}")), p));
    }
    if !(0.0..=1.0).contains(&core.telemetry.sample_ratio) {
        problems.push(at(
            text,
            span_of(root, &["telemetry", "sample_ratio"]),
            Some("telemetry.sample_ratio"),
            format!("{} is outside 0.0 to 1.0", core.telemetry.sample_ratio),
        ));
    }
    if core.store.max_batch == 0 {
        problems.push(at(
            text,
            span_of(root, &["store", "max_batch"]),
            Some("store.max_batch"),
            "must be at least 1".into(),
        ));
    }
}
