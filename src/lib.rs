//! stripe-sidecar: a reverse proxy that sits in front of a web app, answers
//! a few Stripe billing routes itself and proxies everything else.
//!
//! A request enters in [`server`], is matched once against the route table
//! ([`routes`]), and goes either to a local handler ([`billing`]) or to the
//! app ([`proxy`]); every failure is one [`error::Error`] turned into HTTP
//! in one place. [`identity`] says who is calling. [`config`] builds the validated configuration everything
//! starts from, [`admin`] serves health and metrics, [`logging`] writes the
//! JSON lines.
#![forbid(unsafe_code)]

pub mod admin;
pub mod billing;
pub mod config;
pub mod customers;
pub mod error;
pub mod http_client;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod stripe;
pub mod webhook;

pub use config::Config;
pub use server::{Server, Signal};

/// Any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the sidecar sends and of every request it
/// forwards: a streaming body of bytes.
pub type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

/// Boxes any body into [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    body.map_err(Into::into).boxed_unsync()
}
