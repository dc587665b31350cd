//! Exit codes and the one-line error report.
//!
//! The codes follow sysexits(3) where one fits: 64 for a usage error, 78 for a
//! configuration error, 1 for anything that failed at run time.

/// Everything ran as asked.
pub const OK: u8 = 0;
/// Something failed while running.
pub const RUNTIME: u8 = 1;
/// The command line was wrong (EX_USAGE).
pub const USAGE: u8 = 64;
/// The configuration was wrong (EX_CONFIG): a bad file, an unknown key, an
/// unusable data directory.
pub const CONFIG: u8 = 78;

/// A command-line mistake that clap did not catch (for example a missing
/// config file to check).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Marks an error as a configuration error wherever it sits in the chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigProblem(pub String);

/// The exit code for an error: the first cause that says what kind it is wins.
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<UsageError>() || cause.is::<clap::Error>() {
            return USAGE;
        }
        if cause.is::<ConfigProblem>() || cause.is::<crate::core::config::ConfigError>() {
            return CONFIG;
        }
    }
    RUNTIME
}

/// Prints `edgebox: <error>` and one indented line per cause to stderr.
pub fn report(err: &anyhow::Error) {
    if let Some(clap_err) = err.downcast_ref::<clap::Error>() {
        // clap formats its own usage errors (with the usage line and a hint).
        let _ = clap_err.print();
        return;
    }
    eprintln!("edgebox: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}
