//! Configuration parsing and validation: the input is a `config.toml`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = stripe_sidecar::fuzz::config(&text);
});
