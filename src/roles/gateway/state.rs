//! Everything a request is served with, built at once from the config and
//! the files it names (OpenAPI documents, policies, JWKS) and swapped whole
//! on reload: a request in flight keeps the state it started with, and a
//! state that does not build is refused while the old one keeps serving.
//! Upstream health outlives the swaps (kept by URL).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;

use super::access::AccessLog;
use super::canary::Side;
use super::config::{CanaryConfig, GatewayConfig};
use super::identity::JwtVerifier;
use super::openapi::{self, Api};
use super::policy::Policy;
use super::proxy::RequestMetrics;
use super::upstream::{Health, Upstream};

pub struct State {
    pub cfg: GatewayConfig,
    pub services: Vec<Service>,
    pub jwt: Option<JwtVerifier>,
    pub colour: http::HeaderName,
    pub access: AccessLog,
    /// Request metric handles, registered once per label set.
    pub metrics: RequestMetrics,
}

pub struct Service {
    pub name: String,
    pub api: Api,
    pub stable: Upstream,
    pub canary: Option<Canary>,
}

pub struct Canary {
    pub upstream: Upstream,
    pub cfg: CanaryConfig,
}

/// Health by (service, upstream URL), kept across reloads.
#[derive(Default)]
pub struct HealthBook(Mutex<HashMap<(String, String), Arc<Health>>>);

impl HealthBook {
    fn get(&self, service: &str, url: &str, threshold: u32) -> Arc<Health> {
        let mut book = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let h = book.entry((service.to_owned(), url.to_owned())).or_insert_with(|| Arc::new(Health::new(threshold)));
        h.set_threshold(threshold);
        h.clone()
    }
}

impl State {
    /// Reads and compiles everything `cfg` names (blocking: file reads and
    /// schema compilation).
    pub fn build(cfg: &GatewayConfig, health: &HealthBook) -> anyhow::Result<State> {
        let mut services = Vec::with_capacity(cfg.services.len());
        for s in &cfg.services {
            let at = |k: &str| format!("gateway.services.{}.{k}", s.name);
            let doc = openapi::read(&s.openapi_file).with_context(|| at("openapi_file"))?;
            let policy = s.policy_file.as_deref().map(Policy::load).transpose().with_context(|| at("policy_file"))?;
            let api = Api::compile(&doc, &s.openapi_file.display().to_string(), policy.as_ref())
                .with_context(|| at("openapi_file"))?;
            let threshold = s.canary.as_ref().map_or(3, |c| c.unhealthy_after);
            let stable = Upstream::new(&s.upstream, s, Side::Stable, health.get(&s.name, &s.upstream, threshold))?;
            let canary = match &s.canary {
                Some(c) => Some(Canary {
                    upstream: Upstream::new(&c.upstream, s, Side::Canary, health.get(&s.name, &c.upstream, threshold))?,
                    cfg: c.clone(),
                }),
                None => None,
            };
            services.push(Service { name: s.name.clone(), api, stable, canary });
        }
        let jwt = cfg.jwt.as_ref().map(JwtVerifier::load).transpose()?;
        let colour = http::HeaderName::try_from(cfg.colour_header.as_str()).context("gateway.colour_header")?;
        let access = AccessLog::open(&cfg.access_log)?;
        Ok(State { cfg: cfg.clone(), services, jwt, colour, access, metrics: RequestMetrics::default() })
    }

    /// The service and route serving `path`: the first document (in config
    /// order) that has it.
    pub fn route<'p>(&self, path: &'p str) -> Option<(&Service, openapi::Matched<'_, 'p>)> {
        self.services.iter().find_map(|s| s.api.find(path).map(|m| (s, m)))
    }
}

/// The state in service, swapped whole on reload.
#[derive(Default)]
pub struct Current(RwLock<Option<Arc<State>>>);

impl Current {
    pub fn get(&self) -> Option<Arc<State>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, state: State) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(state));
    }
}
