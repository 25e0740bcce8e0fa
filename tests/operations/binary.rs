//! The real `invoice-cases serve` as a child process whose stderr (its
//! logs) is captured line by line, for tests that read what it logs, send
//! it signals, or scrape its metrics.

use std::{net::SocketAddr, process::ExitStatus, time::Duration};

pub use invoice_cases_test_support::{LogLines, health, new_secret, strip_ansi};
use invoice_cases_test_support::{ServerProcess, connect, free_addr, serve_command, token};
use tonic::transport::{Channel, Endpoint};

use crate::helpers::Client;

/// The path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_invoice-cases");

/// How to start the server.
pub struct Options {
    pub database_url: String,
    /// The database the server runs on, when the server owns it: dropped
    /// with the [`Binary`], after the process.
    pub database: Option<crate::helpers::TestDatabase>,
    pub secret: String,
    /// `RUST_LOG`.
    pub log: String,
    /// `LOG_FORMAT` (environment), when set.
    pub log_format_env: Option<&'static str>,
    /// Serve `/metrics` on a free port.
    pub metrics: bool,
    pub extra: Vec<String>,
}

impl Options {
    /// Defaults: info logs as text, no metrics endpoint, a fresh secret.
    pub fn new(database_url: &str) -> Self {
        Options {
            database_url: database_url.to_owned(),
            database: None,
            secret: new_secret(),
            log: "info".into(),
            log_format_env: None,
            metrics: false,
            extra: Vec::new(),
        }
    }

    /// Defaults, on `database`, which the server then owns.
    pub fn owning(database: crate::helpers::TestDatabase) -> Self {
        let mut options = Options::new(&database);
        options.database = Some(database);
        options
    }

    /// Adds command line arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra.extend(args.iter().map(|a| a.to_string()));
        self
    }
}

/// A running `invoice-cases serve`, its stderr captured; killed when
/// dropped.
pub struct Binary {
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub secret: String,
    process: ServerProcess,
    /// Dropped after the process (fields drop in order).
    _database: Option<crate::helpers::TestDatabase>,
}

impl Binary {
    /// Starts the server and waits until health says SERVING.
    pub async fn start(options: Options) -> Self {
        let addr = free_addr();
        let metrics = options.metrics.then(free_addr);
        let mut command = serve_command(
            std::path::Path::new(BIN),
            addr,
            &options.database_url,
            &options.secret,
        );
        command
            .args([
                "--watch-progress-interval-seconds",
                "1",
                "--watch-poll-interval-ms",
                "200",
            ])
            .arg("--metrics-listen")
            .arg(metrics.map_or_else(|| "off".to_owned(), |a| a.to_string()))
            .args(&options.extra)
            .env("RUST_LOG", &options.log)
            .env_remove("LOG_FORMAT");
        if let Some(format) = options.log_format_env {
            command.env("LOG_FORMAT", format);
        }
        let mut process =
            ServerProcess::start_capturing(command, addr).expect("start invoice-cases serve");
        if let Err(e) = process.wait_serving(Duration::from_secs(60)).await {
            panic!("{e:#}");
        }
        Binary {
            addr,
            metrics,
            secret: options.secret,
            process,
            _database: options.database,
        }
    }

    /// What the server logged so far, one entry a line.
    pub fn logs(&self) -> Vec<String> {
        self.process.log_lines().all()
    }

    /// The captured log, to wait for a line ([`LogLines::wait_for`]).
    pub fn log_lines(&self) -> LogLines {
        self.process.log_lines()
    }

    /// The lines logged from line `mark` on, without the terminal colour
    /// codes the text format writes even into a pipe, for printing.
    pub fn logs_since(&self, mark: usize) -> String {
        let logs = self.logs();
        logs[mark.min(logs.len())..]
            .iter()
            .map(|line| strip_ansi(line))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// How many lines were logged so far (to slice [`Binary::logs`] later).
    pub fn log_mark(&self) -> usize {
        self.process.log_lines().len()
    }

    /// Sends `signal` (SIGTERM, SIGINT…).
    pub fn signal(&self, signal: i32) {
        self.process.signal(signal).expect("signal the server");
    }

    /// Waits up to `limit` for the process to exit; `None` when it did not
    /// (it is then killed). Once it exited, every log line is captured.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.process
            .wait_exit(limit)
            .await
            .expect("wait for the server")
    }

    /// A token for `sub` with `roles`, signed with the server's secret.
    pub fn token(&self, sub: &str, roles: &[&str]) -> String {
        token(&self.secret, sub, roles, None, 3600)
    }

    /// An admin client on a connection of its own.
    pub async fn admin(&self) -> Client {
        crate::process::client(self.addr, &self.token("admin", &["admin"])).await
    }
}

/// A channel to `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    connect(addr).await.expect("connect")
}

/// A client on a connection of its own whose HTTP/2 windows are the
/// protocol's minimum (64 KiB): a client that stops reading stops the
/// server's sending soon.
pub async fn small_window_client(addr: SocketAddr, token: &str) -> Client {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect");
    crate::helpers::authorized(channel, token)
}

/// The password of a PostgreSQL URL, if it has one.
pub fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    let password = userinfo.split_once(':')?.1;
    (!password.is_empty()).then(|| password.to_owned())
}
