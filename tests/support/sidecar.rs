//! Starting the real sidecar server for a test: in-process on 127.0.0.1:0
//! (the default), or as the release binary in a child process for the
//! command-line, log and signal tests.
//!
//! A test reads as its scenario:
//! `Sidecar::builder(&app.url()).set("upstream", "read_timeout_ms = 200").start().await`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use stripe_sidecar::{Config, Server, Signal};
use tokio::task::JoinHandle;

/// Builds a configuration section by section.
pub struct Builder {
    sections: BTreeMap<String, Vec<String>>,
    tail: String,
}

impl Builder {
    /// Adds `line` (a `key = value`) to `[section]`.
    pub fn set(mut self, section: &str, line: &str) -> Builder {
        self.sections
            .entry(section.to_string())
            .or_default()
            .push(line.to_string());
        self
    }

    /// Appends raw TOML after the sections (for `[[routes]]` and the like).
    pub fn raw(mut self, toml: &str) -> Builder {
        self.tail.push_str(toml);
        self.tail.push('\n');
        self
    }

    pub fn toml(&self) -> String {
        let mut out = String::new();
        for (section, lines) in &self.sections {
            out.push_str(&format!("[{section}]\n{}\n\n", lines.join("\n")));
        }
        out + &self.tail
    }

    /// Starts the server in this process, with one worker unless the test
    /// asks for more: a client then never reads a counter before the
    /// request that bumps it has finished on another thread. (The binary,
    /// [`Builder::spawn`], runs the default: a worker per core.)
    pub async fn start(mut self) -> Sidecar {
        let server = self.sections.entry("server".to_string()).or_default();
        if !server.iter().any(|line| line.starts_with("worker_threads")) {
            server.push("worker_threads = 1".to_string());
        }
        let config = Config::from_toml(&self.toml()).expect("test config is valid");
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr();
        let admin = server.admin_addr();
        let (stop, signals) = tokio::sync::mpsc::unbounded_channel::<Signal>();
        let task = tokio::spawn(async move {
            server.run(signals).await;
        });
        Sidecar {
            addr,
            admin,
            _stop: stop,
            task,
        }
    }

    /// Starts the release binary with this configuration in a child process.
    pub fn spawn(self) -> Process {
        Process::spawn(&self.toml(), &[])
    }
}

/// A sidecar server running in this process.
pub struct Sidecar {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Dropped with the sidecar, which stops the server.
    _stop: tokio::sync::mpsc::UnboundedSender<Signal>,
    task: JoinHandle<()>,
}

impl Sidecar {
    /// A config listening on 127.0.0.1:0 (both ports) in front of `upstream`.
    pub fn builder(upstream: &str) -> Builder {
        Builder {
            sections: BTreeMap::new(),
            tail: String::new(),
        }
        .set("server", "listen = \"127.0.0.1:0\"")
        .set("server", "admin_listen = \"127.0.0.1:0\"")
        .set("upstream", &format!("url = \"{upstream}\""))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The release binary, running.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The stdout lines up to and including the "ready" line.
    pub startup: Vec<String>,
    /// Every stdout line after the "ready" line, as it comes.
    pub lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stripe-sidecar"))
}

impl Process {
    /// Runs the binary with `config` and `args`, and waits for its ready
    /// line (JSON or text) to learn the ports it bound.
    pub fn spawn(config: &str, args: &[&str]) -> Process {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(binary())
            .arg("--config")
            .arg(&path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the binary");
        let lines = read_lines(child.stdout.take().expect("stdout"));
        let mut startup = Vec::new();
        let (addr, admin) = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(20))
                .expect("the binary logs a ready line");
            startup.push(line.clone());
            if line.contains("stripe-sidecar ready") {
                break (
                    ready_field(&line, "listen"),
                    ready_field(&line, "admin_listen"),
                );
            }
        };
        Process {
            addr,
            admin,
            child,
            startup,
            lines,
            _dir: dir,
        }
    }

    /// Sends `signal` (`Signal::TERM`, `Signal::INT`) to the process,
    /// with kill(2) directly: slim images have no kill command.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal)
            .unwrap_or_else(|e| panic!("kill({pid:?}, {signal:?}): {e}"));
    }

    /// Waits for the process to exit, at most `limit`, without blocking
    /// the runtime (the fake app may run on it).
    pub async fn exited(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        eventually(limit, || child.try_wait().expect("wait").is_some()).await;
        self.child.try_wait().unwrap().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An address from the ready line: `"listen":"127.0.0.1:1"` in JSON,
/// `listen=127.0.0.1:1` in text (after any colour codes).
fn ready_field(line: &str, key: &str) -> SocketAddr {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        return json[key].as_str().unwrap().parse().unwrap();
    }
    let start = line
        .find(&format!(" {key}"))
        .unwrap_or_else(|| panic!("{key} in {line:?}"))
        + key.len()
        + 1;
    line[start..]
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {line:?}"))
}

fn read_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

/// Polls `check` until it holds, failing after `limit` (tests never sleep
/// to wait for something).
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
