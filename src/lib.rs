//! stripe-sidecar: a reverse proxy that sits in front of a web app, answers
//! a few Stripe billing routes itself and proxies everything else.
//!
//! A request enters in [`server`] (sockets, shutdown, the access log) and
//! goes through [`app::handle`], the one pipeline: it is matched once
//! against the route table ([`routes`]) and goes either to a local handler
//! in [`billing`] (after [`identity`] says who is calling; [`customers`]
//! and [`stripe`] behind it) or to the app ([`proxy`]); every failure is one
//! [`error::Error`] turned into HTTP in one place. A proxied request may
//! first meet a [`gates`] rule and carries identity headers; both read the
//! caller's [`subscriptions`] state, synced from Stripe. [`config`] builds the
//! validated configuration everything starts from, [`admin`] serves health
//! and [`metrics`], [`logging`] writes the JSON lines, [`body`] holds the
//! body type and its helpers, [`http_client`] the outbound HTTPS client.
//! [`demo`] runs the whole product in one process for `stripe-sidecar demo`,
//! with a stand-in app and a stand-in Stripe.
#![forbid(unsafe_code)]
// async-stripe's nested types overflow the default when checking a
// request future is `Send`.
#![recursion_limit = "256"]

pub mod account;
pub mod admin;
pub mod app;
pub mod billing;
pub mod body;
pub mod config;
pub mod customers;
pub mod demo;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod gates;
pub mod http_client;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod rate_limit;
pub mod routes;
pub mod server;
pub mod shared;
pub mod stripe;
pub mod subscriptions;

pub use config::Config;
pub use server::{Server, Signal, Stopped};

/// Any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
