//! Integration tests: they drive the real `edgebox` executable (also through
//! argv[0] symlinks), real sockets, a real store and a real OTLP receiver.

mod appliance;
#[cfg(all(feature = "certguard", feature = "tsdb"))]
mod certguard;
mod cli;
mod compliance;
mod embedded;
#[cfg(all(feature = "gateway", feature = "tsdb"))]
mod gateway;
#[cfg(all(feature = "orchestrator", feature = "agent"))]
mod orchestrator;
mod otlp;
mod store;
#[cfg(all(feature = "streamer", feature = "tsdb"))]
mod streamer;
mod support;
#[cfg(feature = "tsdb")]
mod tls;
#[cfg(feature = "tsdb")]
mod tsdb;
