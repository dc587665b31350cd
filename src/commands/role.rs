//! `edgebox <role> …`: `serve` runs the role alone on the shared core; any
//! other subcommand, and the role's own options without one (`edgebox
//! agent --join URL`), belong to the role.

use crate::commands::Invocation;
use crate::core::role::RoleEntry;

pub fn run(role: &'static RoleEntry, matches: &clap::ArgMatches, inv: &Invocation) -> anyhow::Result<()> {
    match matches.subcommand() {
        // `serve` with the role's own serve options: the role builds itself.
        Some(("serve", m)) if serve_options_given(role, m) => (role.run_command)(matches, inv),
        Some(("serve", _)) => crate::core::lifecycle::run(inv, Some(role.name)),
        Some((_, _)) => (role.run_command)(matches, inv),
        None if role_options_given(role, matches) => (role.run_command)(matches, inv),
        None => Err(crate::core::exit::UsageError(format!("`edgebox {}` needs a subcommand", role.name)).into()),
    }
}

/// Whether an option the role's own `serve` declares (not a global one)
/// was typed on the command line.
fn serve_options_given(role: &RoleEntry, m: &clap::ArgMatches) -> bool {
    let own = (role.command)();
    let Some(serve) = own.find_subcommand("serve") else { return false };
    serve.get_arguments().any(|a| {
        let id = a.get_id().as_str();
        !a.is_global_set() && m.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
    })
}

/// Whether an option the role itself declares (not a global one) was given.
fn role_options_given(role: &RoleEntry, matches: &clap::ArgMatches) -> bool {
    (role.command)().get_arguments().any(|a| {
        let id = a.get_id().as_str();
        !a.is_global_set() && matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
    })
}
