//! edgebox as a library: the shared core and every compiled-in role.
//!
//! The `edgebox` binary is a thin `main` over this crate; Rust programs can
//! embed a role (or just the store and telemetry plane) the same way.
#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod core;
pub mod roles;
