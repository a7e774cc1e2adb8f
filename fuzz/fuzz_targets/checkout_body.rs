//! Checkout body validation: the input is the raw request body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = stripe_sidecar::fuzz::checkout_body(data);
});
