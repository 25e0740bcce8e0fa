//! The real `invoice-cases` binary as a server process (its stderr in a
//! file or captured line by line), and health probes.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::Notify,
    task::JoinHandle,
};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A free port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A free address on loopback.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A channel to `addr` (plaintext).
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))
        .context("endpoint")?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to the server on {addr}"))
}

/// The overall health status of the server on `addr`; `None` when it does
/// not answer within two seconds.
pub async fn health(addr: SocketAddr) -> Option<ServingStatus> {
    let call = async {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await
            .ok()?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()
            .map(|r| r.into_inner().status())
    };
    tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .ok()
        .flatten()
}

/// `binary serve --listen addr` for `database_url` with `secret` (passed in
/// the environment, out of `ps`), no stdin or stdout, killed when dropped.
/// Callers add the rest.
pub fn serve_command(binary: &Path, addr: SocketAddr, database_url: &str, secret: &str) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .env("DATABASE_URL", database_url)
        .env("JWT_SECRET", secret)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
}

/// The lines a process wrote to stderr so far, read as they come.
#[derive(Clone, Default)]
pub struct LogLines {
    lines: Arc<Mutex<Vec<String>>>,
    added: Arc<Notify>,
}

impl LogLines {
    fn push(&self, line: String) {
        self.lines.lock().expect("log lines").push(line);
        self.added.notify_waiters();
    }

    /// Every line so far.
    pub fn all(&self) -> Vec<String> {
        self.lines.lock().expect("log lines").clone()
    }

    /// How many lines there are so far (a mark for [`LogLines::wait_for`]).
    pub fn len(&self) -> usize {
        self.lines.lock().expect("log lines").len()
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits up to `limit` for a line from line `mark` on for which `found`
    /// holds; returns it (`None` when none came in time).
    pub async fn wait_for(
        &self,
        mark: usize,
        limit: Duration,
        found: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Registered before looking, so a line added in between wakes us.
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            {
                let lines = self.lines.lock().expect("log lines");
                if let Some(line) = lines.iter().skip(mark).find(|line| found(line)) {
                    return Some(line.clone());
                }
            }
            if tokio::time::timeout_at(deadline, added).await.is_err() {
                return None;
            }
        }
    }
}

/// Where a server process's stderr goes.
enum Stderr {
    /// Wherever the command said (a file when `Some`, for errors).
    Command(Option<PathBuf>),
    /// Piped and read line by line.
    Captured {
        lines: LogLines,
        reader: Option<JoinHandle<()>>,
    },
}

/// A server process; killed when dropped.
pub struct ServerProcess {
    pub addr: SocketAddr,
    child: Child,
    stderr: Stderr,
}

impl ServerProcess {
    /// Spawns `command` (built by [`serve_command`] for `addr`) and waits
    /// until health says SERVING. `log` is where its stderr goes, if the
    /// command was given that file, for the error when it does not start.
    pub async fn spawn(
        command: Command,
        addr: SocketAddr,
        log: Option<PathBuf>,
        limit: Duration,
    ) -> anyhow::Result<ServerProcess> {
        let mut process = Self::start(command, addr, log)?;
        process.wait_serving(limit).await?;
        Ok(process)
    }

    /// Spawns `command` for `addr` without waiting for it; `log` as for
    /// [`ServerProcess::spawn`].
    pub fn start(
        mut command: Command,
        addr: SocketAddr,
        log: Option<PathBuf>,
    ) -> anyhow::Result<ServerProcess> {
        let child = command.spawn().context("cannot start the server")?;
        Ok(ServerProcess {
            addr,
            child,
            stderr: Stderr::Command(log),
        })
    }

    /// Spawns `command` for `addr` with its stderr captured line by line
    /// ([`ServerProcess::log_lines`]), without waiting for it.
    pub fn start_capturing(
        mut command: Command,
        addr: SocketAddr,
    ) -> anyhow::Result<ServerProcess> {
        let mut child = command
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start the server")?;
        let stderr = child.stderr.take().context("stderr")?;
        let lines = LogLines::default();
        let reader = {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut stderr = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = stderr.next_line().await {
                    lines.push(line);
                }
            })
        };
        Ok(ServerProcess {
            addr,
            child,
            stderr: Stderr::Captured {
                lines,
                reader: Some(reader),
            },
        })
    }

    /// The captured stderr (empty unless started by
    /// [`ServerProcess::start_capturing`]).
    pub fn log_lines(&self) -> LogLines {
        match &self.stderr {
            Stderr::Captured { lines, .. } => lines.clone(),
            Stderr::Command(_) => LogLines::default(),
        }
    }

    /// What the server logged, for errors.
    fn log_text(&self) -> String {
        match &self.stderr {
            Stderr::Command(log) => log
                .as_ref()
                .and_then(|path| std::fs::read_to_string(path).ok())
                .unwrap_or_default(),
            Stderr::Captured { lines, .. } => lines.all().join("\n"),
        }
    }

    /// Waits for the reader of captured stderr to reach its end (once the
    /// process exited).
    async fn drain_logs(&mut self) {
        if let Stderr::Captured { reader, .. } = &mut self.stderr
            && let Some(reader) = reader.take()
        {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
    }

    /// Waits until the health service says SERVING.
    pub async fn wait_serving(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.drain_logs().await;
                bail!(
                    "the server exited at start ({status}):\n{}",
                    self.log_text()
                );
            }
            if health(self.addr).await == Some(ServingStatus::Serving) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the server on {} did not become SERVING within {limit:?}:\n{}",
                    self.addr,
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (SIGTERM, SIGINT…).
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        let pid = i32::try_from(self.pid()).context("pid")?;
        // SAFETY: kill(2) on our own child's pid.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `limit` for the process to exit; `None` when it did not
    /// (it is then killed). Once it exited, captured stderr is complete.
    pub async fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => {
                let status = status.context("wait for the server")?;
                self.drain_logs().await;
                Ok(Some(status))
            }
            Err(_) => {
                let _ = self.child.kill().await;
                self.drain_logs().await;
                Ok(None)
            }
        }
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the exit status (SIGKILL after 30 s).
    pub async fn terminate(mut self) -> anyhow::Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        match self.wait_exit(Duration::from_secs(30)).await? {
            Some(status) => Ok(status),
            None => bail!("the server did not exit within 30 s of SIGTERM (killed)"),
        }
    }

    /// Kills the process at once (SIGKILL) and waits until it is gone.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.kill_in_place().await
    }

    /// Kills the process at once (SIGKILL), waits until it is gone, and
    /// keeps the value (for its logs).
    pub async fn kill_in_place(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        self.drain_logs().await;
        Ok(())
    }

    /// The child process, for tests that need more of it.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

/// `line` without ANSI escape sequences (`ESC [ … letter`), which the text
/// log format writes even into a pipe.
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
