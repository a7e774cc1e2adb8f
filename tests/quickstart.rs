//! docs/quickstart.md, run as written: every command on the page that
//! needs no Stripe account is executed, in page order, against the real
//! binary with the repository's own `config.toml` and exactly the
//! environment the page exports. Only two things differ from a reader's
//! terminal:
//!
//! - a value the reader pastes (`export STRIPE_SECRET_KEY=sk_test_...`)
//!   gets a made-up tail in place of its `...`;
//! - `STRIPE_API_BASE` points at the fake Stripe (`support::stripe`), which
//!   the page leaves unset, and the fake holds what the page's Stripe
//!   account would: the price and, after "paying", a customer with an
//!   active subscription;
//! - the commands run in a temporary folder holding a copy of
//!   `config.toml` in which only `server.listen` and `server.admin_listen`
//!   are changed (to `127.0.0.1:0`, so parallel tests never collide). The
//!   page's `localhost:8080` is checked against the original `listen` port
//!   and then sent to the port the binary reports in its ready line.
//!
//! The page is read from its ```` ```sh ```` blocks with a small shell
//! reader (words, quotes, `\` line continuations, `#` comments,
//! `$VAR`, `$(...)` and here-documents). Each command is run (`export`,
//! `cp`, `cat >> FILE <<EOF`, `cargo run --release [-- ARGS]`, `curl`) or
//! skipped because it needs a Stripe account (`stripe ...`, whose
//! `listen --forward-to` URL is still checked to be the webhook route).
//! Any other command fails the test, so a new command on the page is
//! either run here or consciously skipped. `$(...)` is evaluated only for
//! the page's own key commands (`openssl rand -hex 32`, and `printf %s
//! "$VAR" | sha256sum | cut -d' ' -f1`), computed in Rust; nothing is run
//! through a shell.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::events;
use crate::support::sidecar::binary;
use crate::support::stripe::FakeStripe;

const PAGE: &str = "docs/quickstart.md";
/// The end of a value the reader fills in (`sk_test_...`), and what the
/// test fills in instead (Stripe refuses ids with dots).
const PLACEHOLDER: &str = "...";
const FILLED: &str = "Quickstart4242";
/// What the page's `cus_...` stands for: the customer its payment made.
const CUSTOMER_PLACEHOLDER: &str = "cus_...";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_runs_as_written() {
    let page = std::fs::read_to_string(repo(PAGE)).expect("docs/quickstart.md");
    let commands = commands(&page);
    assert!(!commands.is_empty(), "{PAGE} has sh blocks");

    let stripe = FakeStripe::start().await;
    let mut run = Run::new(&stripe);
    for command in &commands {
        run.command(command).await;
    }
    run.finish(&page).await;
}

// ---------------------------------------------------------------------------
// Running the page
// ---------------------------------------------------------------------------

/// The state of a reader working through the page.
struct Run<'a> {
    stripe: &'a FakeStripe,
    /// The repository root as the reader sees it: a copy of `config.toml`
    /// with only the listen addresses changed.
    dir: tempfile::TempDir,
    /// `server.listen`'s port in the repository's `config.toml`, the port
    /// the page must send its requests to.
    port: u16,
    /// What the page has exported so far.
    env: BTreeMap<String, String>,
    /// The sidecar now running (a new `cargo run` stops the previous one,
    /// as Ctrl-C would).
    server: Option<Server>,
    checks: usize,
    starts: usize,
    /// `stripe listen --forward-to` URLs, checked once a sidecar runs.
    forward_to: Vec<String>,
    checkout: Option<Value>,
    subscription: Option<Value>,
    paid_customer: Option<String>,
}

impl<'a> Run<'a> {
    fn new(stripe: &'a FakeStripe) -> Run<'a> {
        let original = std::fs::read_to_string(repo("config.toml")).expect("config.toml");
        let table: toml::Table = original.parse().expect("config.toml is TOML");
        let address = |key: &str| -> String {
            table["server"][key]
                .as_str()
                .unwrap_or_else(|| panic!("config.toml sets server.{key}"))
                .to_string()
        };
        let (listen, admin) = (address("listen"), address("admin_listen"));
        let port = listen
            .parse::<SocketAddr>()
            .expect("server.listen is an address")
            .port();
        let mut copy = original.clone();
        for address in [&listen, &admin] {
            let quoted = format!("\"{address}\"");
            assert_eq!(
                copy.matches(&quoted).count(),
                1,
                "config.toml names {quoted} once"
            );
            copy = copy.replacen(&quoted, "\"127.0.0.1:0\"", 1);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.toml"), copy).expect("write config.toml");
        Run {
            stripe,
            dir,
            port,
            env: BTreeMap::new(),
            server: None,
            checks: 0,
            starts: 0,
            forward_to: Vec::new(),
            checkout: None,
            subscription: None,
            paid_customer: None,
        }
    }

    async fn command(&mut self, command: &ShellCommand) {
        let words: Vec<String> = command.words.iter().map(|w| self.expand(w)).collect();
        let shown = words.join(" ");
        match words[0].as_str() {
            "export" => {
                assert_eq!(words.len(), 2, "one export a line: {shown}");
                let (name, value) = words[1]
                    .split_once('=')
                    .unwrap_or_else(|| panic!("export NAME=VALUE: {shown}"));
                assert!(
                    name != "STRIPE_API_BASE",
                    "the page leaves STRIPE_API_BASE to Stripe's default"
                );
                // `sk_test_...`: the reader pastes their own value there.
                let value = match value.strip_suffix(PLACEHOLDER) {
                    Some(prefix) => format!("{prefix}{FILLED}"),
                    None => value.to_string(),
                };
                self.env.insert(name.to_string(), value);
            }
            "cargo" => {
                let args = match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                    ["cargo", "run", "--release"] => Vec::new(),
                    ["cargo", "run", "--release", "--", ref rest @ ..] => rest.to_vec(),
                    _ => panic!("a cargo command the quickstart test does not know: {shown}"),
                };
                let args: Vec<String> = args.into_iter().map(str::to_string).collect();
                if args.iter().any(|a| a == "--check") {
                    self.check(&args);
                } else {
                    self.start(&args);
                }
            }
            "cp" => {
                assert_eq!(words.len(), 3, "cp SOURCE TARGET: {shown}");
                std::fs::copy(self.path(&words[1]), self.path(&words[2]))
                    .unwrap_or_else(|e| panic!("{shown}: {e}"));
            }
            "cat" => {
                assert_eq!(
                    words.len(),
                    1,
                    "the page's cat appends a here-document: {shown}"
                );
                let (operator, file) = command
                    .redirect
                    .as_ref()
                    .unwrap_or_else(|| panic!("cat without >> FILE: {shown}"));
                assert_eq!(operator, ">>", "{shown}");
                let heredoc = command
                    .heredoc
                    .as_ref()
                    .unwrap_or_else(|| panic!("cat without <<EOF: {shown}"));
                let text = if heredoc.expand {
                    self.expand_text(&heredoc.body)
                } else {
                    heredoc.body.clone()
                };
                let path = self.path(&self.expand(file));
                let mut old = std::fs::read_to_string(&path).unwrap_or_default();
                old.push_str(&text);
                std::fs::write(&path, old).unwrap();
            }
            "curl" => self.curl(&words).await,
            "stripe" => {
                // Needs a Stripe account: not run. Where it points the
                // webhooks is checked once a sidecar runs.
                if words.get(1).map(String::as_str) == Some("listen") {
                    let at = words
                        .iter()
                        .position(|w| w == "--forward-to")
                        .unwrap_or_else(|| panic!("stripe listen --forward-to: {shown}"));
                    self.forward_to.push(words[at + 1].clone());
                }
            }
            other => panic!(
                "{PAGE} runs `{other}`, which tests/quickstart.rs neither runs nor skips: {shown}"
            ),
        }
    }

    /// `cargo run --release -- --check ...`: exits 0 and prints the
    /// configuration with the page's values in it.
    fn check(&mut self, args: &[String]) {
        let output = self
            .binary()
            .args(args)
            .output()
            .expect("run stripe-sidecar --check");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "`cargo run --release -- {}` with the page's environment {:?} fails:\n{stderr}",
            args.join(" "),
            self.env.keys().collect::<Vec<_>>()
        );
        let config: toml::Table = stdout.parse().expect("--check prints TOML");
        let get = |name: &str| {
            self.env
                .get(name)
                .unwrap_or_else(|| panic!("the page exports {name} before --check"))
                .clone()
        };
        assert_eq!(
            config["checkout"]["allowed_redirect_origins"],
            toml::Value::Array(vec![get("APP_ORIGIN").into()]),
            "checkout.allowed_redirect_origins is the page's APP_ORIGIN"
        );
        assert_eq!(
            config["checkout"]["prices"]["default"].as_str(),
            Some(get("STRIPE_PRICE_ID").as_str()),
            "checkout.prices.default is the page's STRIPE_PRICE_ID"
        );
        assert_eq!(
            config["stripe"]["secret_key"].as_str(),
            Some("<redacted>"),
            "stripe.secret_key is set, from the page's STRIPE_SECRET_KEY"
        );
        assert!(stderr.contains(": ok"), "--check says ok: {stderr}");
        self.checks += 1;
    }

    /// `cargo run --release [-- ARGS]`: the sidecar, until the next start.
    fn start(&mut self, args: &[String]) {
        self.server = None; // Ctrl-C
                            // Stripe holds the price the page exported.
        if let Some(price) = self.env.get("STRIPE_PRICE_ID") {
            self.stripe.add_price(price, true);
        }
        let mut command = self.binary();
        command.args(args);
        self.server = Some(Server::start(command, args));
        self.starts += 1;
    }

    async fn curl(&mut self, words: &[String]) {
        let shown = words.join(" ");
        let mut method = None;
        let mut headers = Vec::new();
        let mut data = None;
        let mut url = None;
        let mut rest = words[1..].iter();
        while let Some(word) = rest.next() {
            let mut value = || {
                rest.next()
                    .unwrap_or_else(|| panic!("{word} needs a value: {shown}"))
                    .clone()
            };
            match word.as_str() {
                "-s" => {}
                "-X" => method = Some(value()),
                "-H" => {
                    let header = value();
                    let (name, value) = header
                        .split_once(':')
                        .unwrap_or_else(|| panic!("-H 'Name: value': {header}"));
                    headers.push((name.trim().to_string(), value.trim().to_string()));
                }
                "-d" => data = Some(value()),
                flag if flag.starts_with('-') => {
                    panic!("a curl option the quickstart test does not read: {flag} in {shown}")
                }
                _ => {
                    assert!(url.is_none(), "one URL: {shown}");
                    url = Some(word.clone());
                }
            }
        }
        let url = url.unwrap_or_else(|| panic!("curl without a URL: {shown}"));
        // curl's -d means POST unless -X says otherwise.
        let method = method.unwrap_or(if data.is_some() { "POST" } else { "GET" }.into());
        let url = url.strip_prefix("http://").unwrap_or(&url);
        let (authority, path) = url.split_at(url.find('/').unwrap_or(url.len()));
        let (host, port) = authority
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("a host:port in {url}"));
        assert!(
            ["localhost", "127.0.0.1"].contains(&host),
            "the page calls the sidecar on this machine: {url}"
        );
        assert_eq!(
            port.parse::<u16>().ok(),
            Some(self.port),
            "the page calls config.toml's server.listen port: {url}"
        );
        let mut path = path.to_string();
        if path.contains(CUSTOMER_PLACEHOLDER) {
            // The customer the page's payment created.
            let customer = self.pay();
            path = path.replace(CUSTOMER_PLACEHOLDER, &customer);
        }
        let server = self
            .server
            .as_ref()
            .unwrap_or_else(|| panic!("curl before the sidecar is started: {shown}"));
        let client = reqwest::Client::new();
        let mut request = client.request(
            method.parse().expect("an HTTP method"),
            format!("http://{}{path}", server.addr),
        );
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        if let Some(data) = &data {
            request = request.body(data.clone());
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{shown}: {e}"));
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{shown}\nanswered {status} {body}");
        let reply: Value = serde_json::from_str(&body).expect("a JSON reply");

        if path.contains("checkout") {
            let url = reply["url"].as_str().unwrap_or_default();
            assert!(
                url.starts_with("https://checkout.stripe.com/"),
                "the page's checkout curl returns a Checkout URL: {reply}"
            );
            assert!(reply["sessionId"].as_str().unwrap().starts_with("cs_"));
            // What reached Stripe is what the page asked for.
            let body: Value = serde_json::from_str(data.as_deref().unwrap()).unwrap();
            let sent = self
                .stripe
                .requests()
                .into_iter()
                .rfind(|r| r.path == "/v1/checkout/sessions")
                .expect("the sidecar created a Checkout Session");
            assert_eq!(
                sent.field("line_items[0][price]"),
                self.env.get("STRIPE_PRICE_ID").map(String::as_str),
                "the page's price alias is STRIPE_PRICE_ID"
            );
            assert_eq!(sent.field("mode"), body["mode"].as_str());
            assert_eq!(sent.field("success_url"), body["successUrl"].as_str());
            assert_eq!(sent.field("cancel_url"), body["cancelUrl"].as_str());
            self.checkout = Some(reply);
        } else if path.contains("subscription") {
            assert_eq!(
                reply["customerId"].as_str(),
                self.paid_customer.as_deref(),
                "{reply}"
            );
            assert_eq!(reply["subscribed"], true, "{reply}");
            assert_eq!(reply["status"], "active", "{reply}");
            assert_eq!(reply["plan"], "default", "{reply}");
            self.subscription = Some(reply);
        } else {
            panic!("a curl the quickstart test does not check: {shown}");
        }
    }

    /// What paying on Stripe's checkout page made: a customer with an
    /// active subscription to the page's price.
    fn pay(&mut self) -> String {
        if let Some(customer) = &self.paid_customer {
            return customer.clone();
        }
        let price = self
            .env
            .get("STRIPE_PRICE_ID")
            .expect("STRIPE_PRICE_ID")
            .clone();
        let customer = "cus_QuickstartPaid1".to_string();
        self.stripe
            .add_customer(&customer, Some("jenny.rosen@example.com"), &[]);
        let _subscription = self.stripe.add_subscription(&customer, &[&price], "active");
        self.paid_customer = Some(customer.clone());
        customer
    }

    /// After the page: everything it promises happened, and `stripe
    /// listen` forwards to the webhook route, with the page's secret.
    async fn finish(&mut self, page: &str) {
        assert_eq!(self.checks, 1, "the page runs --check once");
        assert!(self.starts >= 1, "the page starts the sidecar");
        assert!(self.checkout.is_some(), "the page's checkout curl ran");
        assert!(
            self.subscription.is_some(),
            "the page's subscription curl ran"
        );
        assert!(
            page.contains("\"url\":\"https://checkout.stripe.com/"),
            "the page shows the Checkout URL its curl returns"
        );
        assert!(
            page.contains("\"subscribed\":true") && page.contains("\"plan\":\"default\""),
            "the page shows the subscription state its curl returns"
        );

        assert_eq!(self.forward_to.len(), 1, "the page runs stripe listen once");
        let target = self.forward_to[0].clone();
        let (authority, path) = target.split_at(target.find('/').expect("a path"));
        assert_eq!(
            authority,
            format!("localhost:{}", self.port),
            "stripe listen forwards to the sidecar"
        );
        let server = self.server.as_ref().expect("a sidecar runs");
        let url = format!("http://{}{path}", server.addr);
        let client = reqwest::Client::new();
        let unsigned = client.post(&url).body("{}").send().await.unwrap();
        let status = unsigned.status().as_u16();
        let body = unsigned.text().await.unwrap();
        assert_eq!(
            (status, body.contains("Missing Stripe-Signature header")),
            (400, true),
            "{path} is the webhook route, with a secret: {status} {body}"
        );
        // Signed with the page's STRIPE_WEBHOOK_SECRET: verified (then
        // forwarded to the app, whatever that answers).
        let secret = self
            .env
            .get("STRIPE_WEBHOOK_SECRET")
            .expect("the page exports STRIPE_WEBHOOK_SECRET");
        let event = br#"{"id":"evt_quickstart","object":"event","type":"customer.created"}"#;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let signed = client
            .post(&url)
            .header(
                "stripe-signature",
                events::sign(secret, now.as_secs(), event),
            )
            .body(event.to_vec())
            .send()
            .await
            .unwrap();
        let status = signed.status().as_u16();
        let body = signed.text().await.unwrap();
        assert!(
            ![400, 503].contains(&status),
            "an event signed with the page's STRIPE_WEBHOOK_SECRET is verified: {status} {body}"
        );
    }

    /// The binary as the page's `cargo run --release` runs it: in the
    /// reader's folder, with exactly the page's environment plus
    /// `STRIPE_API_BASE`.
    fn binary(&self) -> Command {
        let mut command = Command::new(binary());
        command
            .current_dir(self.dir.path())
            .env_clear()
            .envs(&self.env)
            .env("STRIPE_API_BASE", self.stripe.url());
        command
    }

    fn path(&self, name: &str) -> PathBuf {
        assert!(
            !name.contains('/') && !name.starts_with('.'),
            "the page's files are in the repository's root: {name}"
        );
        self.dir.path().join(name)
    }

    fn expand(&self, word: &Word) -> String {
        word.parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.clone(),
                Part::Var(name) => self.var(name),
                Part::Command(command) => self.substitute(command),
            })
            .collect()
    }

    /// A here-document's body: `$VAR`, `${VAR}` and `$(...)` expanded.
    fn expand_text(&self, text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if matches!(chars.peek(), Some('$' | '\\' | '`')) => {
                    out.push(chars.next().unwrap())
                }
                '$' => match read_dollar(&mut chars) {
                    Some(Part::Var(name)) => out.push_str(&self.var(&name)),
                    Some(Part::Command(command)) => out.push_str(&self.substitute(&command)),
                    _ => out.push('$'),
                },
                c => out.push(c),
            }
        }
        out
    }

    fn var(&self, name: &str) -> String {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("{PAGE} uses ${name} before it exports it"))
            .clone()
    }

    /// The page's `$(...)`: only the commands it is known to use, computed
    /// here.
    fn substitute(&self, command: &str) -> String {
        let command = command.trim();
        if command == "openssl rand -hex 32" {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            return hex::encode(Sha256::digest(format!("{nanos:?}{:?}", self.dir.path())));
        }
        if let Some(name) = command
            .strip_prefix("printf %s \"$")
            .and_then(|r| r.strip_suffix("\" | sha256sum | cut -d' ' -f1"))
        {
            return hex::encode(Sha256::digest(self.var(name)));
        }
        panic!("{PAGE} substitutes $({command}), which tests/quickstart.rs does not compute")
    }
}

/// The sidecar binary, running until dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts `command` and waits for its ready line to learn the port.
    fn start(mut command: Command, args: &[String]) -> Server {
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stripe-sidecar");
        // Owned at once, so a failed start still kills and reaps it.
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let (send, lines) = mpsc::channel();
        for stream in [
            Box::new(server.child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(server.child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
        ] {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if send.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        drop(send); // the channel closes when the process does
        let mut seen = Vec::new();
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| {
                    panic!(
                        "`cargo run --release -- {}` never got ready:\n{}",
                        args.join(" "),
                        seen.join("\n")
                    )
                });
            if let Ok(json) = serde_json::from_str::<Value>(&line) {
                if json["message"] == "stripe-sidecar ready" {
                    server.addr = json["listen"].as_str().unwrap().parse().unwrap();
                    // Keep draining the output so the child never blocks.
                    std::thread::spawn(move || while lines.recv().is_ok() {});
                    return server;
                }
            }
            seen.push(line);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

// ---------------------------------------------------------------------------
// Reading the page's shell
// ---------------------------------------------------------------------------

/// One shell command: its words, its `>`/`>>` redirect and here-document.
#[derive(Debug, Default)]
struct ShellCommand {
    words: Vec<Word>,
    redirect: Option<(String, Word)>,
    heredoc: Option<Heredoc>,
}

#[derive(Debug)]
struct Heredoc {
    body: String,
    /// Unquoted delimiter: `$VAR` and `$(...)` in the body are expanded.
    expand: bool,
}

#[derive(Debug, Default, Clone)]
struct Word {
    parts: Vec<Part>,
    quoted: bool,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Var(String),
    Command(String),
}

impl Word {
    fn push(&mut self, c: char) {
        match self.parts.last_mut() {
            Some(Part::Text(text)) => text.push(c),
            _ => self.parts.push(Part::Text(c.to_string())),
        }
    }

    fn literal(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                other => panic!("a literal word, not {other:?}"),
            })
            .collect()
    }
}

/// The commands of every ```` ```sh ```` block of `page`, in order.
fn commands(page: &str) -> Vec<ShellCommand> {
    let mut blocks = Vec::new();
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("```") {
            let language = line.trim_start().trim_start_matches('`').trim();
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.trim_start().starts_with("```"))
                .collect();
            if ["sh", "bash", "shell", "console"].contains(&language) {
                blocks.push(body.join("\n") + "\n");
            }
        }
    }
    blocks.iter().flat_map(|b| parse_block(b)).collect()
}

/// `$NAME`, `${NAME}` or `$(...)` after a `$` (already read); `None`
/// (nothing consumed) when the `$` is literal.
fn read_dollar(chars: &mut std::iter::Peekable<std::str::Chars>) -> Option<Part> {
    match chars.peek() {
        Some('(') => {
            chars.next();
            let mut depth = 1;
            let mut inner = String::new();
            let mut quote = None;
            for c in chars.by_ref() {
                match (quote, c) {
                    (None, '\'' | '"') => quote = Some(c),
                    (Some(q), c) if c == q => quote = None,
                    (None, '(') => depth += 1,
                    (None, ')') => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(Part::Command(inner));
                        }
                    }
                    _ => {}
                }
                inner.push(c);
            }
            panic!("unclosed $({inner}");
        }
        Some('{') => {
            chars.next();
            let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
            Some(Part::Var(name))
        }
        Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
            let mut name = String::new();
            while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
                name.push(c);
            }
            Some(Part::Var(name))
        }
        _ => None,
    }
}

/// The commands of one block of shell.
fn parse_block(text: &str) -> Vec<ShellCommand> {
    let mut commands = Vec::new();
    let mut command = ShellCommand::default();
    let mut word: Option<Word> = None;
    // The operator waiting for its word: ">", ">>" or "<<".
    let mut pending: Option<String> = None;
    let mut heredoc_delimiter: Option<Word> = None;
    let mut chars = text.chars().peekable();

    fn end_word(
        word: &mut Option<Word>,
        pending: &mut Option<String>,
        command: &mut ShellCommand,
        heredoc_delimiter: &mut Option<Word>,
    ) {
        let Some(done) = word.take() else { return };
        match pending.take().as_deref() {
            Some("<<") => *heredoc_delimiter = Some(done),
            Some(operator) => command.redirect = Some((operator.to_string(), done)),
            None => command.words.push(done),
        }
    }

    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'\n') => {
                chars.next();
            }
            '\\' => word
                .get_or_insert_with(Word::default)
                .push(chars.next().unwrap()),
            ' ' | '\t' => end_word(
                &mut word,
                &mut pending,
                &mut command,
                &mut heredoc_delimiter,
            ),
            '\n' => {
                end_word(
                    &mut word,
                    &mut pending,
                    &mut command,
                    &mut heredoc_delimiter,
                );
                assert!(pending.is_none(), "an operator without its word in {text}");
                if let Some(delimiter) = heredoc_delimiter.take() {
                    let end = delimiter.literal();
                    let mut body = String::new();
                    loop {
                        let line: String = chars.by_ref().take_while(|c| *c != '\n').collect();
                        if line == end {
                            break;
                        }
                        assert!(
                            chars.peek().is_some() || !line.is_empty(),
                            "here-document without its {end} line"
                        );
                        body.push_str(&line);
                        body.push('\n');
                    }
                    command.heredoc = Some(Heredoc {
                        body,
                        expand: !delimiter.quoted,
                    });
                }
                if !command.words.is_empty() {
                    commands.push(std::mem::take(&mut command));
                }
            }
            '#' if word.is_none() => while chars.next_if(|c| *c != '\n').is_some() {},
            '\'' => {
                let w = word.get_or_insert_with(Word::default);
                w.quoted = true;
                w.parts.push(Part::Text(String::new()));
                for c in chars.by_ref().take_while(|c| *c != '\'') {
                    w.push(c);
                }
            }
            '"' => {
                let w = word.get_or_insert_with(Word::default);
                w.quoted = true;
                w.parts.push(Part::Text(String::new()));
                loop {
                    match chars.next().expect("a closing \"") {
                        '"' => break,
                        '\\' if matches!(chars.peek(), Some('"' | '\\' | '$' | '`')) => {
                            w.push(chars.next().unwrap())
                        }
                        '$' => match read_dollar(&mut chars) {
                            Some(part) => w.parts.push(part),
                            None => w.push('$'),
                        },
                        c => w.push(c),
                    }
                }
            }
            '$' => {
                let w = word.get_or_insert_with(Word::default);
                match read_dollar(&mut chars) {
                    Some(part) => w.parts.push(part),
                    None => w.push('$'),
                }
            }
            '>' | '<' => {
                end_word(
                    &mut word,
                    &mut pending,
                    &mut command,
                    &mut heredoc_delimiter,
                );
                let mut operator = c.to_string();
                if chars.peek() == Some(&c) {
                    operator.push(chars.next().unwrap());
                }
                assert!(
                    [">", ">>", "<<"].contains(&operator.as_str()),
                    "the shell reader does not know {operator}"
                );
                pending = Some(operator);
            }
            '|' | ';' | '&' | '`' => {
                panic!("the page's shell uses {c:?}, which tests/quickstart.rs does not read")
            }
            c => word.get_or_insert_with(Word::default).push(c),
        }
    }
    end_word(
        &mut word,
        &mut pending,
        &mut command,
        &mut heredoc_delimiter,
    );
    if !command.words.is_empty() {
        commands.push(command);
    }
    commands
}

#[test]
fn the_shell_reader_reads_what_the_page_writes() {
    let commands = parse_block(
        "# a comment\nexport A=x  # trailing\ncurl -s -X POST localhost:8080/p \\\n  -H 'a: b' \\\n  -d '{\"k\":\"v w\"}'\n\
         export K=$(openssl rand -hex 32)\ncat >> f.toml <<EOF\nsha = \"$(printf %s \"$K\" | sha256sum | cut -d' ' -f1)\"\nEOF\n\
         curl \"h:1/s?c=cus_...\" -H \"Authorization: Bearer $K\"\n",
    );
    let literal = |c: &ShellCommand| -> Vec<String> {
        c.words
            .iter()
            .map(|w| {
                w.parts
                    .iter()
                    .map(|p| match p {
                        Part::Text(t) => t.clone(),
                        Part::Var(v) => format!("<{v}>"),
                        Part::Command(c) => format!("<({c})>"),
                    })
                    .collect()
            })
            .collect()
    };
    assert_eq!(commands.len(), 5, "{commands:#?}");
    assert_eq!(literal(&commands[0]), ["export", "A=x"]);
    assert_eq!(
        literal(&commands[1]),
        [
            "curl",
            "-s",
            "-X",
            "POST",
            "localhost:8080/p",
            "-H",
            "a: b",
            "-d",
            "{\"k\":\"v w\"}"
        ]
    );
    assert_eq!(
        literal(&commands[2]),
        ["export", "K=<(openssl rand -hex 32)>"]
    );
    assert_eq!(literal(&commands[3]), ["cat"]);
    let heredoc = commands[3].heredoc.as_ref().unwrap();
    assert!(heredoc.expand);
    assert_eq!(
        heredoc.body,
        "sha = \"$(printf %s \"$K\" | sha256sum | cut -d' ' -f1)\"\n"
    );
    assert_eq!(commands[3].redirect.as_ref().unwrap().1.literal(), "f.toml");
    assert_eq!(
        literal(&commands[4]),
        ["curl", "h:1/s?c=cus_...", "-H", "Authorization: Bearer <K>"]
    );
}
