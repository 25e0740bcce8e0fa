//! The real `invoice-cases serve` as a child process whose stderr (its
//! logs) is captured line by line, for tests that read what it logs, send
//! it signals, or scrape its metrics.

use std::{
    net::SocketAddr,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Child,
    task::JoinHandle,
    time::Instant,
};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use uuid::Uuid;

pub use crate::process::health;
use crate::{
    helpers::Client,
    process::{free_port, serve_command},
};

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

/// A fresh JWT secret (well over 32 bytes).
pub fn new_secret() -> String {
    format!("ops-test-secret-{}", Uuid::new_v4().simple())
}

/// A running `invoice-cases serve`.
pub struct Binary {
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub secret: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    /// Dropped after the process (fields drop in order).
    _database: Option<crate::helpers::TestDatabase>,
}

impl Binary {
    /// Starts the server and waits until health says SERVING.
    pub async fn start(options: Options) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let metrics: Option<SocketAddr> = options.metrics.then(|| {
            format!("127.0.0.1:{}", free_port())
                .parse()
                .expect("address")
        });
        let mut command = serve_command(addr, &options.database_url, &options.secret);
        command
            .arg("--metrics-listen")
            .arg(metrics.map_or_else(|| "off".to_owned(), |a| a.to_string()))
            .args(&options.extra)
            .env("RUST_LOG", &options.log)
            .env_remove("LOG_FORMAT")
            .stderr(Stdio::piped());
        if let Some(format) = options.log_format_env {
            command.env("LOG_FORMAT", format);
        }
        let mut child = command.spawn().expect("start invoice-cases serve");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let reader = {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut stderr = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = stderr.next_line().await {
                    lines.lock().expect("log lines").push(line);
                }
            })
        };
        let mut binary = Binary {
            addr,
            metrics,
            secret: options.secret,
            child,
            lines,
            reader: Some(reader),
            _database: options.database,
        };
        binary.wait_serving(Duration::from_secs(60)).await;
        binary
    }

    async fn wait_serving(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if health(self.addr).await == Some(ServingStatus::Serving) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the server exited ({status}) before serving:\n{}",
                    self.logs().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "the server on {} did not become SERVING:\n{}",
                self.addr,
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the server logged so far, one entry a line.
    pub fn logs(&self) -> Vec<String> {
        self.lines.lock().expect("log lines").clone()
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
        self.lines.lock().expect("log lines").len()
    }

    /// Sends `signal` (SIGTERM, SIGINT…).
    pub fn signal(&self, signal: i32) {
        let pid = self.child.id().expect("a running server") as i32;
        // SAFETY: kill(2) on our own child's pid.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0, "kill({pid}, {signal})");
    }

    /// Waits up to `limit` for the process to exit; `None` when it did not
    /// (it is then killed). Once it exited, every log line is captured.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => {
                let status = status.expect("wait for the server");
                if let Some(reader) = self.reader.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
                }
                Some(status)
            }
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        }
    }

    /// A token for `sub` with `roles`, signed with the server's secret.
    pub fn token(&self, sub: &str, roles: &[&str]) -> String {
        invoice_cases::auth::mint_token(
            &self.secret,
            sub,
            &roles.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            None,
            3600,
            None,
            None,
        )
        .expect("mint a token")
    }

    /// An admin client on a connection of its own.
    pub async fn admin(&self) -> Client {
        crate::process::client(self.addr, &self.token("admin", &["admin"])).await
    }
}

/// A channel to `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
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

/// `line` without ANSI escape sequences (`ESC [ … letter`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
