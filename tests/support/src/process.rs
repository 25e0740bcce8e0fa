//! The real `invoice-cases` binary as a server process, and health probes.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};
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

/// A server process; killed when dropped.
pub struct ServerProcess {
    pub addr: SocketAddr,
    child: Child,
    log: Option<PathBuf>,
}

impl ServerProcess {
    /// Spawns `command` (built by [`serve_command`] for `addr`) and waits
    /// until health says SERVING. `log` is where its stderr goes, if the
    /// command was given that file, for the error when it does not start.
    pub async fn spawn(
        mut command: Command,
        addr: SocketAddr,
        log: Option<PathBuf>,
        limit: Duration,
    ) -> anyhow::Result<ServerProcess> {
        let child = command.spawn().context("cannot start the server")?;
        let mut process = ServerProcess { addr, child, log };
        process.wait_serving(limit).await?;
        Ok(process)
    }

    /// Waits until the health service says SERVING.
    pub async fn wait_serving(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = self
                    .log
                    .as_ref()
                    .and_then(|path| std::fs::read_to_string(path).ok())
                    .unwrap_or_default();
                bail!("the server exited at start ({status}):\n{log}");
            }
            if health(self.addr).await == Some(ServingStatus::Serving) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the server on {} did not become SERVING within {limit:?}",
                    self.addr
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the exit status (SIGKILL after 30 s).
    pub async fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = i32::try_from(self.pid()).context("pid")?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.kill().await?;
                bail!("the server did not exit within 30 s of SIGTERM (killed)")
            }
        }
    }

    /// Kills the process at once (SIGKILL).
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// The child process, for tests that need more of it.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}
