//! The real `invoice-cases` binary as a server process.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use tokio::process::{Child, Command};
use tonic::transport::Endpoint;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A server process; killed when dropped.
pub struct ServerProcess {
    pub addr: SocketAddr,
    child: Child,
}

/// A fresh database, a secret for the servers that will serve it, and an
/// admin token signed with that secret.
pub struct Deployment {
    pub database_url: crate::helpers::TestDatabase,
    pub secret: String,
    pub admin_token: String,
}

impl Deployment {
    pub fn new() -> Self {
        let database_url = crate::helpers::cluster().new_database();
        let secret = format!("test-secret-{}", uuid::Uuid::new_v4().simple());
        let admin_token = invoice_cases::auth::mint_token(
            &secret,
            "admin",
            &["admin".into()],
            None,
            3600,
            None,
            None,
        )
        .expect("token");
        Deployment {
            database_url,
            secret,
            admin_token,
        }
    }
}

/// A free port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `invoice-cases serve` on `addr` for `database_url` with `secret`, with
/// the watch timings tests use (progress every second, polls every 200 ms),
/// no stdin or stdout, killed when dropped. Callers add the rest.
pub fn serve_command(addr: SocketAddr, database_url: &str, secret: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_invoice-cases"));
    command
        .arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .args([
            "--watch-progress-interval-seconds",
            "1",
            "--watch-poll-interval-ms",
            "200",
        ])
        .env("DATABASE_URL", database_url)
        .env("JWT_SECRET", secret)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
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

impl ServerProcess {
    /// Starts `invoice-cases serve` on `database_url` with `secret`, on a
    /// free port (or `port`), and waits until health says SERVING.
    pub async fn start(
        database_url: &str,
        secret: &str,
        port: Option<u16>,
        extra: &[&str],
    ) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", port.unwrap_or_else(free_port))
            .parse()
            .expect("address");
        let child = serve_command(addr, database_url, secret)
            .args(["--metrics-listen", "off"])
            .args(extra)
            .env("RUST_LOG", "warn")
            // Resident memory should measure what the server holds, not how
            // glibc caches freed memory: few arenas, large blocks mapped
            // (and unmapped when freed), freed memory trimmed early.
            .env("MALLOC_ARENA_MAX", "2")
            .env("MALLOC_MMAP_THRESHOLD_", "65536")
            .env("MALLOC_TRIM_THRESHOLD_", "131072")
            .spawn()
            .expect("start invoice-cases serve");
        let process = ServerProcess { addr, child };
        process.wait_serving(Duration::from_secs(60)).await;
        process
    }

    /// Waits until the health service says SERVING.
    pub async fn wait_serving(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if health(self.addr).await == Some(ServingStatus::Serving) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server on {} did not become SERVING",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("a running process")
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGTERM);
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the server exits within 30 s of SIGTERM")
            .expect("wait for the server")
    }

    /// Kills the process at once (SIGKILL).
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill the server");
    }
}

/// A client of a server process.
pub async fn client(addr: SocketAddr, token: &str) -> crate::helpers::Client {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    crate::helpers::authorized(channel, token)
}
