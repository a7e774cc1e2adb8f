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
