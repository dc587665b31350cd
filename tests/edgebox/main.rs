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
// Desired state deploys a tsdb and a certguard to the agent's device.
#[cfg(all(feature = "orchestrator", feature = "agent", feature = "tsdb", feature = "certguard"))]
mod orchestrator;
#[cfg(all(feature = "orchestrator", feature = "agent", feature = "tsdb", feature = "certguard"))]
mod orchestrator_raft;
mod otlp;
mod store;
#[cfg(all(feature = "streamer", feature = "tsdb"))]
mod streamer;
mod support;
#[cfg(feature = "tsdb")]
mod tls;
#[cfg(feature = "tsdb")]
mod tsdb;
