//! The `stripe-sidecar` binary: parse arguments, load the configuration,
//! start logging, run the server (or, for `stripe-sidecar demo`, the whole
//! product with its stand-ins), and turn the outcome into an exit code; and
//! the process's memory allocator (jemalloc, see [`GLOBAL`]).

// As in lib.rs: async-stripe's nested types overflow the default when
// checking that a future is `Send` (seen with debug info on).
#![recursion_limit = "256"]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stripe_sidecar::config::{Config, LogFormat};
use stripe_sidecar::{demo::Demo, logging, Server, Stopped};

/// jemalloc, with its background thread on, instead of the C library's
/// malloc. After five bursts of 2,000 connections (`bench/memory.sh`)
/// glibc's malloc held 115 MiB (idle: 11 MiB), most of it freed memory it
/// keeps in per-thread arenas for good, and musl's (the static image's) held
/// 64 MiB and crept up with every burst. jemalloc hands unused pages back
/// within seconds, also once the process goes quiet (the background
/// thread), and serves 1.2 to 1.5 times the requests per second of either.
/// The numbers: `bench/README.md`.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: freed pages go back to the
/// system after about a second instead of ten (`dirty_decay_ms`), and
/// skip the lazily-freed stage (`muzzy_decay_ms`). After the bursts of
/// `bench/memory.sh` RSS settles at +17 MiB of idle at once, where the
/// defaults held +25 to +43 MiB for the first ten seconds.
/// `_RJEM_MALLOC_CONF` in the environment still overrides it.
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: Option<&'static std::ffi::c_char> =
    // SAFETY: a pointer to a 'static NUL-terminated string, the type
    // jemalloc declares for `malloc_conf`; it only ever reads it.
    Some(unsafe { &*c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr() });

/// The end of `--help`: what the flags alone do not say.
const AFTER_HELP: &str = "\
Configuration: --config PATH, else $STRIPE_SIDECAR_CONFIG, else ./config.toml.
Values may use ${VAR} and ${VAR:-default} from the environment.

Exit codes: 0 after a clean stop or a passing --check; 1 when the server
cannot start (e.g. a port in use) or a second signal forced the stop;
2 when the configuration cannot be read or has problems.

Logs: JSON lines on stdout (server.log_format = \"text\" for text);
RUST_LOG filters them, e.g. RUST_LOG=stripe_sidecar=debug.

Try it: stripe-sidecar demo";

/// A reverse-proxy sidecar that answers Stripe checkout, portal and webhook
/// routes for the app behind it and proxies everything else.
#[derive(Parser)]
#[command(version, about, after_help = AFTER_HELP)]
struct Args {
    /// The configuration file.
    #[arg(long, env = "STRIPE_SIDECAR_CONFIG", default_value = "config.toml")]
    config: PathBuf,
    /// Validate the configuration, print it with secrets redacted, and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole product on 127.0.0.1 with no account and no network:
    /// the sidecar in front of a demo app, with a stand-in for Stripe.
    /// Reads no configuration file and no environment.
    Demo {
        /// The port to open in a browser (0: any free port).
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Demo { port }) = args.command {
        return demo(port);
    }
    let text = match std::fs::read_to_string(&args.config) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("{}: cannot read: {error}", args.config.display());
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_toml(&text) {
        Ok(config) => config,
        Err(problems) => {
            eprint!("{problems}");
            eprintln!(
                "{}: {} problem(s); nothing started",
                args.config.display(),
                problems.0.len()
            );
            return ExitCode::from(2);
        }
    };
    if args.check {
        print!("{}", config.raw.redacted_toml());
        eprintln!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    let _written_at_exit = logging::init(config.server.log_format);
    run(config)
}

/// Serves `config` until a signal.
fn run(config: Config) -> ExitCode {
    // Workers beyond the first get threads of their own (see
    // stripe_sidecar::server): this one runs the first, the admin port
    // and the background tasks.
    let mut runtime = tokio::runtime::Builder::new_current_thread();
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match Server::bind(config).await {
            Ok(server) => server,
            Err(error) => {
                tracing::error!(%error, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let signals = match stripe_sidecar::server::signals() {
            Ok(signals) => signals,
            Err(error) => {
                tracing::error!(%error, "cannot listen for signals");
                return ExitCode::FAILURE;
            }
        };
        match server.run(signals).await {
            Stopped::Clean => ExitCode::SUCCESS,
            // In-flight requests may have been cut: say so.
            Stopped::Forced => ExitCode::FAILURE,
        }
    })
}

/// `stripe-sidecar demo`: starts the three servers, prints the URL to
/// open, and serves until a signal (Ctrl-C stops it cleanly).
fn demo(port: u16) -> ExitCode {
    let _written_at_exit = logging::init(LogFormat::Text);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let signals = match stripe_sidecar::server::signals() {
            Ok(signals) => signals,
            Err(error) => {
                eprintln!("cannot listen for signals: {error}");
                return ExitCode::FAILURE;
            }
        };
        let demo = match Demo::start(port).await {
            Ok(demo) => demo,
            Err(error) => {
                eprintln!("stripe-sidecar demo: cannot start: {error}");
                if error.kind() == std::io::ErrorKind::AddrInUse {
                    eprintln!(
                        "stripe-sidecar demo: choose another port with --port (0: any free one)"
                    );
                }
                return ExitCode::FAILURE;
            }
        };
        println!("stripe-sidecar demo: open {}", demo.url());
        match demo.run(signals).await {
            Stopped::Clean => ExitCode::SUCCESS,
            Stopped::Forced => ExitCode::FAILURE,
        }
    })
}
