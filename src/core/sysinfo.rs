//! Facts about the machine and the build, for `edgebox info`, `--version`
//! and /v1/roles.

use serde::Serialize;

/// What `edgebox --version` prints, beyond the version.
pub fn long_version() -> String {
    format!(
        "{}\ncommit: {}\ntarget: {}\nfeatures: {}",
        env!("CARGO_PKG_VERSION"),
        env!("EDGEBOX_GIT_COMMIT"),
        env!("EDGEBOX_TARGET"),
        features()
    )
}

/// The role features compiled in, comma-separated ("none" when none are).
pub fn features() -> String {
    let names: Vec<&str> = crate::roles::ROLES.iter().map(|r| r.feature).collect();
    if names.is_empty() { "none".into() } else { names.join(",") }
}

#[derive(Debug, Serialize)]
pub struct Kernel {
    pub release: String,
    pub machine: String,
}

/// The running kernel (from /proc, so it works under qemu-user too).
pub fn kernel() -> Kernel {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned()).unwrap_or_else(|_| "unknown".into());
    Kernel { release: read("/proc/sys/kernel/osrelease"), machine: std::env::consts::ARCH.to_owned() }
}
