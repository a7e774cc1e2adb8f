//! A real headless Chromium (Debian's `chromium`), driven over the
//! DevTools protocol, for the browser test of the demo.
//!
//! Hand-written on purpose: the test needs five protocol methods
//! (`Page.navigate`, `Runtime.evaluate`, `Input.dispatchMouseEvent`,
//! `Page.captureScreenshot`, `Emulation.setDeviceMetricsOverride`), which
//! are a JSON message each over the WebSocket client the tests already use;
//! the driver crates (chromiumoxide, headless_chrome) generate bindings for
//! the whole protocol and would add minutes to every build.
//!
//! Without a `chromium` on the PATH (or named by `CHROMIUM`),
//! [`Chromium::start`] returns `None` and the test says it was skipped,
//! unless `STRIPE_SIDECAR_REQUIRE_BROWSER=1` (set by `.ci/run`), which
//! makes a missing browser a failure.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a page may take to show what a step waits for.
const WAIT: Duration = Duration::from_secs(20);

pub struct Chromium {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Chromium {
    /// Starts a headless browser with a fresh profile, or `None` (after
    /// saying so) when there is none and CI does not require one.
    pub fn start(test: &str) -> Option<(Chromium, String)> {
        let program = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_string());
        if Command::new(&program).arg("--version").output().is_err() {
            let why = format!("{program} is not on the PATH (apt-get install chromium)");
            if std::env::var("STRIPE_SIDECAR_REQUIRE_BROWSER").as_deref() == Ok("1") {
                panic!("{test}: {why}");
            }
            eprintln!("SKIPPED {test}: {why}");
            return None;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(&program)
            .args([
                "--headless=new",
                // Root in a container has no user namespaces for the sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let endpoint = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("DevTools listening on ") {
                        break url.trim().to_string();
                    }
                }
                _ => panic!("chromium exited before it listened"),
            }
        };
        // Keep draining stderr so the browser never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Some((
            Chromium {
                child,
                _profile: profile,
            },
            endpoint,
        ))
    }
}

/// One browser tab.
pub struct Page {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Page {
    /// Attaches to the tab the browser opened at start, `endpoint` being
    /// the browser's DevTools address.
    pub async fn open(endpoint: &str) -> Page {
        let http = endpoint
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .expect("DevTools address");
        let targets = reqwest::get(format!("http://{http}/json/list"))
            .await
            .expect("DevTools target list")
            .text()
            .await
            .expect("DevTools target list");
        let targets: Value = serde_json::from_str(&targets).expect("DevTools target list JSON");
        let tab = targets
            .as_array()
            .and_then(|targets| targets.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a tab")
            .to_string();
        let (socket, _) = tokio_tungstenite::connect_async(tab)
            .await
            .expect("connect to the tab");
        let mut page = Page { socket, next_id: 0 };
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 900, "height": 700, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        page
    }

    /// Sends one command and waits for its answer (events in between are
    /// skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("send to chromium");
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer from chromium"))
                .expect("chromium closed the connection")
                .expect("read from chromium");
            let Message::Text(text) = message else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if reply["id"] == id {
                if let Some(error) = reply.get("error") {
                    panic!("{method}: {error}");
                }
                return reply["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Loads `url` as if typed into the address bar.
    pub async fn go(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
    }

    /// The loaded page's address and visible text.
    pub async fn seen(&mut self) -> (String, String) {
        // A page being replaced has no document for a moment: ask again.
        let value = self
            .call(
                "Runtime.evaluate",
                json!({
                    "expression": "document.readyState === 'complete' \
                        ? [location.href, document.body ? document.body.innerText : ''] : null",
                    "returnByValue": true,
                }),
            )
            .await;
        match &value["result"]["value"] {
            Value::Array(pair) => (
                pair[0].as_str().unwrap_or_default().to_string(),
                pair[1].as_str().unwrap_or_default().to_string(),
            ),
            _ => (String::new(), String::new()),
        }
    }

    /// Waits until the loaded page's address and text satisfy `ok`; fails
    /// with what was on screen, naming `step`.
    pub async fn wait_until(&mut self, step: &str, ok: impl Fn(&str, &str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (url, text) = self.seen().await;
            if !url.is_empty() && ok(&url, &text) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{step}: the browser shows {url}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks, with the mouse, the first element matching `selector` whose
    /// text contains `label`, as a user would: scrolled into view, pressed
    /// and released at its centre.
    pub async fn click(&mut self, selector: &str, label: &str) {
        let find = format!(
            "(() => {{ const e = [...document.querySelectorAll({selector})].find(e => e.innerText.includes({label})); \
             if (!e) return null; e.scrollIntoView({{block: 'center'}}); \
             const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            selector = json!(selector),
            label = json!(label),
        );
        let at = self.eval(&find).await;
        let (Some(x), Some(y)) = (at[0].as_f64(), at[1].as_f64()) else {
            let (url, text) = self.seen().await;
            panic!("no {selector} labelled {label:?} on {url}:\n{text}");
        };
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }

    /// Saves what the tab shows as a PNG and returns its bytes.
    pub async fn screenshot(&mut self, path: &Path) -> Vec<u8> {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        std::fs::write(path, &png).expect("write screenshot");
        png
    }
}
