//! `Authorization` and `@supabase/ssr` cookie parsing: the input is header
//! lines (`Name: value`, one a line), as a request would carry them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lines = String::from_utf8_lossy(data);
    let _ = stripe_sidecar::fuzz::credential_from(&lines);
});
