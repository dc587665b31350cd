//! Stamps the binary with its git commit and target triple for
//! `edgebox --version` and `edgebox info`.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    // --no-optional-locks: a plain `git status` refreshes .git/index, which
    // is watched below, so every build would run this script (and rebuild
    // the crate) again.
    let dirty = Command::new("git")
        .args(["--no-optional-locks", "status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    let suffix = if dirty && commit != "unknown" { "-dirty" } else { "" };
    println!("cargo:rustc-env=EDGEBOX_GIT_COMMIT={commit}{suffix}");
    println!("cargo:rustc-env=EDGEBOX_TARGET={}", std::env::var("TARGET").unwrap_or_default());
    // HEAD names a branch; a commit moves the branch, not HEAD.
    let branch = std::fs::read_to_string(".git/HEAD")
        .ok()
        .and_then(|h| h.strip_prefix("ref: ").map(|r| format!(".git/{}", r.trim())));
    for path in [Some(".git/HEAD".to_owned()), branch, Some(".git/packed-refs".into()), Some(".git/index".into())] {
        // Cargo counts a watched file that does not exist as changed at
        // every build (a repository without packed refs rebuilt the crate
        // each time).
        if let Some(path) = path.filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-env-changed=TARGET");
}
