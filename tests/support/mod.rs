//! Shared helpers for the end-to-end tests: the fake upstream app the sidecar proxies to.

pub mod app;
