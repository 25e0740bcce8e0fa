//! The real `invoice-cases` binary as a server process (the launcher, the
//! health probe and the tokens are `tests/support`'s).

use std::{net::SocketAddr, time::Duration};

pub use invoice_cases_test_support::{ServerProcess, free_port};
use invoice_cases_test_support::{connect, new_secret, serve_command, token};

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
        let secret = new_secret();
        let admin_token = token(&secret, "admin", &["admin"], None, 3600);
        Deployment {
            database_url,
            secret,
            admin_token,
        }
    }
}

/// Starts `invoice-cases serve` on `database_url` with `secret`, on a free
/// port (or `port`), with the watch timings tests use (progress every
/// second, polls every 200 ms), and waits until health says SERVING.
pub async fn start_server(
    database_url: &str,
    secret: &str,
    port: Option<u16>,
    extra: &[&str],
) -> ServerProcess {
    let addr = SocketAddr::from(([127, 0, 0, 1], port.unwrap_or_else(free_port)));
    let mut command = serve_command(
        std::path::Path::new(env!("CARGO_BIN_EXE_invoice-cases")),
        addr,
        database_url,
        secret,
    );
    command
        .args([
            "--watch-progress-interval-seconds",
            "1",
            "--watch-poll-interval-ms",
            "200",
        ])
        .args(["--metrics-listen", "off"])
        .args(extra)
        .env("RUST_LOG", "warn")
        // Resident memory should measure what the server holds, not how
        // glibc caches freed memory: few arenas, large blocks mapped (and
        // unmapped when freed), freed memory trimmed early.
        .env("MALLOC_ARENA_MAX", "2")
        .env("MALLOC_MMAP_THRESHOLD_", "65536")
        .env("MALLOC_TRIM_THRESHOLD_", "131072");
    ServerProcess::spawn(command, addr, None, Duration::from_secs(60))
        .await
        .expect("start invoice-cases serve")
}

/// A client of a server process.
pub async fn client(addr: SocketAddr, token: &str) -> crate::helpers::Client {
    crate::helpers::authorized(connect(addr).await.expect("connect"), token)
}
