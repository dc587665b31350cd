//! Arbitrary bytes as a client's X.509-SVID leaf and as a SPIFFE ID: a
//! refusal with its reason, never a panic.
#![no_main]

use edgebox::core::tls::spiffe::SpiffeId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = SpiffeId::of_svid(data);
    let _ = SpiffeId::parse(&String::from_utf8_lossy(data));
});
