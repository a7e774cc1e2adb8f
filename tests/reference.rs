//! `docs/reference.md` held to the code, as `deploy.rs` holds the
//! troubleshooting guide to the messages in `src/`: every configuration
//! key (the code's schema and the repo's `config.toml`, its commented-out
//! `[[...]]` examples included) in its section's table, with the code's
//! default; every environment variable the shipped configuration reads;
//! every default route with its method and action; every error reply the
//! code builds (status and message), and every one the troubleshooting
//! page lists; every metric family with its type, labels and label values;
//! every flag, command and environment variable of `--help`.
//!
//! Each test reads the reference's Markdown tables: a row is found by its
//! first cells (`` `key` ``, the status, the family), so a row that is
//! dropped or goes stale fails the test that needs it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use http::{HeaderValue, Method, Request};
use http_body_util::BodyExt;
use stripe_sidecar::app::{self, State};
use stripe_sidecar::body;
use stripe_sidecar::config::{self, RawApiKey, RawAuth, RawConfig, RawGate, RawRoute};
use stripe_sidecar::error::Error;
use stripe_sidecar::identity::Rejection;
use stripe_sidecar::metrics::{Metrics, StripeOutcome, UpstreamFailure, PROXY};
use stripe_sidecar::routes::{Action, Mode};
use stripe_sidecar::stripe::StripeError;
use stripe_sidecar::Config;

use crate::support::sidecar::binary;
use crate::support::toml_strings;

const REFERENCE: &str = "docs/reference.md";

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// Every key the code reads and every key `config.toml` writes has a row in
/// its section's table (`### [server]`, `### [[gates]]`, ...); the code's
/// default is in the row's default cell.
#[test]
fn every_config_key_is_documented_with_its_default() {
    let reference = read(REFERENCE);
    // One item in each array of tables, so that their keys show.
    let code = RawConfig {
        auth: RawAuth {
            api_keys: vec![RawApiKey::default()],
            ..RawAuth::default()
        },
        gates: vec![RawGate::default()],
        routes: Some(vec![RawRoute {
            status: Some(200),
            default_mode: Some(String::new()),
            forward_to: Some(String::new()),
            ..RawRoute::default()
        }]),
        ..RawConfig::default()
    };
    let code = toml::Value::try_from(&code).expect("the schema serializes");
    let shipped = shipped_config_with_examples();
    let code_keys = keys(code.as_table().unwrap());
    let shipped_keys = keys(&shipped);
    assert!(
        shipped_keys
            .iter()
            .any(|k| k.section == "[[auth.api_keys]]")
            && shipped_keys.iter().any(|k| k.section == "[[gates]]"),
        "config.toml's commented-out examples are read: has their shape changed?"
    );

    let mut problems = Vec::new();
    for (key, source) in code_keys
        .iter()
        .map(|k| (k, "the code"))
        .chain(shipped_keys.iter().map(|k| (k, "config.toml")))
    {
        let Some(block) = section(&reference, |line| {
            line.starts_with("### ") && line.contains(&format!("`{}`", key.section))
        }) else {
            problems.push(format!(
                "no \"### `{}`\" heading ({source} has that section)",
                key.section
            ));
            continue;
        };
        let name = format!("`{}`", key.name);
        let Some(row) = rows(block).into_iter().find(|row| row[0] == name) else {
            problems.push(format!("{}: no row for {name} (in {source})", key.section));
            continue;
        };
        // The code's defaults; routes have none to show (their one item
        // here is made up), arrays of tables are their own sections.
        let default = match &key.value {
            Some(value) if source == "the code" && key.section != "[[routes]]" => value,
            _ => continue,
        };
        let shown = format!("`{default}`");
        if !row.get(2).is_some_and(|cell| cell.contains(&shown)) {
            problems.push(format!(
                "{}: {name}'s default is {shown} in the code, the reference says {:?}",
                key.section,
                row.get(2)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/reference.md is out of step with the configuration:\n{}",
        problems.join("\n")
    );
}

/// Every `${VAR}` the shipped `config.toml` or the code's defaults read
/// has a row in the reference's environment variables table.
#[test]
fn every_environment_variable_of_the_shipped_config_is_documented() {
    let reference = read(REFERENCE);
    let table = section(&reference, |line| line == "## Environment variables")
        .expect("an Environment variables section");
    let documented: Vec<String> = rows(table).into_iter().map(|row| row[0].clone()).collect();
    let shipped: toml::Table = read("config.toml").parse().expect("config.toml is TOML");
    let code = toml::Value::try_from(RawConfig::default()).unwrap();
    let mut values = Vec::new();
    toml_strings(&toml::Value::Table(shipped), &mut values);
    toml_strings(&code, &mut values);
    let mut variables = BTreeSet::new();
    for value in values {
        for used in value.split("${").skip(1) {
            let end = used.find(['}', ':']).expect("${VAR} is closed");
            variables.insert(used[..end].to_string());
        }
    }
    assert!(
        variables.contains("STRIPE_SECRET_KEY"),
        "the variables are found: {variables:?}"
    );
    let missing: Vec<&String> = variables
        .iter()
        .filter(|name| !documented.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/reference.md's Environment variables table lacks {missing:?}"
    );
}

/// A key of the configuration: its section's heading as the reference
/// writes it (`[server]`, `[[gates]]`, `[[auth.api_keys]]`), its name, and
/// its value (`None` for an array of tables, which is a section of its own).
struct Key {
    section: String,
    name: String,
    value: Option<toml::Value>,
}

/// The keys of a whole configuration, section by section.
fn keys(file: &toml::Table) -> Vec<Key> {
    fn array_of_tables(value: &toml::Value) -> Option<Vec<&toml::Table>> {
        let items = value.as_array()?;
        let tables: Vec<&toml::Table> = items.iter().filter_map(|i| i.as_table()).collect();
        (!items.is_empty() && tables.len() == items.len()).then_some(tables)
    }
    fn section_keys(section: String, tables: &[&toml::Table], out: &mut Vec<Key>) {
        for table in tables {
            for (name, value) in table.iter() {
                let nested = array_of_tables(value);
                if let Some(items) = &nested {
                    let inner = section.trim_matches(['[', ']']);
                    section_keys(format!("[[{inner}.{name}]]"), items, out);
                }
                out.push(Key {
                    section: section.clone(),
                    name: name.clone(),
                    value: nested.is_none().then(|| value.clone()),
                });
            }
        }
    }
    let mut out = Vec::new();
    for (name, value) in file {
        match (value, array_of_tables(value)) {
            (toml::Value::Table(table), _) => section_keys(format!("[{name}]"), &[table], &mut out),
            (_, Some(items)) => section_keys(format!("[[{name}]]"), &items, &mut out),
            (other, None) => panic!("a top-level value that is not a section: {name} = {other}"),
        }
    }
    out
}

/// The repo's `config.toml`, with its commented-out `# [[...]]` examples
/// (a `# [[gates]]` line and the `# key = value` lines after it) as
/// written tables.
fn shipped_config_with_examples() -> toml::Table {
    let text = read("config.toml");
    let mut examples = String::new();
    let mut in_example = false;
    for line in text.lines() {
        let uncommented = line.strip_prefix("# ").unwrap_or_default();
        let is_key = uncommented.split_once(" = ").is_some_and(|(key, _)| {
            !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
        if uncommented.starts_with("[[") {
            in_example = true;
        } else if !(in_example && is_key) {
            in_example = false;
            continue;
        }
        examples.push_str(uncommented);
        examples.push('\n');
    }
    format!("{text}\n{examples}")
        .parse()
        .unwrap_or_else(|e| panic!("config.toml with its examples uncommented is not TOML: {e}"))
}

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

/// The default routes table is the code's default routes, each with its
/// method, path, action and `forward_to`; every action has its section and
/// every checkout mode is named.
#[test]
fn every_default_route_and_action_is_documented() {
    let reference = read(REFERENCE);
    let table =
        section(&reference, |line| line == "### Default routes").expect("a Default routes section");
    let documented = rows(table);
    let routes = config::default_routes();
    for route in &routes {
        let action = Action::parse(&route.action).expect("a default route's action");
        let row = documented
            .iter()
            .find(|row| row.get(1) == Some(&format!("`{}`", route.path)))
            .unwrap_or_else(|| panic!("Default routes: no row for `{}`", route.path));
        assert_eq!(
            row[0],
            format!("`{}`", action.method()),
            "{}: method",
            route.path
        );
        assert_eq!(
            row[2],
            format!("`{}`", route.action),
            "{}: action",
            route.path
        );
        if let Some(forward_to) = &route.forward_to {
            assert!(
                row[3].contains(&format!("`forward_to = \"{forward_to}\"`")),
                "{}: forward_to {forward_to}",
                route.path
            );
        }
    }
    assert_eq!(
        documented.len(),
        routes.len(),
        "the Default routes table lists the code's {} default routes, no more",
        routes.len()
    );
    for action in Action::ALL {
        let heading = format!("### `{}`", action.as_str());
        assert!(
            reference.lines().any(|line| line == heading),
            "docs/reference.md has no `{heading}` section"
        );
    }
    for mode in Mode::ALL {
        assert!(
            reference.contains(&format!("`{}`", mode.as_str())),
            "docs/reference.md does not name the mode {}",
            mode.as_str()
        );
    }
}

// ---------------------------------------------------------------------------
// Error replies
// ---------------------------------------------------------------------------

/// Every reply `Error::into_response` can build (every variant, every
/// rejection, every Stripe and app failure) and those of the pipeline
/// itself has a row under Error replies with its status and exact
/// message. The messages of `BadRequest` are in `src/` as literals: the
/// next test reaches them through the troubleshooting page.
#[tokio::test]
async fn every_error_reply_of_the_code_is_documented() {
    let reference = read(REFERENCE);
    let replies = rows(
        section(&reference, |line| line == "## Error replies").expect("an Error replies section"),
    );
    let mut problems = Vec::new();
    let mut responses = Vec::new();
    for error in error_samples() {
        responses.push((format!("{error:?}"), error.into_response()));
    }
    // Through the whole pipeline, with no Stripe key and no app.
    let state = State::new(Config::parse("", &|_| None).expect("an empty config is valid"))
        .expect("the state builds");
    let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let requests = [
        Request::builder()
            .method(Method::CONNECT)
            .uri("example.com:443")
            .header("host", "example.com:443")
            .body(body::full("")),
        Request::post("/echo")
            .header("host", "a.example")
            .header("host", "b.example")
            .body(body::full("")),
        Request::post("/echo").body(body::full("")),
        Request::post("/API/stripe/create-checkout")
            .header("host", "myapp.example")
            .body(body::full("{}")),
        Request::post("/api/stripe/create-checkout")
            .header("host", "myapp.example")
            .body(body::full("{}")),
    ];
    for request in requests {
        let request = request.unwrap();
        let what = format!("{} {}", request.method(), request.uri());
        responses.push((what, app::handle(&state, request, peer).await));
    }
    for (what, response) in responses {
        let allow = response.headers().get("allow").cloned();
        let (status, message) = reply(response).await;
        let shown = match &message {
            Some(message) => format!("`{message}`"),
            None => "(no body)".to_string(),
        };
        let row = replies
            .iter()
            .find(|row| row[0] == status.to_string() && row[1].contains(&shown));
        let Some(row) = row else {
            problems.push(format!("{status} {shown} ({what})"));
            continue;
        };
        if let Some(allow) = allow {
            let allow = format!("`Allow: {}`", allow.to_str().unwrap());
            if !row[2].contains(&allow) {
                problems.push(format!("{status} {shown}: {allow} ({what})"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/reference.md's Error replies lack these (status, `error`):\n{}",
        problems.join("\n")
    );
}

/// Every (status, `error`) row of the troubleshooting page's tables, which
/// `deploy.rs` holds to every message in `src/`, has a row with the same
/// status and message under Error replies.
#[test]
fn every_error_of_the_troubleshooting_page_is_in_the_reference() {
    let guide = read("docs/troubleshooting.md");
    let reference = read(REFERENCE);
    let replies = rows(
        section(&reference, |line| line == "## Error replies").expect("an Error replies section"),
    );
    let mut listed = 0;
    let mut missing = Vec::new();
    for row in rows(&guide) {
        let (Some(status), Some(cell)) = (row.first(), row.get(1)) else {
            continue;
        };
        if status.parse::<u16>().is_err() || !cell.starts_with('`') {
            continue;
        }
        let message = cell.split('`').nth(1).unwrap();
        listed += 1;
        let shown = format!("`{message}`");
        if !replies
            .iter()
            .any(|reply| reply[0] == *status && reply[1].contains(&shown))
        {
            missing.push(format!("{status} {shown}"));
        }
    }
    assert!(
        listed >= 40,
        "the troubleshooting tables are read ({listed} replies): has their shape changed?"
    );
    assert!(
        missing.is_empty(),
        "docs/reference.md's Error replies lack these replies of docs/troubleshooting.md:\n{}",
        missing.join("\n")
    );
}

/// One of every error, built as the code builds them.
fn error_samples() -> Vec<Error> {
    let refused = |status: u16, message: &str| {
        Error::Stripe(StripeError::Refused {
            status,
            kind: "invalid_request_error".into(),
            message: message.into(),
        })
    };
    let mut samples = vec![
        Error::BodyTooLarge,
        Error::BodyTimeout,
        Error::MalformedBody("bad chunk".into()),
        Error::NotFound,
        Error::RateLimited {
            retry_after: Duration::from_secs(1),
        },
        Error::BillingNotConfigured,
        Error::NotSubscribed,
        Error::PlanNotIncluded,
        Error::SeeOther(HeaderValue::from_static("/pricing")),
        Error::WebhookNotConfigured,
        // Stripe's own message is passed on: the reference's example.
        refused(400, "No such price: 'price_123'"),
        refused(404, "No such price: 'price_123'"),
        refused(401, "Invalid API Key provided: sk_test_****1234"),
        refused(403, "The provided key does not have access"),
        Error::Stripe(StripeError::Unavailable(
            "status 500 after 2 retries".into(),
        )),
        Error::Stripe(StripeError::Decode("not JSON".into())),
        Error::LookupUnavailable("status 500".into()),
        Error::Internal("a bug".into()),
    ];
    samples.extend(Action::ALL.map(|action| Error::MethodNotAllowed {
        allow: action.method(),
    }));
    samples.extend(Rejection::ALL.map(Error::Rejected));
    for failure in [
        UpstreamFailure::Connect,
        UpstreamFailure::Request,
        UpstreamFailure::Timeout,
    ] {
        // A new kind of failure does not compile here until it is sampled.
        match failure {
            UpstreamFailure::Connect | UpstreamFailure::Request | UpstreamFailure::Timeout => {}
        }
        samples.push(Error::Upstream {
            failure,
            cause: "connection refused to 127.0.0.1:3000".into(),
        });
    }
    // A new variant does not compile here until it is sampled above (and
    // documented).
    for sample in &samples {
        match sample {
            Error::BadRequest(_) => unreachable!("its messages are literals in src/"),
            Error::Stripe(
                StripeError::Refused { .. } | StripeError::Unavailable(_) | StripeError::Decode(_),
            )
            | Error::BodyTooLarge
            | Error::BodyTimeout
            | Error::MalformedBody(_)
            | Error::NotFound
            | Error::MethodNotAllowed { .. }
            | Error::RateLimited { .. }
            | Error::BillingNotConfigured
            | Error::NotSubscribed
            | Error::PlanNotIncluded
            | Error::SeeOther(_)
            | Error::WebhookNotConfigured
            | Error::Rejected(_)
            | Error::LookupUnavailable(_)
            | Error::Upstream { .. }
            | Error::Internal(_) => {}
        }
    }
    samples
}

/// A reply's status and its JSON `error`, if it has a body.
async fn reply(response: http::Response<body::Body>) -> (u16, Option<String>) {
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    if bytes.is_empty() {
        return (status, None);
    }
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON error");
    let message = json["error"].as_str().expect("an `error` string");
    (status, Some(message.to_string()))
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/// Every family the code registers has a row under Metrics with its type,
/// and every label and label value it can take (all it registers at 0, and
/// every action and Stripe outcome) is named in that row; only the open
/// ones (`status`, `version`, `le`) are not listed value by value.
#[test]
fn every_metric_family_and_label_value_is_documented() {
    let reference = read(REFERENCE);
    let table = rows(section(&reference, |line| line == "## Metrics").expect("a Metrics section"));
    let metrics = Metrics::default();
    for action in Action::ALL {
        metrics.request(action.as_str(), 200, Duration::ZERO);
    }
    metrics.request(PROXY, 200, Duration::ZERO);
    for outcome in stripe_outcomes() {
        metrics.stripe_request("/checkout/sessions", outcome);
    }
    metrics.stripe_request("/not/a/stripe/path", StripeOutcome::Ok);
    let (_, text) = metrics.encode("").expect("the metrics encode");

    // `# TYPE name type`, longest names first so a sample finds its own.
    let mut families: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split_once(' '))
        .collect();
    families.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    assert!(families.len() >= 12, "the families are found:\n{text}");
    let mut problems = Vec::new();
    let mut labels: Vec<(&str, String, String)> = Vec::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = families
            .iter()
            .find(|(f, _)| name == *f || name.starts_with(&format!("{f}_")))
            .unwrap_or_else(|| panic!("a sample of no family: {line}"))
            .0;
        let Some(pairs) = line
            .split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
        else {
            continue;
        };
        for pair in pairs.0.split(',') {
            let (label, value) = pair.split_once('=').expect("label=\"value\"");
            labels.push((
                family,
                label.to_string(),
                value.trim_matches('"').to_string(),
            ));
        }
    }
    for (family, kind) in &families {
        let row = table.iter().find(|row| row[0] == format!("`{family}`"));
        match row {
            None => problems.push(format!("no row for `{family}`")),
            Some(row) if row[1] != *kind => problems.push(format!(
                "`{family}` is a {kind}, the reference says {}",
                row[1]
            )),
            Some(_) => {}
        }
    }
    for (family, label, value) in labels {
        if label == "le" {
            continue;
        }
        let Some(row) = table.iter().find(|row| row[0] == format!("`{family}`")) else {
            continue;
        };
        let open = ["status", "version"].contains(&label.as_str());
        for needed in [Some(&label), (!open).then_some(&value)]
            .into_iter()
            .flatten()
        {
            if !row[2].contains(&format!("`{needed}`")) {
                problems.push(format!(
                    "`{family}`: `{needed}` (label {label}) is not named"
                ));
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(
        problems.is_empty(),
        "docs/reference.md's Metrics table is out of step with src/metrics.rs:\n{}",
        problems.join("\n")
    );
}

/// Every outcome of a Stripe request.
fn stripe_outcomes() -> Vec<StripeOutcome> {
    use StripeOutcome::*;
    let all = vec![
        Ok,
        NetworkError,
        Timeout,
        AuthError,
        Conflict,
        RateLimited,
        ServerError,
        ClientError,
    ];
    for outcome in &all {
        // A new outcome does not compile here until it is listed above.
        match outcome {
            Ok | NetworkError | Timeout | AuthError | Conflict | RateLimited | ServerError
            | ClientError => {}
        }
    }
    all
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/// Every long flag, command and environment variable the binary's
/// `--help` (and `demo --help`) names is in the reference.
#[test]
fn every_command_line_flag_and_command_is_documented() {
    let reference = read(REFERENCE);
    let help = |args: &[&str]| {
        let output = Command::new(binary())
            .args(args)
            .output()
            .expect("run stripe-sidecar");
        assert!(output.status.success(), "stripe-sidecar {args:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let mut needed = BTreeSet::new();
    for text in [help(&["--help"]), help(&["demo", "--help"])] {
        for (at, _) in text.match_indices("--") {
            let flag: String = text[at + 2..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                .collect();
            if !flag.is_empty() {
                needed.insert(format!("--{flag}"));
            }
        }
        for env in text.split("[env: ").skip(1) {
            needed.insert(env.split(['=', ']']).next().unwrap().to_string());
        }
        let commands = text.split("Commands:\n").nth(1).unwrap_or_default();
        // `  NAME  about`; a wrapped about continues further in.
        for line in commands.lines().take_while(|line| !line.trim().is_empty()) {
            let Some(entry) = line.strip_prefix("  ").filter(|e| !e.starts_with(' ')) else {
                continue;
            };
            let command = entry.split_whitespace().next().unwrap();
            if command != "help" {
                needed.insert(command.to_string());
            }
        }
    }
    for expected in [
        "--config",
        "--check",
        "--port",
        "demo",
        "STRIPE_SIDECAR_CONFIG",
    ] {
        assert!(needed.contains(expected), "--help is read: {needed:?}");
    }
    let command_line =
        section(&reference, |line| line == "## Command line").expect("a Command line section");
    let missing: Vec<&String> = needed
        .iter()
        .filter(|name| !command_line.contains(&format!("`{name}")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/reference.md's Command line section does not name {missing:?}"
    );
}

// ---------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------

fn read(relative: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text under the first heading `is_heading` picks, up to the next
/// heading of the same or a higher level (fenced code skipped).
fn section(text: &str, is_heading: impl Fn(&str) -> bool) -> Option<&str> {
    let level = |line: &str| {
        let hashes = line.bytes().take_while(|b| *b == b'#').count();
        (hashes > 0 && line[hashes..].starts_with(' ')).then_some(hashes)
    };
    let mut offset = 0;
    let mut start = None;
    let mut fenced = false;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end();
        if bare.starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            match (start, level(bare)) {
                (None, Some(found)) if is_heading(bare) => start = Some((offset, found)),
                (Some((at, wanted)), Some(found)) if found <= wanted => {
                    return Some(&text[at..offset]);
                }
                _ => {}
            }
        }
        offset += line.len();
    }
    start.map(|(at, _)| &text[at..])
}

/// The rows of the Markdown tables in `text`, each as its trimmed cells
/// (a `\|` stays in its cell); header rows and separators left out.
fn rows(text: &str) -> Vec<Vec<String>> {
    let is_separator = |cells: &[String]| {
        cells
            .iter()
            .all(|c| !c.is_empty() && c.chars().all(|c| c == '-' || c == ':'))
    };
    let table: Vec<Vec<String>> = text.lines().filter_map(cells).collect();
    let mut out = Vec::new();
    for (at, row) in table.iter().enumerate() {
        let is_header = table.get(at + 1).is_some_and(|next| is_separator(next));
        if !is_header && !is_separator(row) {
            out.push(row.clone());
        }
    }
    out
}

/// The cells of a table row, trimmed; `None` for a line that is not one.
fn cells(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('|')?;
    let mut cells = vec![String::new()];
    let mut escaped = false;
    for c in inner.chars() {
        match c {
            '|' if !escaped => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
        escaped = c == '\\';
    }
    if cells.last().is_some_and(|cell| cell.trim().is_empty()) {
        cells.pop();
    }
    Some(cells.into_iter().map(|c| c.trim().to_string()).collect())
}
