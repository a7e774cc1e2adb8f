//! `Stripe-Signature` parsing and HMAC verification. The input's first
//! line is the header value, the rest (after the first `\n`) the body.
//! The seeds are signed with the entry point's secret (`whsec_fuzz`) at
//! its clock (t=1700000000), so the verifying path is reached too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let header = String::from_utf8_lossy(header);
    let _ = stripe_sidecar::fuzz::stripe_signature(&header, body);
});
