//! The end-to-end tests: one test binary (so it links once) listing its
//! modules, each a group of scenarios against the real server in front of
//! the fake app in `support/`.

mod support;

mod admin;
mod billing;
mod binary;
mod demo;
mod deploy;
mod fake_stripe;
mod hardening;
mod identity;
mod properties;
mod proxy;
mod quickstart;
mod reference;
mod shared_state;
mod subscriptions;
mod webhook;
