//! Loopback ports for a listener another process binds later: a bench's
//! nginx and upstream, a test's pebble or MariaDB, a test appliance.
//!
//! Asking the kernel for port 0 and passing the number on leaves a window
//! before the other process binds it, and a port from the ephemeral range
//! can go to any outgoing connection in that window (a load test next door
//! opens thousands). So ports come from below that range, which outgoing
//! connections never take, checked free, and never twice in one process.

use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out.
const LOWEST: u32 = 10_000;

/// Ports handed out by this process so far.
static HANDED_OUT: AtomicU32 = AtomicU32::new(0);

/// A port free on 127.0.0.1 now, not handed out before by this process.
pub fn free_loopback() -> std::io::Result<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral_low.saturating_sub(LOWEST);
    if span < 1_000 {
        // An unusual range leaves no room below it: the kernel's choice.
        return Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    }
    // Processes start at different places, so two running side by side (or
    // one after another that left a listener behind) rarely meet.
    let start = (u64::from(std::process::id()) * 7_919 % u64::from(span)) as u32;
    loop {
        let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        if n >= span {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                format!("every port in {LOWEST}..{ephemeral_low} was handed out"),
            ));
        }
        let port = (LOWEST + (start + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_below_the_ephemeral_range() {
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap_or(32_768);
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let port = free_loopback().unwrap();
            assert!(port < low || low < 11_000, "{port} is in the ephemeral range from {low}");
            assert!(seen.insert(port), "{port} handed out twice");
            assert_ne!(port, held.local_addr().unwrap().port());
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("a port handed out is free");
        }
    }
}
