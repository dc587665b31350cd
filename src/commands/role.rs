//! `edgebox <role> …`: `serve` runs the role alone on the shared core; any
//! other subcommand belongs to the role.

use crate::commands::Invocation;
use crate::core::role::RoleEntry;

pub fn run(role: &'static RoleEntry, matches: &clap::ArgMatches, inv: &Invocation) -> anyhow::Result<()> {
    match matches.subcommand() {
        Some(("serve", _)) => crate::core::lifecycle::run(inv, Some(role.name)),
        Some((_, _)) => (role.run_command)(matches, inv),
        None => Err(crate::core::exit::UsageError(format!("`edgebox {}` needs a subcommand", role.name)).into()),
    }
}
