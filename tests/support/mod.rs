//! Shared helpers for the end-to-end tests: the fake upstream app, the
//! fake Stripe API, the sidecar launcher, signed webhook delivery, and a raw
//! HTTP/1.1 client for requests no well-behaved client library would send.

pub mod app;
pub mod browser;
pub mod events;
pub mod raw;
pub mod redis;
pub mod session;
pub mod sidecar;
pub mod stripe;

/// Every string under a TOML `value`, in order.
pub fn toml_strings(value: &toml::Value, out: &mut Vec<String>) {
    match value {
        toml::Value::String(s) => out.push(s.clone()),
        toml::Value::Array(items) => items.iter().for_each(|i| toml_strings(i, out)),
        toml::Value::Table(table) => table.values().for_each(|v| toml_strings(v, out)),
        _ => {}
    }
}
