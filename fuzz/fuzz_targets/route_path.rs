//! Route normalization, strict and loose: the input is a request path.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    let _ = stripe_sidecar::fuzz::route_path(&path);
});
