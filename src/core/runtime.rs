//! The one tokio runtime, and the choice of file I/O path.
//!
//! tokio's own io_uring driver (tokio_unstable + feature `io-uring`) serves
//! file reads, writes and opens when the runtime enables it; everything else
//! goes through the blocking pool. We probe io_uring ourselves first because
//! the kernel may forbid it (the io_uring_disabled sysctl, a seccomp filter,
//! qemu-user): then we log once and never enable it, so no operation pays for
//! a failed submission.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// io_uring when the kernel allows it, else the blocking pool.
    #[default]
    Auto,
    /// io_uring or fail.
    Uring,
    /// Always the blocking pool.
    Blocking,
}

/// What is actually in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum IoPath {
    Uring,
    Blocking { reason: String },
}

impl IoPath {
    pub fn is_uring(&self) -> bool {
        matches!(self, IoPath::Uring)
    }
}

impl fmt::Display for IoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoPath::Uring => f.write_str("io_uring"),
            IoPath::Blocking { reason } => write!(f, "blocking pool ({reason})"),
        }
    }
}

/// Why io_uring cannot be used here, or None when a ring can be set up.
pub fn uring_unavailable() -> Option<String> {
    if !cfg!(tokio_unstable) {
        // RUSTFLAGS from the environment replace .cargo/config.toml's.
        return Some("this build has no io_uring driver (built without --cfg tokio_unstable)".into());
    }
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        // 1 means only members of kernel.io_uring_group may create rings;
        // the probe below tells whether we are one.
        if v.trim() == "2" {
            return Some("kernel.io_uring_disabled = 2".into());
        }
    }
    match io_uring::IoUring::new(4) {
        Ok(_) => None,
        Err(e) => Some(format!("io_uring_setup failed: {e}")),
    }
}

/// Resolves the asked mode to the path in use. `uring` when io_uring is not
/// usable is an error, not a silent fallback.
pub fn choose(mode: IoMode) -> anyhow::Result<IoPath> {
    match mode {
        IoMode::Blocking => Ok(IoPath::Blocking { reason: "forced by --io blocking".into() }),
        IoMode::Uring => match uring_unavailable() {
            None => Ok(IoPath::Uring),
            Some(why) => {
                anyhow::bail!("--io uring was asked for but io_uring is unavailable: {why}")
            }
        },
        IoMode::Auto => Ok(match uring_unavailable() {
            None => IoPath::Uring,
            Some(reason) => IoPath::Blocking { reason },
        }),
    }
}

/// Builds the process's one multi-thread runtime.
pub fn build(workers: usize, io: &IoPath) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_time().thread_name("edgebox-worker");
    if workers > 0 {
        b.worker_threads(workers);
    }
    #[cfg(tokio_unstable)]
    if io.is_uring() {
        b.enable_io_uring();
    }
    b.enable_io();
    b.build()
}

/// Worker threads a config value of 0 stands for.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_blocking_never_probes() {
        assert!(!choose(IoMode::Blocking).unwrap().is_uring());
    }

    #[test]
    fn auto_agrees_with_the_probe() {
        let path = choose(IoMode::Auto).unwrap();
        assert_eq!(path.is_uring(), uring_unavailable().is_none(), "{path}");
    }

    #[test]
    fn file_io_works_on_the_chosen_path() {
        for mode in [IoMode::Auto, IoMode::Blocking] {
            let path = choose(mode).unwrap();
            let rt = build(2, &path).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("x");
            let files = crate::core::fileio::FileIo::new(&path);
            rt.block_on(async {
                files.write_durably(&f, b"hello").await.unwrap();
                assert_eq!(files.read(&f).await.unwrap(), b"hello");
                files.write_durably(&f, b"replaced").await.unwrap();
                assert_eq!(files.read(&f).await.unwrap(), b"replaced");
                assert!(files.read(&dir.path().join("missing")).await.unwrap_err().to_string().contains("missing"));
            });
        }
    }
}
