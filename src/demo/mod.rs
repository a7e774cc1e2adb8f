//! `stripe-sidecar demo`: the whole product in one process on 127.0.0.1,
//! with no account and no network. The real sidecar ([`Server`]) runs in
//! front of a stand-in app ([`app`]: pricing, a demo user to sign in as, a
//! page behind a subscription gate, an account page) and talks to a
//! stand-in Stripe ([`stripe`]: the API calls the sidecar makes, a hosted
//! checkout and portal page, signed webhooks back to the sidecar).
//!
//! The sidecar is configured in-process from a TOML string
//! ([`config_toml`]) with fresh random secrets for each run; nothing is
//! read from a file or the environment (no `STRIPE_SECRET_KEY`). Only the
//! app and Stripe are stand-ins: checkout, portal, webhooks, customer
//! lookup, subscription state, identity headers and the gate are the
//! product's own code.

pub mod app;
pub mod objects;
mod page;
pub mod stripe;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::server::listen;
use crate::{Config, Server, Signal, Stopped};

/// The price the demo sells, under the alias `pro`.
pub const PRICE: &str = "price_demo_pro";
/// The gated path pattern and where browsers are sent when refused.
pub const GATE: &str = "/pro/**";
pub const GATE_REDIRECT: &str = "/pricing";

/// What the demo's sidecar configuration is built from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The sidecar's port on 127.0.0.1.
    pub port: u16,
    /// The stand-in app.
    pub app: SocketAddr,
    /// The stand-in Stripe API.
    pub stripe: SocketAddr,
    /// Signs the demo user's session tokens (`auth.hs256_secret`).
    pub hs256_secret: String,
    /// Signs the stand-in's webhooks (`stripe.webhook_secrets`).
    pub webhook_secret: String,
}

impl Settings {
    /// Settings with fresh random secrets.
    pub fn new(port: u16, app: SocketAddr, stripe: SocketAddr) -> Settings {
        Settings {
            port,
            app,
            stripe,
            hs256_secret: format!("{}{}", random(), random()),
            webhook_secret: format!("whsec_{}", random()),
        }
    }
}

/// The sidecar's configuration for the demo, as a `config.toml` would
/// hold it (`stripe-sidecar --check` accepts it).
pub fn config_toml(s: &Settings) -> String {
    let headers: String = app::IDENTITY_HEADERS
        .iter()
        .map(|(key, name)| format!("{key} = \"{name}\"\n"))
        .collect();
    format!(
        r#"# stripe-sidecar demo: generated for one run.
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"
log_format = "text"
shutdown_drain_seconds = 0
shutdown_grace_seconds = 2

[upstream]
url = "http://{app}"

[auth]
hs256_secret = "{hs256_secret}"

[stripe]
secret_key = "sk_test_demo"
api_base = "http://{stripe}"
webhook_secrets = ["{webhook_secret}"]

[checkout]
allowed_redirect_origins = ["http://127.0.0.1:{port}", "http://localhost:{port}"]
require_sign_in = true
prices = {{ pro = "{PRICE}" }}

[identity_headers]
{headers}
[[gates]]
path = "{GATE}"
require = "subscription"
redirect = "{GATE_REDIRECT}"

[[routes]]
path = "/api/stripe/create-checkout"
action = "checkout"

[[routes]]
path = "/api/stripe/create-portal"
action = "portal"

# Not forwarded: the app needs no webhook handler.
[[routes]]
path = "/api/stripe/webhook"
action = "webhook"

[[routes]]
path = "/api/stripe/subscription"
action = "subscription"
"#,
        port = s.port,
        app = s.app,
        stripe = s.stripe,
        hs256_secret = s.hs256_secret,
        webhook_secret = s.webhook_secret,
    )
}

/// The three servers, bound and ready to run.
pub struct Demo {
    server: Server,
    settings: Settings,
    tasks: Tasks,
}

/// The stand-ins' tasks, stopped (with their connections) when dropped.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Demo {
    /// Binds the stand-in Stripe and app on free ports and the sidecar on
    /// `port` (0: a free one), all on 127.0.0.1, and starts the stand-ins.
    pub async fn start(port: u16) -> std::io::Result<Demo> {
        let localhost = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        // Bound first: the sidecar's own origin goes into its configuration.
        let listener = listen(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), "--port").await?;
        let stripe_listener = TcpListener::bind(localhost).await?;
        let app_listener = TcpListener::bind(localhost).await?;
        let settings = Settings::new(
            listener.local_addr()?.port(),
            app_listener.local_addr()?,
            stripe_listener.local_addr()?,
        );
        let config = Config::parse(&config_toml(&settings), &|_| None)
            .map_err(|problems| std::io::Error::other(problems.to_string()))?;
        let server = Server::with_listener(config, listener).await?;

        let stand_in = Arc::new(stripe::StandIn::new(
            format!("http://{}", settings.stripe),
            format!("http://{}/api/stripe/webhook", server.local_addr()),
            settings.webhook_secret.clone(),
            HashMap::from([(PRICE.to_string(), "Pro".to_string())]),
        ));
        let demo_app = Arc::new(app::DemoApp::new(settings.hs256_secret.clone()));
        let tasks = Tasks(vec![
            tokio::spawn(page::serve(stripe_listener, move |request| {
                stand_in.clone().handle(request)
            })),
            tokio::spawn(page::serve(app_listener, move |request| {
                demo_app.clone().handle(request)
            })),
        ]);
        Ok(Demo {
            server,
            settings,
            tasks,
        })
    }

    /// The sidecar's address: where the browser goes.
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The URL to open, `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr())
    }

    /// The stand-in Stripe's address (its hosted pages live there too).
    pub fn stripe_addr(&self) -> SocketAddr {
        self.settings.stripe
    }

    /// The stand-in app's address (reached only through the sidecar).
    pub fn app_addr(&self) -> SocketAddr {
        self.settings.app
    }

    /// What the sidecar was configured from.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Serves until the first of `signals` (as [`Server::run`]), then stops
    /// the stand-ins too.
    pub async fn run(self, signals: mpsc::UnboundedReceiver<Signal>) -> Stopped {
        let Demo { server, tasks, .. } = self;
        let stopped = server.run(signals).await;
        drop(tasks);
        stopped
    }
}

/// 122 random bits as 32 hex digits.
fn random() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_valid_without_any_environment() {
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        let settings = Settings::new(8080, any, any);
        let config = Config::parse(&config_toml(&settings), &|_| None);
        assert!(config.is_ok(), "{}", config.err().unwrap());
    }

    #[test]
    fn each_run_has_its_own_secrets() {
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        let (a, b) = (Settings::new(1, any, any), Settings::new(1, any, any));
        assert_ne!(a.hs256_secret, b.hs256_secret);
        assert_ne!(a.webhook_secret, b.webhook_secret);
        assert!(a.webhook_secret.starts_with("whsec_"));
    }
}
