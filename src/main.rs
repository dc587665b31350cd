//! edgebox: one static binary, many roles.
//!
//! `main` only picks the role (busybox-style from argv[0], or from the first
//! argument), runs the command line and maps the outcome to an exit code.
//! Everything else lives in the library: `core` (what all roles share) and
//! `roles` (one folder per role).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use edgebox::core::{dispatch, exit};

/// mimalloc rather than the libc allocator: musl's (the static builds') is
/// slow under threads, and glibc's showed as a tenth of the gateway's CPU
/// (arena locks and consolidation) in `edgebox gateway bench`. Built
/// without transparent huge pages (`no_thp`): where the kernel grants them
/// on request, 2 MiB pages behind its arenas put the tsdb with 100 000
/// series at 89–118 MiB instead of 90–98 (for about a fifth more peak
/// ingest); an edge device wants the bounded memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = dispatch::resolve_argv(std::env::args_os().collect());
    match edgebox::cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            exit::report(&err);
            ExitCode::from(exit::code_for(&err))
        }
    }
}
