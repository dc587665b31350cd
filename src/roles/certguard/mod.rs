//! certguard: issues certificates from an embedded CA and keeps them
//! current. The root and intermediate live in the shared store with their
//! keys sealed under a key file (seal.rs, ca.rs); each managed certificate
//! from the config is issued, rolled out to its targets canaries first
//! (written atomically, reloaded, probed by a real handshake, rolled back
//! on failure) and renewed at a fraction of its lifetime (service.rs,
//! rollout.rs, install.rs). `edgebox certguard status` shows them.

mod acme;
mod bench;
mod ca;
mod cli;
pub mod config;
mod history;
mod install;
mod keys;
pub mod pebble;
mod rollout;
mod seal;
mod service;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use redb::WriteTransaction;

use crate::core::role::{Declared, ListenerDecl, Role, RoleCtx, RoleEntry, load_with};
use crate::core::store::Migration;
use crate::core::telemetry::MetricDoc;
use config::CertguardConfig;

pub const ENTRY: RoleEntry = RoleEntry {
    name: "certguard",
    summary: "certificate issuance and rotation from an embedded CA",
    feature: "certguard",
    default_config: config::DEFAULT,
    compliance_config: config::COMPLIANCE,
    migrations: MIGRATIONS,
    reloads: true,
    load: |section| load_with(section, Certguard::new),
    metrics: METRICS,
    command: cli::command,
    run_command: cli::run,
};

/// certguard's metrics.
const METRICS: &[MetricDoc] = &[
    MetricDoc::gauge("edgebox_certguard_managed_certificates", "Certificates certguard keeps issued and rotated."),
    MetricDoc::gauge("edgebox_certguard_expiry_seconds", "Seconds until a certificate expires, by cert."),
    MetricDoc::counter("edgebox_certguard_rotations_total", "Certificates issued and rolled out, by cert."),
    MetricDoc::histogram(
        "edgebox_certguard_rotation_seconds",
        "Time to issue a certificate and roll it out to every target.",
    ),
    MetricDoc::counter(
        "edgebox_certguard_failures_total",
        "Rotations that failed (the old certificate stays), by cert.",
    ),
    MetricDoc::counter(
        "edgebox_certguard_rollbacks_total",
        "Rollouts undone (a canary or wave failed) and manual rollbacks, by cert.",
    ),
    MetricDoc::counter("edgebox_certguard_one_off_issued_total", "One-off certificates issued on request."),
    MetricDoc::gauge("edgebox_certguard_ca_generation", "Number of the CA generation that signs now."),
    MetricDoc::counter(
        "edgebox_certguard_ca_changes_total",
        "Steps of CA rotation: a new CA staged, promoted or retired.",
    ),
];

const MIGRATIONS: &[Migration] = &[Migration { name: "create certguard tables", apply: create }];

fn create(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(ca::CA_TABLE)?;
    txn.open_table(service::CERTS_TABLE)?;
    txn.open_table(history::HISTORY_TABLE)?;
    Ok(())
}

/// The role, built from its config section.
pub struct Certguard {
    cfg: CertguardConfig,
}

impl Certguard {
    fn new(cfg: CertguardConfig) -> Result<Self, String> {
        cfg.validate()?;
        Ok(Self { cfg })
    }
}

impl Role for Certguard {
    fn declared(&self) -> Declared {
        let mut files: Vec<_> = self
            .cfg
            .certs
            .iter()
            .flat_map(|c| &c.targets)
            .flat_map(|t| [t.cert_file.clone(), t.key_file.clone()])
            .collect();
        files.extend(self.cfg.trust_bundle_file.clone());
        files.extend(self.cfg.key_file.clone());
        let listeners = self.cfg.acme.iter().filter_map(acme_listener).collect();
        Declared { listeners, files }
    }

    fn run(self: Box<Self>, mut ctx: RoleCtx) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let cfg = self.cfg;
            let key_file = cfg.key_file.clone().unwrap_or_else(|| ctx.data_dir.join("certguard.key"));
            let (store, ca_cfg) = (ctx.store.clone(), cfg.clone());
            let (ca, sealer) = tokio::task::spawn_blocking(move || {
                let sealer = seal::Sealer::open_or_create(&key_file)?;
                anyhow::Ok((ca::Ca::load_or_create(&store, &sealer, &ca_cfg, std::time::SystemTime::now())?, sealer))
            })
            .await??;
            let clock: service::Clock = Arc::new(std::time::SystemTime::now);
            let mut guard = service::Guard::new(cfg.clone(), ca, sealer, ctx.store.clone(), clock);
            let mut commands = ctx.commands();
            let mut reload = ctx.reload.clone();
            guard.write_trust_bundle()?;
            if let Some((acme, decl)) = guard.acme.as_ref().and_then(|a| Some((a, acme_listener(&a.cfg)?))) {
                let listener = ctx.bind(decl.name).await?;
                tracing::info!(addr = %listener.local_addr()?, challenge = decl.name, "certguard answering ACME challenges");
                let stop = ctx.shutdown.clone();
                match acme.cfg.challenge {
                    config::ChallengeKind::Http01 => {
                        tokio::spawn(acme::serve_http01(listener, acme.tokens.clone(), stop))
                    }
                    _ => tokio::spawn(acme::serve_tls_alpn01(listener, acme.alpn_certs.clone(), stop)),
                };
            }
            let mut interval = tokio::time::interval(Duration::from_secs(cfg.check_interval_s));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    _ = interval.tick() => {}
                    Some(cmd) = commands.recv() => {
                        let _ = cmd.reply.send(guard.command(cmd.args).await);
                    }
                    Ok(()) = reload.changed() => {
                        let delivered = reload.borrow_and_update().clone();
                        if let Some(new) = delivered.take::<Certguard>() {
                            let note = reconfigure_note(&guard.cfg, &new.cfg);
                            tracing::info!(generation = delivered.generation, certificates = new.cfg.certs.len(), "certguard: {note}");
                            ctx.status.note_reload(format!("generation {}: {note}", delivered.generation));
                            if new.cfg.check_interval_s != guard.cfg.check_interval_s {
                                interval = tokio::time::interval(Duration::from_secs(new.cfg.check_interval_s));
                            }
                            guard = guard.reconfigured(new.cfg);
                        }
                    }
                }
                match guard.tick().await {
                    Ok(detail) => ctx.status.set_detail(detail),
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "certguard pass failed; retrying"),
                }
                if !ctx.status.snapshot().ready {
                    ctx.status.set_ready(true);
                }
            }
        })
    }
}

/// The listener an ACME challenge needs answered on, if any.
fn acme_listener(a: &config::AcmeConfig) -> Option<ListenerDecl> {
    match a.challenge {
        config::ChallengeKind::Http01 => Some(ListenerDecl { name: "acme-http01", addr: a.http01_listen }),
        config::ChallengeKind::TlsAlpn01 => Some(ListenerDecl { name: "acme-tls-alpn01", addr: a.tls_alpn01_listen }),
        config::ChallengeKind::Dns01 => None,
    }
}

/// What a reload changes: the managed certificates at once; the CA's
/// settings and the key file only at the next start (the CA is loaded).
fn reconfigure_note(old: &CertguardConfig, new: &CertguardConfig) -> String {
    let ca = |c: &CertguardConfig| {
        (c.ca_name.clone(), c.root_days, c.intermediate_days, c.key_file.clone(), c.acme.is_some())
    };
    if ca(old) == ca(new) {
        "managed certificates reloaded".into()
    } else {
        "managed certificates reloaded; ca_name, root_days, intermediate_days, key_file and adding or removing \
         [certguard.acme] apply at the next start"
            .into()
    }
}

#[cfg(test)]
mod tests;
