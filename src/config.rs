//! Configuration: the `config.toml` schema, `${VAR}` interpolation, and the
//! validated [`Config`] the rest of the sidecar runs on.
//!
//! Loading has two stages, as in ripgrep's low/high args: the `Raw*` types
//! mirror the file (every key, its default next to it), and [`Config`] is
//! built from them with parsed addresses, URLs, durations, origins and
//! compiled routes. Every problem is collected before returning, each naming
//! its key (`checkout.allowed_redirect_origins[1]: not an origin: ...`), so
//! `--check` and a refused start print them all at once.
//!
//! Each top-level section is its defaults (the `Default` impls, the one
//! place they are written, `${VAR}` references included) with the keys the
//! file writes laid over them, every string then expanded once; so a key or
//! a section left out means its documented default, never "off".
//!
//! Unknown keys are found with `serde_ignored` rather than
//! `deny_unknown_fields`, because serde stops at the first unknown field and
//! the contract asks for every problem. Each top-level section is decoded on
//! its own (with `serde_path_to_error` for the key of a type error), so a
//! mistake in `[server]` does not hide one in `[stripe]`. A problem line never
//! shows a secret or a value read from the environment: type errors name the
//! kind of value found, not the value. This module does not open sockets or
//! read secrets beyond the environment variables the file and the defaults
//! name.

// A bad file is a list of problems, never a panic.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::account::SUBSCRIPTION_STATUSES;
use crate::gates::{Gate, Pattern, Require};
use crate::routes::{one_of, Action, Mode, Route};

/// One thing wrong with the configuration, named by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found in one configuration: those found reading it,
/// section by section, then those found validating it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.0 {
            writeln!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

// ---------------------------------------------------------------------------
// Raw types: the file as written (after interpolation), with defaults.
// ---------------------------------------------------------------------------

/// The whole file. Sections are decoded one by one (see [`RawConfig::parse`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RawConfig {
    pub server: RawServer,
    pub upstream: RawUpstream,
    pub auth: RawAuth,
    pub stripe: RawStripe,
    pub checkout: RawCheckout,
    pub customers: RawCustomers,
    pub subscriptions: RawSubscriptions,
    pub identity_headers: RawIdentityHeaders,
    pub gates: Vec<RawGate>,
    pub state: RawState,
    /// Absent: the four default routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<RawRoute>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawServer {
    pub listen: String,
    pub admin_listen: String,
    pub max_body_bytes: u64,
    pub shutdown_drain_seconds: u64,
    pub shutdown_grace_seconds: u64,
    pub log_format: String,
    pub access_log: bool,
    pub worker_threads: u64,
    pub max_connections: u64,
    pub body_timeout_ms: u64,
    /// CIDRs (a bare IP is one address) whose X-Forwarded-* are kept.
    pub trusted_proxies: Vec<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "0.0.0.0:8080".into(),
            admin_listen: "0.0.0.0:9901".into(),
            max_body_bytes: 65536,
            shutdown_drain_seconds: 5,
            shutdown_grace_seconds: 25,
            log_format: "json".into(),
            access_log: true,
            worker_threads: 0,
            max_connections: 10_000,
            body_timeout_ms: 10_000,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawUpstream {
    pub url: String,
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            url: "http://127.0.0.1:3000".into(),
            connect_timeout_ms: 2000,
            read_timeout_ms: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawAuth {
    pub header: String,
    pub cookies: Vec<String>,
    pub hs256_secret: String,
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
    pub required_claims: BTreeMap<String, toml::Value>,
    pub leeway_seconds: u64,
    pub jwks_refresh_seconds: u64,
    pub jwks_min_refetch_seconds: u64,
    pub user_id_claim: String,
    pub email_claim: String,
    pub api_keys: Vec<RawApiKey>,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            header: "authorization".into(),
            cookies: vec!["sb-*-auth-token".into(), "sb-access-token".into()],
            hs256_secret: "${SUPABASE_JWT_SECRET:-}".into(),
            jwks_url: String::new(),
            issuer: String::new(),
            audience: "authenticated".into(),
            required_claims: BTreeMap::from([(
                "role".to_string(),
                toml::Value::String("authenticated".into()),
            )]),
            leeway_seconds: 30,
            jwks_refresh_seconds: 300,
            jwks_min_refetch_seconds: 5,
            user_id_claim: "sub".into(),
            email_claim: "email".into(),
            api_keys: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RawApiKey {
    pub name: String,
    pub sha256: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawStripe {
    pub secret_key: String,
    pub api_base: String,
    pub webhook_secrets: Vec<String>,
    pub webhook_tolerance_seconds: u64,
    pub timeout_ms: u64,
    pub max_retries: u64,
    pub max_concurrency: u64,
}

impl Default for RawStripe {
    fn default() -> Self {
        RawStripe {
            secret_key: "${STRIPE_SECRET_KEY:-}".into(),
            api_base: "${STRIPE_API_BASE:-https://api.stripe.com}".into(),
            webhook_secrets: vec!["${STRIPE_WEBHOOK_SECRET:-}".into()],
            webhook_tolerance_seconds: 300,
            timeout_ms: 10000,
            max_retries: 2,
            max_concurrency: 64,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawCheckout {
    pub allowed_redirect_origins: Vec<String>,
    pub require_sign_in: bool,
    pub allow_promotion_codes: bool,
    pub prices: BTreeMap<String, String>,
    pub allow_any_price: bool,
    pub max_trial_days: u64,
    pub rate_limit_per_minute: u64,
}

/// A Stripe test key, `APP_ORIGIN` and `STRIPE_PRICE_ID` in the
/// environment are enough to start; unset, these are empty and left out.
impl Default for RawCheckout {
    fn default() -> Self {
        RawCheckout {
            allowed_redirect_origins: vec!["${APP_ORIGIN:-}".into()],
            require_sign_in: false,
            allow_promotion_codes: false,
            prices: BTreeMap::from([("default".into(), "${STRIPE_PRICE_ID:-}".into())]),
            allow_any_price: false,
            max_trial_days: 0,
            rate_limit_per_minute: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawCustomers {
    pub source: String,
    pub metadata_key: String,
    pub lookup_url: String,
    pub lookup_headers: BTreeMap<String, String>,
    pub customer_id_pointer: String,
    pub cache_ttl_seconds: u64,
    pub negative_ttl_seconds: u64,
    pub cache_capacity: u64,
}

impl Default for RawCustomers {
    fn default() -> Self {
        RawCustomers {
            source: "stripe".into(),
            metadata_key: "user_id".into(),
            lookup_url: String::new(),
            lookup_headers: BTreeMap::new(),
            customer_id_pointer: "/customerId".into(),
            cache_ttl_seconds: 300,
            negative_ttl_seconds: 10,
            cache_capacity: 100_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawSubscriptions {
    pub subscribed_statuses: Vec<String>,
    pub cache_ttl_seconds: u64,
    pub entitlements: bool,
}

impl Default for RawSubscriptions {
    fn default() -> Self {
        RawSubscriptions {
            subscribed_statuses: vec!["active".into(), "trialing".into()],
            cache_ttl_seconds: 300,
            entitlements: false,
        }
    }
}

/// Header names set on proxied requests; empty = not sent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RawIdentityHeaders {
    pub user_id: String,
    pub email: String,
    pub customer: String,
    pub subscription_status: String,
    pub plan: String,
    pub features: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawGate {
    pub path: String,
    pub require: String,
    pub plans: Vec<String>,
    pub features: Vec<String>,
    pub redirect: String,
}

impl Default for RawGate {
    fn default() -> Self {
        RawGate {
            path: String::new(),
            require: Require::Subscription.as_str().into(),
            plans: Vec::new(),
            features: Vec::new(),
            redirect: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawState {
    pub redis_url: String,
    pub key_prefix: String,
}

impl Default for RawState {
    fn default() -> Self {
        RawState {
            redis_url: String::new(),
            key_prefix: "stripe-sidecar:".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RawRoute {
    pub path: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_to: Option<String>,
}

impl RawRoute {
    fn new(path: &str, action: Action, forward_to: Option<&str>) -> RawRoute {
        RawRoute {
            path: path.into(),
            action: action.as_str().into(),
            forward_to: forward_to.map(Into::into),
            ..RawRoute::default()
        }
    }
}

/// The routes used when the file has no `[[routes]]`.
pub fn default_routes() -> Vec<RawRoute> {
    vec![
        RawRoute::new("/api/stripe/create-checkout", Action::Checkout, None),
        RawRoute::new("/api/stripe/create-portal", Action::Portal, None),
        RawRoute::new(
            "/api/stripe/webhook",
            Action::Webhook,
            Some("/api/stripe/webhook"),
        ),
        RawRoute::new("/api/stripe/subscription", Action::Subscription, None),
    ]
}

impl RawConfig {
    /// Parses TOML text, interpolating `${VAR}` from `env`. A key or a
    /// whole section left out takes its default (the `Default` impls above),
    /// interpolated like a written value, so a file with no `[stripe]` still
    /// reads `STRIPE_SECRET_KEY`. Unset variables, unknown keys and type
    /// errors are collected in `problems` (a key with one keeps its default,
    /// so the rest can still be checked); only a TOML syntax error stops here.
    pub fn parse(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<Problem>,
    ) -> Result<RawConfig, Problems> {
        Reader::read(text, env, problems).map(|(raw, _)| raw)
    }

    /// This configuration as TOML, secrets replaced by `<redacted>` (an
    /// empty secret stays empty, so "unset" is still visible), and so are
    /// any userinfo and query in `auth.jwks_url` and `customers.lookup_url`.
    pub fn redacted_toml(&self) -> String {
        fn hide(secret: &mut String) {
            if !secret.is_empty() {
                *secret = REDACTED.into();
            }
        }
        let mut raw = self.clone();
        hide(&mut raw.auth.hs256_secret);
        hide(&mut raw.stripe.secret_key);
        raw.stripe.webhook_secrets.iter_mut().for_each(hide);
        raw.customers.lookup_headers.values_mut().for_each(hide);
        raw.auth.jwks_url = redact_url(&raw.auth.jwks_url);
        raw.customers.lookup_url = redact_url(&raw.customers.lookup_url);
        raw.state.redis_url = redact_url(&raw.state.redis_url);
        raw.routes.get_or_insert_with(default_routes);
        // Cannot fail: every value came from TOML or is a small default.
        toml::to_string(&raw).unwrap_or_else(|e| format!("# not printable: {e}\n"))
    }
}

/// `url` with its userinfo and query, if any, replaced by `<redacted>`.
/// Done on the text, as the url crate splits it (the authority ends at the
/// first `/`, `?`, `#` or `\`, the userinfo at its last `@`), so that a
/// `{userId}` in a lookup_url is printed as written, not percent-encoded.
fn redact_url(url: &str) -> String {
    let (url, fragment) = url.split_at(url.find('#').unwrap_or(url.len()));
    let (url, query) = match url.split_once('?') {
        Some((url, query)) if !query.is_empty() => (url, format!("?{REDACTED}")),
        Some((url, _)) => (url, "?".to_string()),
        None => (url, String::new()),
    };
    let url = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find(['/', '\\']).unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{REDACTED}@{host}{path}"),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    };
    format!("{url}{query}{fragment}")
}

/// What a hidden value is shown as.
const REDACTED: &str = "<redacted>";

/// True for the keys whose values are secrets.
fn is_secret(key: &str) -> bool {
    key == "auth.hs256_secret"
        || key == "stripe.secret_key"
        || key == "stripe.webhook_secrets"
        || key.starts_with("stripe.webhook_secrets[")
        || key.starts_with("customers.lookup_headers.")
}

/// A TOML syntax error as one line: `config: line 3, column 8: expected ...`
/// (no source snippet, which could show a secret written on that line).
fn syntax_problem(text: &str, error: &toml::de::Error) -> Problem {
    let message = error
        .message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let Some(before) = error.span().and_then(|span| text.get(..span.start)) else {
        return problem("config", message);
    };
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    problem("config", format!("line {line}, column {column}: {message}"))
}

fn problem(key: &str, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

/// Reads a file into a [`RawConfig`], noting which keys took a value from
/// the environment (their problems must not echo it).
struct Reader<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: &'a mut Vec<Problem>,
    from_env: BTreeSet<String>,
}

impl Reader<'_> {
    fn read(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<Problem>,
    ) -> Result<(RawConfig, BTreeSet<String>), Problems> {
        let mut file: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| Problems(vec![syntax_problem(text, &e)]))?;
        let mut reader = Reader {
            env,
            problems,
            from_env: BTreeSet::new(),
        };
        let raw = RawConfig {
            server: reader.section("server", file.remove("server")),
            upstream: reader.section("upstream", file.remove("upstream")),
            auth: reader.section("auth", file.remove("auth")),
            stripe: reader.section("stripe", file.remove("stripe")),
            checkout: reader.section("checkout", file.remove("checkout")),
            customers: reader.section("customers", file.remove("customers")),
            subscriptions: reader.section("subscriptions", file.remove("subscriptions")),
            identity_headers: reader.section("identity_headers", file.remove("identity_headers")),
            gates: reader.section("gates", file.remove("gates")),
            state: reader.section("state", file.remove("state")),
            routes: file
                .remove("routes")
                .map(|routes| reader.section("routes", Some(routes))),
        };
        for key in file.keys() {
            reader.problems.push(problem(key, "unknown section"));
        }
        Ok((raw, reader.from_env))
    }

    /// Decodes one top-level section: its defaults, interpolated, under the
    /// keys the file writes, interpolated (each string expanded once, so a
    /// `${X}` inside a variable's value stays as it is). Unknown keys and
    /// type errors become problems; a key with a type error is put back to
    /// its default (dropped, deeper down) and decoding retried, so one bad
    /// value does not hide the others.
    fn section<T: Serialize + DeserializeOwned + Default>(
        &mut self,
        name: &str,
        written: Option<toml::Value>,
    ) -> T {
        let mut defaults = match toml::Value::try_from(T::default()) {
            Ok(defaults) => defaults,
            Err(error) => {
                // Not reached: the defaults are small values TOML can hold.
                self.problems.push(problem(
                    name,
                    format!("internal error: the defaults do not serialize: {error}"),
                ));
                return T::default();
            }
        };
        self.interpolate(&mut defaults, name);
        let mut value = match written {
            None => defaults.clone(),
            Some(mut written) => {
                let expanded = self.interpolate(&mut written, name);
                match (&defaults, written) {
                    (toml::Value::Table(defaults), toml::Value::Table(written)) => {
                        let mut merged = defaults.clone();
                        merged.extend(written);
                        toml::Value::Table(merged)
                    }
                    (_, written) if expanded => written,
                    _ => defaults.clone(),
                }
            }
        };
        let mut reset = BTreeSet::new();
        let mut removed = Removed::new();
        for _ in 0..MAX_SECTION_PROBLEMS {
            let mut unknown = Vec::new();
            let decoded = {
                let mut note = |path: serde_ignored::Path<'_>| unknown.push(key_of(&path));
                let de = serde_ignored::Deserializer::new(value.clone(), &mut note);
                serde_path_to_error::deserialize::<_, T>(de)
            };
            let error = match decoded {
                Ok(decoded) => {
                    for key in unknown {
                        self.problems
                            .push(problem(&join(name, &key), "unknown key"));
                    }
                    return decoded;
                }
                Err(error) => error,
            };
            let found = lookup(&value, error.path());
            let message = decode_message(error.inner().message(), found);
            let key = written_path(error.path(), &removed);
            self.problems.push(problem(&join(name, &key), message));
            if !reset_or_remove(&mut value, &defaults, error.path(), &mut reset) {
                return T::default();
            }
            if let Some(serde_path_to_error::Segment::Seq { .. }) = error.path().iter().next_back()
            {
                note_removed(&mut removed, &key);
            }
        }
        self.problems.push(problem(
            name,
            format!("more than {MAX_SECTION_PROBLEMS} problems; fix these first"),
        ));
        T::default()
    }

    /// Replaces `${VAR}` and `${VAR:-default}` in every string under `value`.
    /// A table key whose value cannot be expanded is dropped (its default
    /// applies), so the one problem is not followed by others it caused.
    fn interpolate(&mut self, value: &mut toml::Value, key: &str) -> bool {
        match value {
            toml::Value::String(s) => match expand_noting_env(s, self.env) {
                Ok((expanded, used_env)) => {
                    if used_env {
                        self.from_env.insert(key.to_string());
                    }
                    *s = expanded;
                }
                Err(message) => {
                    self.problems.push(problem(key, message));
                    s.clear();
                    return false;
                }
            },
            toml::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.interpolate(item, &format!("{key}[{i}]"));
                }
            }
            toml::Value::Table(table) => {
                table.retain(|k, item| self.interpolate(item, &format!("{key}.{k}")));
            }
            _ => {}
        }
        true
    }
}

/// Type errors reported per section before giving up on it: each costs a
/// decode of the whole section, so a file of 10,000 mistyped array items
/// stays linear, and the first ones are what to fix anyway.
const MAX_SECTION_PROBLEMS: usize = 20;

/// The indices, as the file wrote them, of array items removed after a
/// type error, by the array's key (`trusted_proxies`, `[2].methods`).
type Removed = BTreeMap<String, Vec<usize>>;

/// `path` as `a.b[0].c`, each array index as the file wrote it: the
/// decoder counts only the items still there after earlier removals.
fn written_path(path: &serde_path_to_error::Path, removed: &Removed) -> String {
    use serde_path_to_error::Segment;
    let mut key = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => {
                let gone = removed.get(&key).map(Vec::as_slice).unwrap_or_default();
                // The `index`-th item still there: step past each removed
                // one at or before it (`gone` is sorted).
                let index = gone
                    .iter()
                    .fold(*index, |at, &g| if g <= at { at + 1 } else { at });
                key.push_str(&format!("[{index}]"));
            }
            other => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(&other.to_string());
            }
        }
    }
    key
}

/// Records that the item `key` (ending `[i]`, as [`written_path`] wrote
/// it) was removed.
fn note_removed(removed: &mut Removed, key: &str) {
    let Some((array, index)) = key.rsplit_once('[') else {
        return;
    };
    if let Ok(index) = index.trim_end_matches(']').parse::<usize>() {
        let gone = removed.entry(array.to_string()).or_default();
        let at = gone.partition_point(|&g| g < index);
        gone.insert(at, index);
    }
}

/// The value at `path`, if there is one.
fn lookup<'v>(value: &'v toml::Value, path: &serde_path_to_error::Path) -> Option<&'v toml::Value> {
    use serde_path_to_error::Segment;
    path.iter()
        .try_fold(value, |at, segment| match (segment, at) {
            (Segment::Map { key }, toml::Value::Table(table)) => table.get(key.as_str()),
            (Segment::Seq { index }, toml::Value::Array(items)) => items.get(*index),
            _ => None,
        })
}

/// After a decoding error at `path`: puts a section's key back to its
/// default (once), or removes a deeper value, or puts a section that is
/// not a table back to its defaults. False when nothing changed.
fn reset_or_remove(
    value: &mut toml::Value,
    defaults: &toml::Value,
    path: &serde_path_to_error::Path,
    reset: &mut BTreeSet<String>,
) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        if value == defaults {
            return false;
        }
        *value = defaults.clone();
        return true;
    };
    if let ([], Segment::Map { key }, toml::Value::Table(table), toml::Value::Table(defaults)) =
        (parents, last, &mut *value, defaults)
    {
        if let Some(default) = defaults.get(key.as_str()) {
            if reset.insert(key.clone()) {
                table.insert(key.clone(), default.clone());
                return true;
            }
        }
    }
    let mut at = value;
    for segment in parents {
        let next = match (segment, at) {
            (Segment::Map { key }, toml::Value::Table(table)) => table.get_mut(key.as_str()),
            (Segment::Seq { index }, toml::Value::Array(items)) => items.get_mut(*index),
            _ => None,
        };
        match next {
            Some(next) => at = next,
            None => return false,
        }
    }
    match (last, at) {
        (Segment::Map { key }, toml::Value::Table(table)) => table.remove(key.as_str()).is_some(),
        (Segment::Seq { index }, toml::Value::Array(items)) if *index < items.len() => {
            items.remove(*index);
            true
        }
        _ => false,
    }
}

/// A decoding error in TOML's words and without the value: serde's
/// `invalid type: string "sk_live_...", expected a sequence` would put a
/// secret, or a value read from the environment, on a problem line.
fn decode_message(serde_message: &str, found: Option<&toml::Value>) -> String {
    let head = match found {
        Some(found) if serde_message.starts_with("invalid type") => {
            format!("invalid type: {}", kind_of(found))
        }
        _ if serde_message.starts_with("invalid type") => "invalid type".to_string(),
        _ => "invalid value".to_string(),
    };
    match serde_message.rsplit_once(", expected ") {
        Some((_, expected)) => format!("{head}, expected {}", in_toml_words(expected.trim())),
        None => head,
    }
}

fn kind_of(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a datetime",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// What serde says a field expects, as a TOML user would say it.
fn in_toml_words(expected: &str) -> &str {
    match expected {
        "a sequence" => "an array",
        "a map" => "a table",
        "u64" | "u32" | "usize" => "a non-negative integer",
        "u16" => "an integer from 0 to 65535",
        _ if expected.starts_with("struct ") => "a table",
        _ => expected,
    }
}

fn join(section: &str, key: &str) -> String {
    match key {
        "" | "." => section.into(),
        _ if key.starts_with('[') => format!("{section}{key}"),
        _ => format!("{section}.{key}"),
    }
}

/// Formats a `serde_ignored` path as `a.b[0].c`.
fn key_of(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_of(parent)),
        Path::Map { parent, key } => {
            let parent = key_of(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_of(parent),
    }
}

/// Expands one string. `${VAR:-default}` uses the default when `VAR` is unset
/// or empty, as the shell does. A variable's value is not expanded again.
pub fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    expand_noting_env(text, env).map(|(expanded, _)| expanded)
}

/// [`expand`], and whether a non-empty variable's value went into the result.
fn expand_noting_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(text.len());
    let mut used_env = false;
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated ${...} reference".to_string())?;
        let reference = &after[..end];
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            // Not echoed: on a secret key the text may be the secret itself.
            return Err(
                "not a ${NAME} reference (NAME: letters, digits and _, not starting with a digit)"
                    .to_string(),
            );
        }
        match (env(name).filter(|v| !v.is_empty()), default) {
            (Some(value), _) => {
                out.push_str(&value);
                used_env = true;
            }
            (None, Some(default)) => out.push_str(default),
            (None, None) if env(name).is_some() => {}
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (use ${{{name}:-default}} for an optional one)"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok((out, used_env))
}

// ---------------------------------------------------------------------------
// The validated configuration.
// ---------------------------------------------------------------------------

/// The configuration the sidecar runs on: every value parsed and checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub upstream: Upstream,
    pub auth: Auth,
    pub stripe: Stripe,
    pub checkout: Checkout,
    pub customers: Customers,
    pub subscriptions: Subscriptions,
    pub identity_headers: IdentityHeaders,
    pub gates: Vec<Gate>,
    pub state: State,
    pub routes: Vec<Route>,
    /// The file as read, for `--check`.
    pub raw: RawConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_body_bytes: usize,
    pub shutdown_drain: Duration,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub access_log: bool,
    /// 0: one per core.
    pub worker_threads: usize,
    /// Client connections open at once; more wait in the accept queue.
    pub max_connections: usize,
    /// A local route's whole body must arrive within this.
    pub body_timeout: Duration,
    /// Peers whose X-Forwarded-* / X-Real-IP headers are kept.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    /// `scheme://host:port` of the app; request paths are appended verbatim.
    pub authority: http::uri::Authority,
    pub connect_timeout: Duration,
    pub read_timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Auth {
    pub header: http::HeaderName,
    pub cookies: Vec<String>,
    pub hs256_secret: Option<String>,
    pub jwks_url: Option<url::Url>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub required_claims: serde_json::Map<String, serde_json::Value>,
    pub leeway: Duration,
    pub jwks_refresh: Duration,
    pub jwks_min_refetch: Duration,
    pub user_id_claim: String,
    pub email_claim: String,
    pub api_keys: Vec<ApiKey>,
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub name: String,
    pub sha256: [u8; 32],
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone)]
pub struct Stripe {
    pub secret_key: Option<String>,
    pub api_base: url::Url,
    pub webhook_secrets: Vec<String>,
    pub webhook_tolerance: Duration,
    pub timeout: Duration,
    pub max_retries: u32,
    /// Stripe calls in flight at once; more wait.
    pub max_concurrency: usize,
}

#[derive(Debug, Clone)]
pub struct Checkout {
    pub allowed_redirect_origins: Vec<Origin>,
    pub require_sign_in: bool,
    pub allow_promotion_codes: bool,
    /// Alias -> price id: the allow-list, unless `allow_any_price`.
    pub prices: BTreeMap<String, String>,
    pub allow_any_price: bool,
    /// The longest trial a session or anonymous caller may ask (API keys:
    /// up to [`MAX_TRIAL_DAYS`]).
    pub max_trial_days: u32,
    /// Checkout and portal requests per client IP per minute; `None` = off.
    pub rate_limit_per_minute: Option<u32>,
}

/// The longest trial Stripe takes, and an API key may ask.
pub const MAX_TRIAL_DAYS: u32 = 730;

#[derive(Debug, Clone)]
pub enum CustomerSource {
    Stripe,
    Http {
        lookup_url: String,
        lookup_headers: Vec<(http::HeaderName, http::HeaderValue)>,
        customer_id_pointer: String,
    },
}

#[derive(Debug, Clone)]
pub struct Customers {
    pub source: CustomerSource,
    pub metadata_key: String,
    pub cache_ttl: Duration,
    pub negative_ttl: Duration,
    pub cache_capacity: u64,
}

#[derive(Debug, Clone)]
pub struct Subscriptions {
    /// Statuses that count as subscribed.
    pub subscribed_statuses: Vec<String>,
    pub cache_ttl: Duration,
    /// Also read the customer's active Stripe Entitlements features.
    pub entitlements: bool,
}

/// The headers set on proxied requests for a verified session; `None` =
/// not sent. Whatever a client sends under these names never reaches the
/// app.
#[derive(Debug, Clone, Default)]
pub struct IdentityHeaders {
    pub user_id: Option<http::HeaderName>,
    pub email: Option<http::HeaderName>,
    pub customer: Option<http::HeaderName>,
    pub subscription_status: Option<http::HeaderName>,
    pub plan: Option<http::HeaderName>,
    pub features: Option<http::HeaderName>,
}

impl IdentityHeaders {
    /// Every configured name.
    pub fn names(&self) -> impl Iterator<Item = &http::HeaderName> {
        [
            &self.user_id,
            &self.email,
            &self.customer,
            &self.subscription_status,
            &self.plan,
            &self.features,
        ]
        .into_iter()
        .flatten()
    }

    /// Whether any header needs the customer (a Stripe lookup).
    pub fn need_customer(&self) -> bool {
        self.customer.is_some() || self.need_subscription()
    }

    /// Whether any header needs the subscription state.
    pub fn need_subscription(&self) -> bool {
        self.subscription_status.is_some() || self.plan.is_some() || self.features.is_some()
    }
}

/// Shared state between replicas.
#[derive(Debug, Clone)]
pub struct State {
    /// `redis://` or `rediss://`; `None`: this process only.
    pub redis_url: Option<String>,
    pub key_prefix: String,
}

/// `scheme://host[:port]`, lower-cased, with the scheme's default port
/// dropped, so two spellings of one origin compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(String);

impl Origin {
    /// Parses a configured origin: an http(s) URL with no path (a lone
    /// trailing `/` is allowed), query, fragment or userinfo.
    pub fn parse(text: &str) -> Result<Origin, String> {
        let bad = || format!("not an origin: {text:?} (expected scheme://host[:port])");
        let url = url::Url::parse(text).map_err(|_| bad())?;
        let bare = url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none()
            && url.username().is_empty()
            && url.password().is_none()
            && !text.trim_end_matches('/').ends_with('?');
        if !bare {
            return Err(bad());
        }
        Origin::of(&url).ok_or_else(bad)
    }

    /// The origin of an absolute http(s) URL.
    pub fn of(url: &url::Url) -> Option<Origin> {
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        let host = url.host_str()?;
        Some(Origin(match url.port() {
            Some(port) => format!("{}://{host}:{port}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        }))
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl Config {
    /// Parses and validates `text`, reading `${VAR}` from `env`.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Problems> {
        let mut problems = Vec::new();
        let (raw, from_env) = Reader::read(text, env, &mut problems)?;
        let mut check = Check { problems, from_env };
        Config::from_raw(raw, &mut check)
            .filter(|_| check.problems.is_empty())
            .ok_or(Problems(check.problems))
    }

    /// Parses and validates `text` against the process environment.
    pub fn from_toml(text: &str) -> Result<Config, Problems> {
        Config::parse(text, &|name| std::env::var(name).ok())
    }

    /// Checks every value, adding to the problems found while parsing.
    /// Checks every value, adding to the problems found while reading;
    /// `None` when a section could not be built (a problem says why).
    fn from_raw(raw: RawConfig, p: &mut Check) -> Option<Config> {
        let server = validate_server(&raw.server, p);
        let upstream = validate_upstream(&raw.upstream, p);
        let auth = validate_auth(&raw.auth, p);
        let stripe = validate_stripe(&raw.stripe, p);
        let has_secret_key = !raw.stripe.secret_key.is_empty();
        let checkout = validate_checkout(&raw.checkout, has_secret_key, p);
        let customers = validate_customers(&raw.customers, p);
        let subscriptions = validate_subscriptions(&raw.subscriptions, p);
        let identity_headers = validate_identity_headers(&raw.identity_headers, p);
        let routes = validate_routes(raw.routes.as_deref(), p);
        let gates = validate_gates(&raw.gates, &checkout, &subscriptions, &routes, p);
        let state = validate_state(&raw.state, p);
        Some(Config {
            server,
            upstream,
            auth,
            stripe: stripe?,
            checkout,
            customers,
            subscriptions,
            identity_headers,
            gates,
            state,
            routes,
            raw,
        })
    }
}

/// The problems found so far, and which keys' values must not be echoed.
struct Check {
    problems: Vec<Problem>,
    /// Keys whose value took a variable from the environment.
    from_env: BTreeSet<String>,
}

impl Check {
    fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// `text`, the value of `key`, quoted for a problem line; `<redacted>`
    /// when it is a secret or came (in part) from the environment.
    fn show(&self, key: &str, text: &str) -> String {
        if is_secret(key) || self.from_env.contains(key) {
            REDACTED.to_string()
        } else {
            format!("{text:?}")
        }
    }
}

fn socket_addr(text: &str, key: &str, p: &mut Check) -> SocketAddr {
    text.parse().unwrap_or_else(|_| {
        p.push(problem(
            key,
            format!(
                "not an address: {} (expected IP:PORT, e.g. 0.0.0.0:8080)",
                p.show(key, text)
            ),
        ));
        SocketAddr::from(([0, 0, 0, 0], 0))
    })
}

fn positive(value: u64, key: &str, p: &mut Check) {
    if value == 0 {
        p.push(problem(key, "must be greater than 0"));
    }
}

fn http_url(text: &str, key: &str, p: &mut Check) -> Option<url::Url> {
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            Some(url)
        }
        _ => {
            p.push(problem(
                key,
                format!("not an http(s) URL: {}", p.show(key, text)),
            ));
            None
        }
    }
}

fn validate_server(raw: &RawServer, p: &mut Check) -> Server {
    let listen = socket_addr(&raw.listen, "server.listen", p);
    let admin_listen = socket_addr(&raw.admin_listen, "server.admin_listen", p);
    if listen == admin_listen && listen.port() != 0 {
        p.push(problem(
            "server.admin_listen",
            "must differ from server.listen",
        ));
    }
    positive(raw.max_body_bytes, "server.max_body_bytes", p);
    let log_format = match raw.log_format.as_str() {
        "json" => LogFormat::Json,
        "text" => LogFormat::Text,
        other => {
            p.push(problem(
                "server.log_format",
                format!(
                    "must be \"json\" or \"text\", not {}",
                    p.show("server.log_format", other)
                ),
            ));
            LogFormat::Json
        }
    };
    if raw.worker_threads > 1024 {
        p.push(problem("server.worker_threads", "must be at most 1024"));
    }
    positive(raw.max_connections, "server.max_connections", p);
    positive(raw.body_timeout_ms, "server.body_timeout_ms", p);
    let mut trusted_proxies = Vec::new();
    for (i, text) in raw.trusted_proxies.iter().enumerate() {
        let key = format!("server.trusted_proxies[{i}]");
        match cidr(text) {
            Some(net) => trusted_proxies.push(net),
            None => p.push(problem(
                &key,
                format!(
                    "not a CIDR: {} (expected e.g. \"10.0.0.0/8\", \"fd00::/8\" or an IP)",
                    p.show(&key, text)
                ),
            )),
        }
    }
    Server {
        listen,
        admin_listen,
        max_body_bytes: usize::try_from(raw.max_body_bytes).unwrap_or(usize::MAX),
        shutdown_drain: secs(raw.shutdown_drain_seconds),
        shutdown_grace: secs(raw.shutdown_grace_seconds),
        log_format,
        access_log: raw.access_log,
        worker_threads: raw.worker_threads as usize,
        max_connections: usize::try_from(raw.max_connections).unwrap_or(usize::MAX),
        body_timeout: millis(raw.body_timeout_ms),
        trusted_proxies,
    }
}

/// `10.0.0.0/8`, or a bare IP as the network of that one address. Bits
/// past the prefix are dropped (`10.1.2.3/8` is `10.0.0.0/8`), as the
/// prefix says what is trusted.
fn cidr(text: &str) -> Option<ipnet::IpNet> {
    let net = match text.parse::<ipnet::IpNet>() {
        Ok(net) => net,
        Err(_) => ipnet::IpNet::from(text.parse::<std::net::IpAddr>().ok()?),
    };
    Some(net.trunc())
}

fn validate_upstream(raw: &RawUpstream, p: &mut Check) -> Upstream {
    let authority = match url::Url::parse(&raw.url) {
        Ok(url)
            if url.scheme() == "http"
                && url.host_str().is_some()
                && url.path() == "/"
                && url.query().is_none()
                && url.username().is_empty() =>
        {
            let port = url.port_or_known_default().unwrap_or(80);
            let host = url.host_str().unwrap_or_default();
            format!("{host}:{port}").parse().ok()
        }
        _ => None,
    };
    let authority = authority.unwrap_or_else(|| {
        p.push(problem(
            "upstream.url",
            format!(
                "not an app address: {} (expected http://host:port with no path)",
                p.show("upstream.url", &raw.url)
            ),
        ));
        http::uri::Authority::from_static("127.0.0.1:3000")
    });
    positive(raw.connect_timeout_ms, "upstream.connect_timeout_ms", p);
    Upstream {
        authority,
        connect_timeout: millis(raw.connect_timeout_ms),
        read_timeout: (raw.read_timeout_ms > 0).then(|| millis(raw.read_timeout_ms)),
    }
}

/// Every action but the webhook, which Stripe's signature authenticates.
fn api_key_may_call(action: Action) -> bool {
    action != Action::Webhook
}

/// Clock skew tolerated on `exp` and `nbf`, at most.
const MAX_LEEWAY_SECONDS: u64 = 300;

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn validate_auth(raw: &RawAuth, p: &mut Check) -> Auth {
    let header = http::HeaderName::try_from(raw.header.as_str()).unwrap_or_else(|_| {
        p.push(problem(
            "auth.header",
            format!("not a header name: {}", p.show("auth.header", &raw.header)),
        ));
        http::header::AUTHORIZATION
    });
    for (i, cookie) in raw.cookies.iter().enumerate() {
        let valid_chars = !cookie.is_empty()
            && cookie
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        if !valid_chars || cookie.matches('*').count() > 1 {
            p.push(problem(
                &format!("auth.cookies[{i}]"),
                format!(
                    "not a cookie name (one '*' at most): {}",
                    p.show(&format!("auth.cookies[{i}]"), cookie)
                ),
            ));
        }
    }
    let jwks_url = non_empty(&raw.jwks_url).and_then(|u| http_url(&u, "auth.jwks_url", p));
    // Keys fetched in clear text could be swapped on the way: only a
    // sidecar-local key server may be plain http.
    if let Some(url) = &jwks_url {
        if url.scheme() != "https" && !is_loopback(url) {
            p.push(problem(
                "auth.jwks_url",
                "must be https (plain http only on a loopback host such as 127.0.0.1)",
            ));
        }
    }
    if raw.leeway_seconds > MAX_LEEWAY_SECONDS {
        p.push(problem(
            "auth.leeway_seconds",
            format!("must be at most {MAX_LEEWAY_SECONDS}"),
        ));
    }
    let required_claims = raw
        .required_claims
        .iter()
        .map(|(name, value)| (name.clone(), toml_to_json(value)))
        .collect();
    positive(raw.jwks_refresh_seconds, "auth.jwks_refresh_seconds", p);
    if raw.user_id_claim.is_empty() {
        p.push(problem("auth.user_id_claim", "must not be empty"));
    }
    let mut api_keys = Vec::new();
    for (i, key) in raw.api_keys.iter().enumerate() {
        let at = |field: &str| format!("auth.api_keys[{i}].{field}");
        if key.name.is_empty() {
            p.push(problem(&at("name"), "must not be empty"));
        } else if raw.api_keys[..i].iter().any(|k| k.name == key.name) {
            p.push(problem(
                &at("name"),
                format!("duplicate name {}", p.show(&at("name"), &key.name)),
            ));
        }
        let sha256 = decode_sha256(&key.sha256).unwrap_or_else(|| {
            p.push(problem(
                &at("sha256"),
                "must be the 64 hex digits of the key's SHA-256 (e.g. `printf %s KEY | sha256sum`)",
            ));
            [0; 32]
        });
        if key.actions.is_empty() {
            p.push(problem(&at("actions"), "must name at least one action"));
        }
        let mut actions = Vec::new();
        for (j, action) in key.actions.iter().enumerate() {
            let key = format!("auth.api_keys[{i}].actions[{j}]");
            match Action::parse(action).filter(|a| api_key_may_call(*a)) {
                Some(action) => actions.push(action),
                None => p.push(problem(
                    &key,
                    format!(
                        "must be {}, not {}",
                        one_of(
                            Action::ALL
                                .into_iter()
                                .filter(|a| api_key_may_call(*a))
                                .map(Action::as_str)
                        ),
                        p.show(&key, action)
                    ),
                )),
            }
        }
        api_keys.push(ApiKey {
            name: key.name.clone(),
            sha256,
            actions,
        });
    }
    Auth {
        header,
        cookies: raw.cookies.clone(),
        hs256_secret: non_empty(&raw.hs256_secret),
        jwks_url,
        issuer: non_empty(&raw.issuer),
        audience: non_empty(&raw.audience),
        required_claims,
        leeway: secs(raw.leeway_seconds.min(MAX_LEEWAY_SECONDS)),
        jwks_refresh: secs(raw.jwks_refresh_seconds),
        jwks_min_refetch: secs(raw.jwks_min_refetch_seconds),
        user_id_claim: raw.user_id_claim.clone(),
        email_claim: raw.email_claim.clone(),
        api_keys,
    }
}

/// A TOML value as JSON, for comparing with token claims (dates as strings).
fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(s) => s.clone().into(),
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(f) => (*f).into(),
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Datetime(d) => d.to_string().into(),
        toml::Value::Array(items) => items.iter().map(toml_to_json).collect(),
        toml::Value::Table(table) => table
            .iter()
            .map(|(k, v)| (k.clone(), toml_to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

fn decode_sha256(digits: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

/// `None` (with a problem pushed) when `api_base` is not a URL.
fn validate_stripe(raw: &RawStripe, p: &mut Check) -> Option<Stripe> {
    let secret_key = non_empty(&raw.secret_key);
    if let Some(key) = &secret_key {
        if !(key.starts_with("sk_") || key.starts_with("rk_")) {
            // Never echo the value: it is a secret even when it is wrong.
            p.push(problem(
                "stripe.secret_key",
                "must be a Stripe secret or restricted key (sk_... or rk_...)",
            ));
        }
    }
    let api_base = http_url(&raw.api_base, "stripe.api_base", p);
    positive(
        raw.webhook_tolerance_seconds,
        "stripe.webhook_tolerance_seconds",
        p,
    );
    positive(raw.timeout_ms, "stripe.timeout_ms", p);
    if raw.max_retries > 10 {
        p.push(problem("stripe.max_retries", "must be at most 10"));
    }
    positive(raw.max_concurrency, "stripe.max_concurrency", p);
    Some(Stripe {
        secret_key,
        api_base: api_base?,
        webhook_secrets: raw
            .webhook_secrets
            .iter()
            .filter_map(|s| non_empty(s))
            .collect(),
        webhook_tolerance: secs(raw.webhook_tolerance_seconds),
        timeout: millis(raw.timeout_ms),
        max_retries: raw.max_retries.min(10) as u32,
        max_concurrency: usize::try_from(raw.max_concurrency).unwrap_or(usize::MAX),
    })
}

fn validate_checkout(raw: &RawCheckout, has_secret_key: bool, p: &mut Check) -> Checkout {
    let mut origins = Vec::new();
    // An empty entry (an unset `${APP_ORIGIN:-}`) is left out.
    let written = raw.allowed_redirect_origins.iter().enumerate();
    for (i, text) in written.filter(|(_, text)| !text.is_empty()) {
        let key = format!("checkout.allowed_redirect_origins[{i}]");
        match Origin::parse(text) {
            Ok(origin) => origins.push(origin),
            // Origin's own message quotes the text, which may be hidden.
            Err(_) => p.push(problem(
                &key,
                format!(
                    "not an origin: {} (expected scheme://host[:port])",
                    p.show(&key, text)
                ),
            )),
        }
    }
    if has_secret_key && raw.allowed_redirect_origins.iter().all(String::is_empty) {
        p.push(problem(
            "checkout.allowed_redirect_origins",
            "must list at least one origin (e.g. [\"https://myapp.com\"]) once stripe.secret_key is set",
        ));
    }
    // An empty id (an unset `${VAR:-}`) is left out, as empty webhook
    // secrets are, so one file serves deployments with more or fewer prices.
    let prices: BTreeMap<String, String> = raw
        .prices
        .iter()
        .filter(|(_, id)| !id.is_empty())
        .map(|(alias, id)| (alias.clone(), id.clone()))
        .collect();
    for (alias, id) in &prices {
        if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            p.push(problem(
                &format!("checkout.prices.{alias}"),
                "must be a Stripe price id (price_...)",
            ));
        }
    }
    if has_secret_key && prices.is_empty() && !raw.allow_any_price {
        p.push(problem(
            "checkout.prices",
            "must list the prices a browser may buy (e.g. { pro = \"price_...\" }) once stripe.secret_key is set, or set checkout.allow_any_price = true",
        ));
    }
    if raw.max_trial_days > u64::from(MAX_TRIAL_DAYS) {
        p.push(problem(
            "checkout.max_trial_days",
            format!("must be at most {MAX_TRIAL_DAYS}"),
        ));
    }
    let per_minute = u32::try_from(raw.rate_limit_per_minute).unwrap_or(u32::MAX);
    Checkout {
        allowed_redirect_origins: origins,
        require_sign_in: raw.require_sign_in,
        allow_promotion_codes: raw.allow_promotion_codes,
        prices,
        allow_any_price: raw.allow_any_price,
        max_trial_days: raw.max_trial_days.min(u64::from(MAX_TRIAL_DAYS)) as u32,
        rate_limit_per_minute: (per_minute > 0).then_some(per_minute),
    }
}

fn validate_customers(raw: &RawCustomers, p: &mut Check) -> Customers {
    let source = match raw.source.as_str() {
        "stripe" => CustomerSource::Stripe,
        "http" => {
            if raw.lookup_url.is_empty() {
                p.push(problem(
                    "customers.lookup_url",
                    "is required when customers.source = \"http\"",
                ));
            } else {
                // `{userId}` is not valid in a URL host, so check with it filled.
                http_url(
                    &raw.lookup_url.replace("{userId}", "user"),
                    "customers.lookup_url",
                    p,
                );
            }
            let mut lookup_headers = Vec::new();
            for (name, value) in &raw.lookup_headers {
                let key = format!("customers.lookup_headers.{name}");
                match (
                    http::HeaderName::try_from(name.as_str()),
                    http::HeaderValue::try_from(value.as_str()),
                ) {
                    (Ok(name), Ok(value)) => lookup_headers.push((name, value)),
                    (Err(_), _) => p.push(problem(&key, "not a header name")),
                    (_, Err(_)) => p.push(problem(&key, "not a valid header value")),
                }
            }
            if !(raw.customer_id_pointer.is_empty() || raw.customer_id_pointer.starts_with('/')) {
                p.push(problem(
                    "customers.customer_id_pointer",
                    "must be a JSON pointer such as \"/customerId\"",
                ));
            }
            CustomerSource::Http {
                lookup_url: raw.lookup_url.clone(),
                lookup_headers,
                customer_id_pointer: raw.customer_id_pointer.clone(),
            }
        }
        other => {
            p.push(problem(
                "customers.source",
                format!(
                    "must be \"stripe\" or \"http\", not {}",
                    p.show("customers.source", other)
                ),
            ));
            CustomerSource::Stripe
        }
    };
    if raw.metadata_key.is_empty() || raw.metadata_key.len() > 40 {
        p.push(problem(
            "customers.metadata_key",
            "must be 1 to 40 characters",
        ));
    }
    positive(raw.cache_ttl_seconds, "customers.cache_ttl_seconds", p);
    positive(raw.cache_capacity, "customers.cache_capacity", p);
    Customers {
        source,
        metadata_key: raw.metadata_key.clone(),
        cache_ttl: secs(raw.cache_ttl_seconds),
        negative_ttl: secs(raw.negative_ttl_seconds),
        cache_capacity: raw.cache_capacity,
    }
}

fn validate_subscriptions(raw: &RawSubscriptions, p: &mut Check) -> Subscriptions {
    for (i, status) in raw.subscribed_statuses.iter().enumerate() {
        if !SUBSCRIPTION_STATUSES.contains(&status.as_str()) {
            let key = format!("subscriptions.subscribed_statuses[{i}]");
            p.push(problem(
                &key,
                format!(
                    "must be {}, not {}",
                    one_of(SUBSCRIPTION_STATUSES),
                    p.show(&key, status)
                ),
            ));
        }
    }
    positive(raw.cache_ttl_seconds, "subscriptions.cache_ttl_seconds", p);
    Subscriptions {
        subscribed_statuses: raw.subscribed_statuses.clone(),
        cache_ttl: secs(raw.cache_ttl_seconds),
        entitlements: raw.entitlements,
    }
}

/// Names the sidecar itself must own on the way to the app.
const NOT_IDENTITY_HEADERS: [&str; 12] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "authorization",
    "cookie",
    "x-request-id",
    "x-forwarded-for",
];

fn validate_identity_headers(raw: &RawIdentityHeaders, p: &mut Check) -> IdentityHeaders {
    let mut seen: Vec<http::HeaderName> = Vec::new();
    let mut name = |field: &str, text: &str| -> Option<http::HeaderName> {
        let key = format!("identity_headers.{field}");
        if text.is_empty() {
            return None;
        }
        let Ok(name) = http::HeaderName::try_from(text) else {
            p.push(problem(
                &key,
                format!("not a header name: {}", p.show(&key, text)),
            ));
            return None;
        };
        if NOT_IDENTITY_HEADERS.contains(&name.as_str()) || name.as_str().starts_with("proxy-") {
            p.push(problem(
                &key,
                format!("{name} is a header the sidecar or the client owns; pick another name"),
            ));
            return None;
        }
        if seen.contains(&name) {
            p.push(problem(
                &key,
                format!("{name} is already used by another identity header"),
            ));
            return None;
        }
        seen.push(name.clone());
        Some(name)
    };
    IdentityHeaders {
        user_id: name("user_id", &raw.user_id),
        email: name("email", &raw.email),
        customer: name("customer", &raw.customer),
        subscription_status: name("subscription_status", &raw.subscription_status),
        plan: name("plan", &raw.plan),
        features: name("features", &raw.features),
    }
}

fn validate_gates(
    raw: &[RawGate],
    checkout: &Checkout,
    subscriptions: &Subscriptions,
    routes: &[Route],
    p: &mut Check,
) -> Vec<Gate> {
    let mut gates = Vec::new();
    for (i, g) in raw.iter().enumerate() {
        let at = |field: &str| format!("gates[{i}].{field}");
        let pattern = match Pattern::new(&g.path) {
            Ok(pattern) => Some(pattern),
            Err(why) => {
                p.push(problem(&at("path"), why));
                None
            }
        };
        if let Some(route) = pattern
            .as_ref()
            .and_then(|pattern| routes.iter().find(|r| pattern.is_only(r)))
        {
            p.push(problem(
                &at("path"),
                format!(
                    "can never apply to {}: that is a local route, answered by the sidecar",
                    route.path
                ),
            ));
        }
        let require = Require::parse(&g.require).unwrap_or_else(|| {
            p.push(problem(
                &at("require"),
                format!(
                    "must be {}, not {}",
                    one_of(Require::ALL.map(Require::as_str)),
                    p.show(&at("require"), &g.require)
                ),
            ));
            Require::Subscription
        });
        if require == Require::User && !(g.plans.is_empty() && g.features.is_empty()) {
            p.push(problem(
                &at("require"),
                "must be \"subscription\" when plans or features are listed",
            ));
        }
        let mut plans = Vec::new();
        for (j, plan) in g.plans.iter().enumerate() {
            match checkout.prices.get(plan) {
                Some(id) => plans.push(id.clone()),
                None if plan.starts_with("price_") => plans.push(plan.clone()),
                None => p.push(problem(
                    &format!("gates[{i}].plans[{j}]"),
                    format!(
                        "{} is neither a checkout.prices alias nor a price id (price_...)",
                        p.show(&at("plans"), plan)
                    ),
                )),
            }
        }
        for (j, feature) in g.features.iter().enumerate() {
            if feature.is_empty() {
                p.push(problem(
                    &format!("gates[{i}].features[{j}]"),
                    "must not be empty",
                ));
            }
        }
        if !g.features.is_empty() && !subscriptions.entitlements {
            p.push(problem(
                &at("features"),
                "needs subscriptions.entitlements = true (features are Stripe Entitlements)",
            ));
        }
        let redirect = non_empty(&g.redirect);
        if let Some(target) = &redirect {
            let is_path = target.starts_with('/')
                && !target.starts_with("//")
                && !target.contains('\\')
                && target.parse::<http::uri::PathAndQuery>().is_ok();
            let allowed_url = url::Url::parse(target)
                .ok()
                .and_then(|url| Origin::of(&url))
                .is_some_and(|origin| checkout.allowed_redirect_origins.contains(&origin))
                && http::HeaderValue::from_str(target).is_ok();
            if !(is_path || allowed_url) {
                p.push(problem(
                    &at("redirect"),
                    format!(
                        "must be a path (/pricing) or a URL on one of checkout.allowed_redirect_origins, not {}",
                        p.show(&at("redirect"), target)
                    ),
                ));
            }
        }
        if let Some(pattern) = pattern {
            gates.push(Gate {
                path: g.path.clone(),
                pattern,
                require,
                plans,
                features: g.features.clone(),
                redirect,
            });
        }
    }
    gates
}

fn validate_state(raw: &RawState, p: &mut Check) -> State {
    let redis_url = non_empty(&raw.redis_url);
    if let Some(url) = &redis_url {
        let scheme = url::Url::parse(url).ok().map(|u| u.scheme().to_string());
        if !matches!(scheme.as_deref(), Some("redis" | "rediss")) {
            // Never echoed: it may carry a password.
            p.push(problem(
                "state.redis_url",
                "must be a redis:// or rediss:// URL (e.g. \"redis://127.0.0.1:6379/0\")",
            ));
        }
    }
    if raw.key_prefix.len() > 64 {
        p.push(problem("state.key_prefix", "must be at most 64 characters"));
    }
    State {
        redis_url,
        key_prefix: raw.key_prefix.clone(),
    }
}

fn validate_routes(raw: Option<&[RawRoute]>, p: &mut Check) -> Vec<Route> {
    let defaults;
    let raw = match raw {
        Some(routes) => routes,
        None => {
            defaults = default_routes();
            &defaults
        }
    };
    let mut routes: Vec<Route> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let at = |field: &str| format!("routes[{i}].{field}");
        let action = Action::parse(&r.action);
        if action.is_none() {
            p.push(problem(
                &at("action"),
                format!(
                    "must be {}, not {}",
                    one_of(Action::ALL.map(Action::as_str)),
                    p.show(&at("action"), &r.action)
                ),
            ));
        }
        let status = r.status.unwrap_or(200);
        if !(200..300).contains(&status) {
            p.push(problem(&at("status"), "must be a 2xx status"));
        }
        let default_mode = r.default_mode.as_deref().and_then(|name| {
            let mode = Mode::parse(name);
            if mode.is_none() {
                p.push(problem(
                    &at("default_mode"),
                    format!(
                        "must be {}, not {}",
                        one_of(Mode::ALL.map(Mode::as_str)),
                        p.show(&at("default_mode"), name)
                    ),
                ));
            }
            mode
        });
        if default_mode.is_some() && action != Some(Action::Checkout) {
            p.push(problem(
                &at("default_mode"),
                "only applies to checkout routes",
            ));
        }
        if let Some(forward_to) = &r.forward_to {
            if action != Some(Action::Webhook) {
                p.push(problem(&at("forward_to"), "only applies to webhook routes"));
            } else if !forward_to.starts_with('/')
                || forward_to.parse::<http::uri::PathAndQuery>().is_err()
            {
                p.push(problem(
                    &at("forward_to"),
                    "must be a path on the app, starting with '/'",
                ));
            }
        }
        match Route::new(&r.path, action.unwrap_or(Action::Checkout)) {
            Err(message) => {
                // Route's messages quote the path after a ": "; keep only
                // the rule when the path is hidden.
                let message = match p.show(&at("path"), &r.path) {
                    shown if shown == REDACTED => message
                        .split_once(": ")
                        .map_or("not a valid path", |(rule, _)| rule)
                        .to_string(),
                    _ => message,
                };
                p.push(problem(&at("path"), message));
            }
            Ok(route) if routes.iter().any(|other| other.pattern == route.pattern) => {
                p.push(problem(
                    &at("path"),
                    format!("duplicate route {}", p.show(&at("path"), &r.path)),
                ))
            }
            Ok(mut route) => {
                route.status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
                route.default_mode = default_mode;
                route.forward_to = r.forward_to.clone();
                routes.push(route);
            }
        }
    }
    routes
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn problems(text: &str) -> Vec<String> {
        problems_with(text, &env)
    }

    fn problems_with(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        match Config::parse(text, env) {
            Ok(_) => Vec::new(),
            Err(Problems(list)) => list.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let config = Config::parse("", &env).unwrap();
        assert_eq!(config.server.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(config.server.admin_listen, "0.0.0.0:9901".parse().unwrap());
        assert_eq!(config.server.max_body_bytes, 65536);
        assert_eq!(config.server.shutdown_drain, Duration::from_secs(5));
        assert_eq!(config.server.shutdown_grace, Duration::from_secs(25));
        assert_eq!(config.server.log_format, LogFormat::Json);
        assert!(config.server.access_log);
        assert_eq!(config.upstream.authority.as_str(), "127.0.0.1:3000");
        assert_eq!(config.upstream.connect_timeout, Duration::from_millis(2000));
        assert_eq!(config.upstream.read_timeout, None);
        assert_eq!(config.auth.cookies, ["sb-*-auth-token", "sb-access-token"]);
        assert_eq!(config.auth.audience.as_deref(), Some("authenticated"));
        assert_eq!(config.auth.required_claims["role"], "authenticated");
        assert_eq!(config.stripe.secret_key, None);
        assert_eq!(config.stripe.max_retries, 2);
        assert!(matches!(config.customers.source, CustomerSource::Stripe));
        assert_eq!(config.customers.cache_capacity, 100_000);
        let paths: Vec<_> = config.routes.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/api/stripe/create-checkout",
                "/api/stripe/create-portal",
                "/api/stripe/webhook",
                "/api/stripe/subscription"
            ]
        );
        assert_eq!(
            config.routes[2].forward_to.as_deref(),
            Some("/api/stripe/webhook")
        );
    }

    #[test]
    fn interpolation_reads_the_environment() {
        assert_eq!(expand("a${SET}b", &env).unwrap(), "avalueb");
        assert_eq!(expand("${UNSET:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(expand("${EMPTY:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(expand("${UNSET:-}", &env).unwrap(), "");
        assert_eq!(expand("${EMPTY}", &env).unwrap(), "");
        assert_eq!(expand("$SET {x}", &env).unwrap(), "$SET {x}");
        assert!(expand("${UNSET}", &env)
            .unwrap_err()
            .contains("UNSET is not set"));
        assert!(expand("${SET", &env).is_err());
        assert!(expand("${1BAD}", &env).is_err());
    }

    #[test]
    fn unset_variable_names_key_and_variable() {
        let found = problems("[stripe]\nwebhook_secrets = [\"ok\", \"${NOPE}\"]\n");
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("stripe.webhook_secrets[1]: environment variable NOPE"));
    }

    #[test]
    fn every_problem_is_reported_together() {
        let text = r#"
            typo_section = 1
            [server]
            listen = "nowhere"
            lisen = "x"
            log_format = "xml"
            max_body_bytes = 0
            [upstream]
            url = "http://app:3000/prefix"
            connect_timeout_ms = "fast"
            [auth]
            header = "bad header"
            cookies = ["a*b*c"]
            jwks_url = "ftp://keys"
            user_id_claim = ""
            [[auth.api_keys]]
            name = "backend"
            sha256 = "abc"
            actions = ["refund"]
            [[auth.api_keys]]
            name = "backend"
            sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
            actions = []
            [stripe]
            secret_key = "pk_live_oops"
            api_base = "not a url"
            timeout_ms = 0
            [checkout]
            allowed_redirect_origins = ["https://ok.com", "https://bad.com/path", "javascript:alert(1)"]
            [customers]
            source = "http"
            customer_id_pointer = "customerId"
            lookup_headers = { "bad header" = "x" }
            [[routes]]
            path = "/a"
            action = "refund"
            [[routes]]
            path = "/b"
            action = "portal"
            default_mode = "payment"
            forward_to = "/x"
            status = 404
            [[routes]]
            path = "no-slash"
            action = "checkout"
            [[routes]]
            path = "/b"
            action = "checkout"
            extra = true
        "#;
        let found = problems(text);
        let expected = [
            "typo_section: unknown section",
            "server.lisen: unknown key",
            "upstream.connect_timeout_ms: invalid type",
            "routes[3].extra: unknown key",
            "server.listen: not an address",
            "server.log_format: must be \"json\" or \"text\"",
            "server.max_body_bytes: must be greater than 0",
            "upstream.url: not an app address",
            "auth.header: not a header name",
            "auth.cookies[0]: not a cookie name",
            "auth.jwks_url: not an http(s) URL",
            "auth.user_id_claim: must not be empty",
            "auth.api_keys[0].sha256: must be the 64 hex digits",
            "auth.api_keys[0].actions[0]: must be \"checkout\", \"portal\" or \"subscription\"",
            "auth.api_keys[1].name: duplicate name",
            "auth.api_keys[1].actions: must name at least one action",
            "stripe.secret_key: must be a Stripe secret",
            "stripe.api_base: not an http(s) URL",
            "stripe.timeout_ms: must be greater than 0",
            "checkout.allowed_redirect_origins[1]: not an origin",
            "checkout.allowed_redirect_origins[2]: not an origin",
            "customers.lookup_url: is required",
            "customers.lookup_headers.bad header: not a header name",
            "customers.customer_id_pointer: must be a JSON pointer",
            "routes[0].action: must be",
            "routes[1].status: must be a 2xx status",
            "routes[1].default_mode: only applies to checkout routes",
            "routes[1].forward_to: only applies to webhook routes",
            "routes[2].path: must start with '/'",
            "routes[3].path: duplicate route",
        ];
        for want in expected {
            assert!(
                found.iter().any(|line| line.starts_with(want)),
                "missing {want:?} in:\n{}",
                found.join("\n")
            );
        }
        assert!(
            !found.iter().any(|line| line.contains("pk_live_oops")),
            "a secret was echoed"
        );
    }

    #[test]
    fn each_rule_names_its_key() {
        let cases = [
            ("[server]\nlisten = \"localhost:80\"", "server.listen: not an address"),
            ("[server]\nadmin_listen = \"0.0.0.0:8080\"", "server.admin_listen: must differ"),
            ("[server]\nmax_body_bytes = 0", "server.max_body_bytes: must be greater than 0"),
            ("[server]\nlog_format = \"xml\"", "server.log_format: must be"),
            ("[server]\nworker_threads = 5000", "server.worker_threads: must be at most 1024"),
            ("[server]\nshutdown_grace_seconds = -1", "server.shutdown_grace_seconds: invalid value"),
            ("[upstream]\nurl = \"https://app:443\"", "upstream.url: not an app address"),
            ("[upstream]\nurl = \"http://app:3000/x\"", "upstream.url: not an app address"),
            ("[upstream]\nurl = \"http://user@app\"", "upstream.url: not an app address"),
            ("[upstream]\nconnect_timeout_ms = 0", "upstream.connect_timeout_ms: must be greater than 0"),
            ("[auth]\nheader = \"a b\"", "auth.header: not a header name"),
            ("[auth]\ncookies = [\"ok\", \"a;b\"]", "auth.cookies[1]: not a cookie name"),
            ("[auth]\ncookies = [\"*-*\"]", "auth.cookies[0]: not a cookie name"),
            ("[auth]\njwks_url = \"keys.json\"", "auth.jwks_url: not an http(s) URL"),
            ("[auth]\njwks_refresh_seconds = 0", "auth.jwks_refresh_seconds: must be greater than 0"),
            ("[auth]\nuser_id_claim = \"\"", "auth.user_id_claim: must not be empty"),
            ("[[auth.api_keys]]\nsha256 = \"%64\"\nactions = [\"portal\"]", "auth.api_keys[0].name: must not be empty"),
            ("[[auth.api_keys]]\nname = \"k\"\nsha256 = \"zz\"\nactions = [\"portal\"]", "auth.api_keys[0].sha256: must be the 64 hex digits"),
            ("[[auth.api_keys]]\nname = \"k\"\nsha256 = \"%64\"\nactions = [\"webhook\"]", "auth.api_keys[0].actions[0]: must be"),
            ("[[auth.api_keys]]\nname = \"k\"\nsha256 = \"%64\"\nactions = []", "auth.api_keys[0].actions: must name at least one action"),
            ("[stripe]\nsecret_key = \"pk_test_x\"\n[checkout]\nallowed_redirect_origins = [\"https://a.com\"]\nallow_any_price = true", "stripe.secret_key: must be a Stripe secret"),
            ("[stripe]\napi_base = \"localhost:12111\"", "stripe.api_base: not an http(s) URL"),
            ("[stripe]\nwebhook_tolerance_seconds = 0", "stripe.webhook_tolerance_seconds: must be greater than 0"),
            ("[stripe]\ntimeout_ms = 0", "stripe.timeout_ms: must be greater than 0"),
            ("[stripe]\nmax_retries = 11", "stripe.max_retries: must be at most 10"),
            ("[stripe]\nsecret_key = \"sk_test_x\"\n[checkout]\nprices = { pro = \"price_1\" }", "checkout.allowed_redirect_origins: must list at least one origin"),
            ("[stripe]\nsecret_key = \"sk_test_x\"\n[checkout]\nallowed_redirect_origins = [\"https://a.com\"]", "checkout.prices: must list the prices a browser may buy"),
            ("[checkout]\nmax_trial_days = 731", "checkout.max_trial_days: must be at most 730"),
            ("[server]\nmax_connections = 0", "server.max_connections: must be greater than 0"),
            ("[server]\nbody_timeout_ms = 0", "server.body_timeout_ms: must be greater than 0"),
            ("[stripe]\nmax_concurrency = 0", "stripe.max_concurrency: must be greater than 0"),
            ("[auth]\nleeway_seconds = 301", "auth.leeway_seconds: must be at most 300"),
            ("[auth]\njwks_url = \"http://keys.example/jwks.json\"", "auth.jwks_url: must be https"),
            ("[checkout]\nallowed_redirect_origins = [\"https://a.com/x\"]", "checkout.allowed_redirect_origins[0]: not an origin"),
            ("[checkout]\nprices = { pro = \"price 1\" }", "checkout.prices.pro: must be a Stripe price id"),
            ("[stripe]\nsecret_key = \"sk_test_x\"\n[checkout]\nallowed_redirect_origins = [\"https://a.com\"]\nprices = { pro = \"${UNSET_PRICE:-}\" }", "checkout.prices: must list the prices a browser may buy"),
            ("[checkout]\nrequire_sign_in = \"yes\"", "checkout.require_sign_in: invalid type"),
            ("[customers]\nsource = \"db\"", "customers.source: must be"),
            ("[customers]\nsource = \"http\"", "customers.lookup_url: is required"),
            ("[customers]\nsource = \"http\"\nlookup_url = \"/lookup/{userId}\"", "customers.lookup_url: not an http(s) URL"),
            ("[customers]\nsource = \"http\"\nlookup_url = \"http://a/{userId}\"\nlookup_headers = { x = \"a\\nb\" }", "customers.lookup_headers.x: not a valid header value"),
            ("[customers]\nsource = \"http\"\nlookup_url = \"http://a/{userId}\"\ncustomer_id_pointer = \"id\"", "customers.customer_id_pointer: must be a JSON pointer"),
            ("[customers]\nmetadata_key = \"\"", "customers.metadata_key: must be 1 to 40 characters"),
            ("[customers]\ncache_ttl_seconds = 0", "customers.cache_ttl_seconds: must be greater than 0"),
            ("[customers]\ncache_capacity = 0", "customers.cache_capacity: must be greater than 0"),
            ("[[routes]]\npath = \"/a\"\naction = \"refund\"", "routes[0].action: must be"),
            ("[[routes]]\npath = \"a\"\naction = \"portal\"", "routes[0].path: must start with '/'"),
            ("[[routes]]\npath = \"/t/{x-y}\"\naction = \"portal\"", "routes[0].path: not a valid {name} segment"),
            ("[[routes]]\npath = \"/a\"\naction = \"portal\"\nstatus = 302", "routes[0].status: must be a 2xx status"),
            ("[[routes]]\npath = \"/a\"\naction = \"checkout\"\ndefault_mode = \"setup\"", "routes[0].default_mode: must be"),
            ("[[routes]]\npath = \"/a\"\naction = \"webhook\"\nforward_to = \"hook\"", "routes[0].forward_to: must be a path on the app"),
            ("[[routes]]\npath = \"/a\"\naction = \"portal\"\n[[routes]]\npath = \"/a/\"\naction = \"checkout\"", "routes[1].path: duplicate route"),
            ("[[routes]]\npath = \"/a\"\naction = \"portal\"\nmethod = \"GET\"", "routes[0].method: unknown key"),
            ("[stripe]\nsecret_key = \"${STRIPE_KEY}\"", "stripe.secret_key: environment variable STRIPE_KEY is not set"),
            ("[nonsense]\na = 1", "nonsense: unknown section"),
        ];
        let sha = "0".repeat(64);
        for (text, want) in cases {
            let found = problems(&text.replace("%64", &sha));
            assert_eq!(found.len(), 1, "{text}\n{found:?}");
            assert!(
                found[0].starts_with(want),
                "{text}\nwant {want}\ngot {}",
                found[0]
            );
        }
    }

    #[test]
    fn type_errors_in_one_section_do_not_hide_others() {
        let found = problems("[server]\naccess_log = \"yes\"\n[stripe]\nmax_retries = -1\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("server.access_log: "));
        assert!(found[1].starts_with("stripe.max_retries: "));
    }

    #[test]
    fn secret_key_requires_redirect_origins_and_prices() {
        let found = problems("[stripe]\nsecret_key = \"sk_test_1\"\n");
        assert_eq!(
            found,
            [
                "checkout.allowed_redirect_origins: must list at least one origin (e.g. [\"https://myapp.com\"]) once stripe.secret_key is set",
                "checkout.prices: must list the prices a browser may buy (e.g. { pro = \"price_...\" }) once stripe.secret_key is set, or set checkout.allow_any_price = true",
            ]
        );
        for checkout in ["prices = { pro = \"price_1\" }", "allow_any_price = true"] {
            assert!(problems(&format!(
                "[stripe]\nsecret_key = \"sk_test_1\"\n[checkout]\nallowed_redirect_origins = [\"https://a.com\"]\n{checkout}\n"
            ))
            .is_empty());
        }
    }

    #[test]
    fn jwks_may_be_plain_http_only_on_loopback() {
        for url in [
            "https://ref.supabase.co/auth/v1/.well-known/jwks.json",
            "http://127.0.0.1:9999/jwks.json",
            "http://[::1]:9999/jwks.json",
            "http://localhost/jwks.json",
        ] {
            assert!(
                problems(&format!("[auth]\njwks_url = \"{url}\"")).is_empty(),
                "{url}"
            );
        }
        for url in [
            "http://10.0.0.1/jwks.json",
            "http://localhost.evil.com/jwks.json",
        ] {
            let found = problems(&format!("[auth]\njwks_url = \"{url}\""));
            assert!(
                found[0].starts_with("auth.jwks_url: must be https"),
                "{url}"
            );
        }
    }

    /// Regression: a syntax error said only "not valid TOML: ..." with no
    /// place in the file.
    #[test]
    fn invalid_toml_is_one_problem_naming_line_and_column() {
        let cases = [
            ("[server\n", "config: line 1, column 8: "),
            ("# c\n[server]\nlisten = \n", "config: line 3, column 10: "),
            (
                "[stripe]\nsecret_key = \"sk_live_é\" x\n",
                "config: line 2, column 26: ",
            ),
            (
                "[stripe]\nsecret_key = sk_live_1\n",
                "config: line 2, column 14: ",
            ),
            (
                "[stripe]\nsecret_key = \"sk_live_1\n",
                "config: line 2, column ",
            ),
            (
                "[stripe]\nsecret_key = 'sk_live_1\\q'x\n",
                "config: line 2, column ",
            ),
            (
                "[stripe]\nsecret_key = \"sk_live_1\\q\"\n",
                "config: line 2, column ",
            ),
            (
                "[stripe]\nsecret_key = \"a\"\nsecret_key = \"sk_live_1\"\n",
                "config: line 3, column ",
            ),
        ];
        for (text, want) in cases {
            let found = problems(text);
            assert_eq!(found.len(), 1, "{text:?}: {found:?}");
            assert!(found[0].starts_with(want), "{text:?}: {}", found[0]);
            assert!(!found[0].contains('\n'), "{}", found[0]);
            assert!(!found[0].contains("sk_live"), "{}", found[0]);
        }
    }

    #[test]
    fn origins_compare_by_scheme_host_and_effective_port() {
        let o = |s: &str| Origin::parse(s).unwrap();
        assert_eq!(o("https://MyApp.com/"), o("https://myapp.com"));
        assert_eq!(o("https://myapp.com:443"), o("https://myapp.com"));
        assert_eq!(o("http://myapp.com:80"), o("http://myapp.com"));
        assert_ne!(o("http://myapp.com"), o("https://myapp.com"));
        assert_ne!(o("https://myapp.com:8443"), o("https://myapp.com"));
        assert_ne!(o("https://app.myapp.com"), o("https://myapp.com"));
        for bad in [
            "myapp.com",
            "https://myapp.com/path",
            "https://user@myapp.com",
            "https://myapp.com?x",
            "https://myapp.com#x",
            "ftp://myapp.com",
            "javascript:alert(1)",
            "",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn redacted_output_hides_every_secret() {
        let raw = RawConfig::parse(
            r#"
            [auth]
            hs256_secret = "jwt-secret-1"
            [stripe]
            secret_key = "sk_live_secret2"
            webhook_secrets = ["whsec_3", ""]
            [customers]
            lookup_headers = { authorization = "Bearer token4" }
            "#,
            &env,
            &mut Vec::new(),
        )
        .unwrap();
        let shown = raw.redacted_toml();
        for secret in ["jwt-secret-1", "sk_live_secret2", "whsec_3", "token4"] {
            assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
        }
        assert!(shown.contains("<redacted>"));
        // The printed configuration is itself a valid configuration.
        let mut problems = Vec::new();
        RawConfig::parse(&shown, &env, &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems:?}\n{shown}");
    }

    /// Regression: the accepted action and mode names were string literals
    /// here, so a new `Action` was refused until config.rs was edited too.
    #[test]
    fn action_and_mode_names_come_from_the_route_tables() {
        let sha = "0".repeat(64);
        for action in Action::ALL {
            let name = action.as_str();
            let text = format!("[[routes]]\npath = \"/a\"\naction = \"{name}\"\n");
            let config = Config::parse(&text, &env).unwrap();
            assert_eq!(config.routes[0].action, action);
            let text = format!(
                "[[auth.api_keys]]\nname = \"k\"\nsha256 = \"{sha}\"\nactions = [\"{name}\"]\n"
            );
            match Config::parse(&text, &env) {
                Ok(config) => assert_eq!(config.auth.api_keys[0].actions, [action]),
                Err(found) => assert_eq!(action, Action::Webhook, "{found}"),
            }
        }
        for mode in Mode::ALL {
            let text = format!(
                "[[routes]]\npath = \"/a\"\naction = \"checkout\"\ndefault_mode = \"{}\"\n",
                mode.as_str()
            );
            let config = Config::parse(&text, &env).unwrap();
            assert_eq!(config.routes[0].default_mode, Some(mode));
        }
        let found =
            problems("[[routes]]\npath = \"/a\"\naction = \"refund\"\ndefault_mode = \"x\"\n");
        let actions = one_of(Action::ALL.map(Action::as_str));
        let modes = one_of(Mode::ALL.map(Mode::as_str));
        assert!(
            found.contains(&format!(
                "routes[0].action: must be {actions}, not \"refund\""
            )),
            "{found:?}"
        );
        assert!(
            found.contains(&format!(
                "routes[0].default_mode: must be {modes}, not \"x\""
            )),
            "{found:?}"
        );
    }

    /// The three secrets the documented defaults read, each with a `${...}` in
    /// its value that must stay literal.
    fn secrets_env(name: &str) -> Option<String> {
        match name {
            "SUPABASE_JWT_SECRET" => Some("jwt-${SET}".into()),
            "STRIPE_SECRET_KEY" => Some("sk_test_${SET}".into()),
            "STRIPE_WEBHOOK_SECRET" => Some("whsec_${SET}".into()),
            _ => env(name),
        }
    }

    /// Regression: a config with no `[auth]` or no `[stripe]` (or one that
    /// left `hs256_secret`, `secret_key` or `webhook_secrets` out) ran with
    /// HS256 and Stripe off instead of reading the environment variables the
    /// documented defaults name.
    #[test]
    fn defaults_read_the_environment_whether_a_section_is_written_or_not() {
        let origins =
            "[checkout]\nallowed_redirect_origins = [\"https://a.com\"]\nallow_any_price = true\n";
        for sections in [
            "",
            "[auth]\n[stripe]\n",
            "[auth]\nleeway_seconds = 1\n[stripe]\nmax_retries = 1\n",
        ] {
            let text = format!("{sections}{origins}");
            let config = Config::parse(&text, &secrets_env).unwrap();
            assert_eq!(
                config.auth.hs256_secret.as_deref(),
                Some("jwt-${SET}"),
                "{text}"
            );
            assert_eq!(
                config.stripe.secret_key.as_deref(),
                Some("sk_test_${SET}"),
                "{text}"
            );
            assert_eq!(config.stripe.webhook_secrets, ["whsec_${SET}"], "{text}");
        }
        // Written values win, and are expanded once too.
        let text = format!(
            "[auth]\nhs256_secret = \"\"\n[stripe]\nsecret_key = \"${{STRIPE_SECRET_KEY}}\"\nwebhook_secrets = [\"${{SET}}\"]\n{origins}"
        );
        let config = Config::parse(&text, &secrets_env).unwrap();
        assert_eq!(config.auth.hs256_secret, None);
        assert_eq!(config.stripe.secret_key.as_deref(), Some("sk_test_${SET}"));
        assert_eq!(config.stripe.webhook_secrets, ["value"]);
        // A written key that cannot be used falls back to its default, read
        // from the environment like any other.
        let mut found = Vec::new();
        let raw = RawConfig::parse(
            "[auth]\nhs256_secret = \"${NOPE}\"\n[stripe]\nsecret_key = 5\nwebhook_secrets = \"x\"\n",
            &secrets_env,
            &mut found,
        )
        .unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(raw.auth.hs256_secret, "jwt-${SET}");
        assert_eq!(raw.stripe.secret_key, "sk_test_${SET}");
        assert_eq!(raw.stripe.webhook_secrets, ["whsec_${SET}"]);
        // The defaults are written once, next to the fields, as docs/reference.md has them.
        assert_eq!(RawAuth::default().hs256_secret, "${SUPABASE_JWT_SECRET:-}");
        assert_eq!(RawStripe::default().secret_key, "${STRIPE_SECRET_KEY:-}");
        assert_eq!(
            RawStripe::default().webhook_secrets,
            ["${STRIPE_WEBHOOK_SECRET:-}"]
        );
    }

    /// Regression: `webhook_secrets = "${WH}"` printed the secret inside
    /// serde's `invalid type: string "..."` message.
    #[test]
    fn problem_lines_never_show_a_secret() {
        let env = |name: &str| match name {
            "WH" => Some("whsec_S3CRET".to_string()),
            "APP" => Some("http://user:S3CRET@app:3000".to_string()),
            "WORD" => Some("S3CRET".to_string()),
            _ => None,
        };
        let cases = [
            ("[stripe]\nwebhook_secrets = \"${WH}\"", "stripe.webhook_secrets: invalid type: a string, expected an array"),
            ("[stripe]\nwebhook_secrets = \"whsec_S3CRET\"", "stripe.webhook_secrets: invalid type"),
            ("[stripe]\nwebhook_secrets = [\"ok\", 987654321]", "stripe.webhook_secrets[1]: invalid type: an integer, expected a string"),
            ("[stripe]\nwebhook_secrets = { a = \"whsec_S3CRET\" }", "stripe.webhook_secrets: invalid type: a table"),
            ("[stripe]\nsecret_key = [\"sk_live_S3CRET\"]", "stripe.secret_key: invalid type: an array, expected a string"),
            ("[stripe]\nsecret_key = 987654321", "stripe.secret_key: invalid type: an integer"),
            ("[stripe]\nsecret_key = 9876.54321", "stripe.secret_key: invalid type: a float"),
            ("[stripe]\nsecret_key = \"pk_live_S3CRET\"\n[checkout]\nallowed_redirect_origins = [\"https://a.com\"]\nallow_any_price = true", "stripe.secret_key: must be a Stripe secret"),
            ("[auth]\nhs256_secret = [\"S3CRET\"]", "auth.hs256_secret: invalid type: an array"),
            ("[auth]\nhs256_secret = 987654321", "auth.hs256_secret: invalid type: an integer"),
            ("[auth]\nhs256_secret = { k = \"S3CRET\" }", "auth.hs256_secret: invalid type: a table"),
            ("[auth]\nhs256_secret = \"S3CRET${S3CRET-x}\"", "auth.hs256_secret: not a ${NAME} reference"),
            ("[customers]\nlookup_headers = \"Bearer S3CRET\"", "customers.lookup_headers: invalid type: a string, expected a table"),
            ("[customers]\nlookup_headers = { authorization = [\"Bearer S3CRET\"] }", "customers.lookup_headers.authorization: invalid type: an array"),
            ("[customers]\nlookup_headers = { authorization = 987654321 }", "customers.lookup_headers.authorization: invalid type: an integer"),
            ("stripe = \"sk_live_S3CRET\"", "stripe: invalid type: a string, expected a table"),
            ("[server]\nlog_format = \"${WORD}\"", "server.log_format: must be \"json\" or \"text\", not <redacted>"),
            ("[server]\nlisten = \"${WORD}\"", "server.listen: not an address: <redacted>"),
            ("[server]\naccess_log = \"${WORD}\"", "server.access_log: invalid type: a string, expected a boolean"),
            ("[upstream]\nurl = \"${APP}\"", "upstream.url: not an app address: <redacted>"),
            ("[checkout]\nallowed_redirect_origins = [\"${APP}\"]", "checkout.allowed_redirect_origins[0]: not an origin: <redacted>"),
            ("[customers]\nsource = \"${WORD}\"", "customers.source: must be \"stripe\" or \"http\", not <redacted>"),
            ("[[routes]]\npath = \"${WORD}\"\naction = \"portal\"", "routes[0].path: must start with '/'"),
            ("[[routes]]\npath = \"/a\"\naction = \"${WORD}\"", "routes[0].action: must be"),
        ];
        for (text, want) in cases {
            let found = problems_with(text, &env);
            assert_eq!(found.len(), 1, "{text}\n{found:?}");
            assert!(
                found[0].starts_with(want),
                "{text}\nwant {want}\ngot  {}",
                found[0]
            );
            for shown in ["S3CRET", "987654321", "9876"] {
                assert!(
                    !found[0].contains(shown),
                    "{text}\nshows {shown}: {}",
                    found[0]
                );
            }
        }
    }

    /// Regression: `--check` printed the password and API key in
    /// `https://user:pw@host/path?key=abc` URLs.
    #[test]
    fn redacted_output_hides_userinfo_and_query_in_urls() {
        assert_eq!(
            redact_url("https://user:pw@host/path?key=abc"),
            "https://<redacted>@host/path?<redacted>"
        );
        let cases = [
            ("", ""),
            ("https://host/path", "https://host/path"),
            ("https://host/users/{userId}", "https://host/users/{userId}"),
            ("https://host?k=v", "https://host?<redacted>"),
            ("https://host/p?", "https://host/p?"),
            (
                "https://a:b@c@host:8443/p/{userId}?k=v#f",
                "https://<redacted>@host:8443/p/{userId}?<redacted>#f",
            ),
            ("https://user@host", "https://<redacted>@host"),
            ("https://host/p@x", "https://host/p@x"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let text = r#"
            [auth]
            jwks_url = "https://usr9:pw1@keys.example/jwks.json?key=abc2"
            [customers]
            source = "http"
            lookup_url = "https://svc9:pw3@lookup.example/users/{userId}?apikey=abc4"
            lookup_headers = { authorization = "Bearer token5" }
        "#;
        let shown = Config::parse(text, &env).unwrap().raw.redacted_toml();
        for secret in ["usr9", "pw1", "abc2", "svc9", "pw3", "abc4", "token5"] {
            assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
        }
        assert!(
            shown.contains("https://<redacted>@keys.example/jwks.json?<redacted>"),
            "{shown}"
        );
        assert!(
            shown.contains("https://<redacted>@lookup.example/users/{userId}?<redacted>"),
            "{shown}"
        );
        // Still a valid configuration.
        let again = Config::parse(&shown, &env).unwrap_or_else(|e| panic!("{e}\n{shown}"));
        assert_eq!(again.raw.redacted_toml(), shown);
    }

    #[test]
    fn trusted_proxies_are_cidrs_or_single_addresses() {
        let config = Config::parse(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\", \"192.168.1.7\", \"fd00::/8\", \"10.1.2.3/8\"]\n",
            &env,
        )
        .unwrap();
        let nets: Vec<String> = config
            .server
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            nets,
            [
                "10.0.0.0/8",
                "::1/128",
                "192.168.1.7/32",
                "fd00::/8",
                "10.0.0.0/8"
            ]
        );
        assert!(Config::parse("", &env)
            .unwrap()
            .server
            .trusted_proxies
            .is_empty());

        let found = problems(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\", \"localhost\", \"\", \" ::1\"]\n",
        );
        assert_eq!(found.len(), 4, "{found:?}");
        for (line, i) in found.iter().zip(1..) {
            let want = format!("server.trusted_proxies[{i}]: not a CIDR: ");
            assert!(line.starts_with(&want), "{line}");
        }
        assert_eq!(
            problems("[server]\ntrusted_proxies = \"10.0.0.0/8\"\n"),
            ["server.trusted_proxies: invalid type: a string, expected an array"]
        );
    }

    /// Regression (fuzzing, issue 10): after a mistyped array item was
    /// removed, later problems named the decoder's shifted index
    /// (`[1]`, `[1]`, `[2]` here).
    #[test]
    fn mistyped_array_items_are_named_by_their_index_in_the_file() {
        let found = problems(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", 1, 2, \"::1\", true]\n\
             [[auth.api_keys]]\nname = \"a\"\nactions = [\"checkout\", 3]\n\
             [[auth.api_keys]]\nname = 7\nactions = [4, \"portal\", 5]\n",
        );
        let decoding: Vec<&str> = found
            .iter()
            .map(String::as_str)
            .filter(|line| line.contains("invalid type"))
            .collect();
        assert_eq!(
            decoding,
            [
                "server.trusted_proxies[1]: invalid type: an integer, expected a string",
                "server.trusted_proxies[2]: invalid type: an integer, expected a string",
                "server.trusted_proxies[4]: invalid type: a boolean, expected a string",
                "auth.api_keys[0].actions[1]: invalid type: an integer, expected a string",
                "auth.api_keys[1].actions[0]: invalid type: an integer, expected a string",
                "auth.api_keys[1].actions[2]: invalid type: an integer, expected a string",
                "auth.api_keys[1].name: invalid type: an integer, expected a string",
            ]
        );
    }

    /// Regression (fuzzing, issue 10): each type error re-decoded the whole
    /// section, so 16,000 mistyped items took minutes and printed 16,000
    /// lines. The problems stop at a bound.
    #[test]
    fn a_flood_of_type_errors_is_cut_short() {
        let items = vec!["1"; 16_000].join(", ");
        let found = problems(&format!("[server]\ntrusted_proxies = [{items}]\n"));
        assert_eq!(found.len(), MAX_SECTION_PROBLEMS + 1, "{:?}", &found[..3]);
        assert_eq!(
            found[19],
            "server.trusted_proxies[19]: invalid type: an integer, expected a string"
        );
        assert_eq!(found[20], "server: more than 20 problems; fix these first");
    }

    /// Gates that can never apply, plans that name nothing and redirects
    /// that could send a browser off-site are problems with their key.
    #[test]
    fn gate_problems_name_their_key() {
        let base = "[checkout]\nprices = { pro = \"price_pro\" }\nallowed_redirect_origins = [\"https://myapp.com\"]\n";
        let gate = |body: &str| problems(&format!("{base}[[gates]]\n{body}\n"));
        let table: &[(&str, &str)] = &[
            ("path = \"app/pro\"", "gates[0].path: must start with '/'"),
            ("path = \"/app/**/pro\"", "gates[0].path: can never match"),
            ("path = \"/app/p*\"", "gates[0].path: can never match"),
            ("path = \"/app;x/pro\"", "gates[0].path: can never match"),
            ("path = \"/API/stripe/webhook\"", "gates[0].path: can never apply to /api/stripe/webhook"),
            ("path = \"/a\"\nrequire = \"paid\"", "gates[0].require: must be \"user\" or \"subscription\", not \"paid\""),
            ("path = \"/a\"\nrequire = \"user\"\nplans = [\"pro\"]", "gates[0].require: must be \"subscription\" when plans or features"),
            ("path = \"/a\"\nplans = [\"pro\", \"gold\"]", "gates[0].plans[1]: \"gold\" is neither a checkout.prices alias nor a price id"),
            ("path = \"/a\"\nfeatures = [\"api\"]", "gates[0].features: needs subscriptions.entitlements = true"),
            ("path = \"/a\"\nredirect = \"https://evil.example/pricing\"", "gates[0].redirect: must be a path (/pricing) or a URL on one of checkout.allowed_redirect_origins"),
            ("path = \"/a\"\nredirect = \"//evil.example/pricing\"", "gates[0].redirect: must be a path"),
            ("path = \"/a\"\nredirect = \"pricing\"", "gates[0].redirect: must be a path"),
        ];
        for (body, want) in table {
            let found = gate(body);
            assert!(
                found.iter().any(|line| line.starts_with(want)),
                "{body}: want {want:?} in {found:?}"
            );
        }
        for fine in [
            "path = \"/api/**\"\nrequire = \"user\"",
            "path = \"/app/pro/**\"\nplans = [\"pro\", \"price_other\"]\nredirect = \"/pricing\"",
            "path = \"/app/*/settings\"\nrequire = \"user\"\nredirect = \"https://myapp.com/sign-in\"",
        ] {
            assert_eq!(gate(fine), Vec::<String>::new(), "{fine}");
        }
        let config = Config::parse(
            &format!("{base}[[gates]]\npath = \"/App/Pro/**\"\nplans = [\"pro\"]\n"),
            &env,
        )
        .unwrap();
        assert_eq!(
            config.gates[0].plans,
            ["price_pro"],
            "aliases resolve to price ids"
        );
    }

    #[test]
    fn identity_header_and_subscription_problems_name_their_key() {
        let found = problems(
            "[identity_headers]\nuser_id = \"x user\"\nemail = \"cookie\"\ncustomer = \"x-a\"\nplan = \"X-A\"\n\
             [subscriptions]\nsubscribed_statuses = [\"active\", \"canceled\"]\ncache_ttl_seconds = 0\n",
        );
        for want in [
            "identity_headers.user_id: not a header name",
            "identity_headers.email: cookie is a header the sidecar or the client owns",
            "identity_headers.plan: x-a is already used by another identity header",
            "subscriptions.subscribed_statuses[1]: must be \"active\", \"trialing\", \"past_due\", \"unpaid\", \"incomplete\" or \"paused\", not \"canceled\"",
            "subscriptions.cache_ttl_seconds:",
        ] {
            assert!(found.iter().any(|line| line.starts_with(want)), "{want:?} in {found:?}");
        }
    }

    /// The repo's config.toml is the documented example: every key written
    /// out (`[[auth.api_keys]]` and `[[gates]]`, optional, only in comments), each with its
    /// default exactly as the `Default` impls hold it.
    #[test]
    fn repo_config_toml_writes_every_key_with_its_default() {
        let file: toml::Table = include_str!("../config.toml").parse().unwrap();
        let defaults = RawConfig {
            routes: Some(default_routes()),
            ..RawConfig::default()
        };
        let toml::Value::Table(mut defaults) = toml::Value::try_from(defaults).unwrap() else {
            panic!("the defaults are a table");
        };
        if let Some(toml::Value::Table(auth)) = defaults.get_mut("auth") {
            auth.remove("api_keys");
        }
        // `[[gates]]`, optional, is only in a comment too.
        defaults.remove("gates");
        for (section, want) in &defaults {
            let written = &file.get(section);
            if let (toml::Value::Table(want), Some(toml::Value::Table(written))) = (want, written) {
                if let Some(key) = want.keys().find(|key| !written.contains_key(*key)) {
                    panic!("config.toml does not write {section}.{key}");
                }
            }
            assert_eq!(
                Some(want),
                *written,
                "config.toml's [{section}] is not the defaults"
            );
        }
        let sections: Vec<_> = file.keys().collect();
        assert_eq!(sections, defaults.keys().collect::<Vec<_>>());
    }

    /// The quickstart: the repo's config.toml starts with a test key, the
    /// app's origin and a price from the environment, and says what is
    /// missing with the key alone.
    #[test]
    fn the_repo_config_takes_a_test_key_origin_and_price_from_the_environment() {
        let file = include_str!("../config.toml");
        let quickstart = |name: &str| match name {
            "STRIPE_SECRET_KEY" => Some("sk_test_123".to_string()),
            "APP_ORIGIN" => Some("http://localhost:3000".to_string()),
            "STRIPE_PRICE_ID" => Some("price_123".to_string()),
            "STRIPE_API_BASE" => Some("http://127.0.0.1:12111".to_string()),
            _ => None,
        };
        let config = Config::parse(file, &quickstart).unwrap();
        let origins = &config.checkout.allowed_redirect_origins;
        assert_eq!(origins.len(), 1);
        assert_eq!(origins[0], Origin::parse("http://localhost:3000").unwrap());
        assert_eq!(config.checkout.prices["default"], "price_123");
        assert_eq!(config.stripe.api_base.as_str(), "http://127.0.0.1:12111/");

        let key_only = |name: &str| (name == "STRIPE_SECRET_KEY").then(|| "sk_test_123".into());
        let found = problems_with(file, &key_only);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].starts_with("checkout.allowed_redirect_origins: must list"));
        assert!(found[1].starts_with("checkout.prices: must list"));
        let config = Config::parse(file, &|_| None).unwrap();
        assert_eq!(config.stripe.api_base.as_str(), "https://api.stripe.com/");
        assert!(config.checkout.allowed_redirect_origins.is_empty());
        assert!(config.checkout.prices.is_empty());
    }
}
