//! What every role shares: dispatch, runtime, store, config, telemetry and the
//! role contract. A role never reaches past this module into another role.

pub mod admin;
pub mod auth;
pub mod backoff;
pub mod config;
pub mod control;
pub mod dispatch;
pub mod exit;
pub mod fileio;
pub mod h1codec;
pub mod httpclient;
pub mod httpserve;
pub mod lifecycle;
pub mod managed;
pub mod ports;
pub mod progress;
pub mod role;
pub mod runtime;
pub mod status;
pub mod store;
pub mod sysinfo;
pub mod telemetry;
pub mod tls;
