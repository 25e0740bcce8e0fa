//! pgbench, PostgreSQL's own benchmark, as the yardstick of a machine: what
//! the same server does without the service in front of it.

use std::path::Path;

use anyhow::Context as _;
use tokio::process::Command;

use crate::measure::Latencies;

/// What to run.
#[derive(Debug, Clone, Copy)]
pub enum Script {
    /// The default TPC-B-like transaction (5 statements, 3 updates).
    TpcB,
    /// `-S`: one primary-key SELECT.
    SelectOnly,
    /// `-N`: TPC-B without the updates of the small tables (one update).
    SimpleUpdate,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct PgbenchRun {
    pub tps: f64,
    pub transactions: u64,
    pub latencies: Latencies,
}

/// `pgbench -i -s scale` on `url`.
pub async fn init(bin_dir: &Path, url: &str, scale: u32) -> anyhow::Result<()> {
    let output = Command::new(bin_dir.join("pgbench"))
        .args(["-i", "-q", "-s"])
        .arg(scale.to_string())
        .arg(url)
        .env("LC_ALL", "C")
        .output()
        .await
        .context("cannot run pgbench -i")?;
    anyhow::ensure!(
        output.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// The command line of [`run`], for reports.
pub fn command_line(script: Script, clients: u32, threads: u32, seconds: u64) -> String {
    let s = match script {
        Script::TpcB => "",
        Script::SelectOnly => " -S",
        Script::SimpleUpdate => " -N",
    };
    format!("pgbench{s} -c {clients} -j {threads} -T {seconds}")
}

/// Runs pgbench for `seconds` with `clients` connections on `threads`
/// threads; latencies come from its per-transaction log, written in `logs`.
pub async fn run(
    bin_dir: &Path,
    url: &str,
    script: Script,
    clients: u32,
    threads: u32,
    seconds: u64,
    logs: &Path,
) -> anyhow::Result<PgbenchRun> {
    let dir = logs.join(format!("pgbench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let mut command = Command::new(bin_dir.join("pgbench"));
    command
        .arg("-c")
        .arg(clients.to_string())
        .arg("-j")
        .arg(threads.to_string())
        .arg("-T")
        .arg(seconds.to_string())
        .arg("-l")
        .arg(format!("--log-prefix={}", dir.join("log").display()));
    match script {
        Script::TpcB => {}
        Script::SelectOnly => {
            command.arg("-S");
        }
        Script::SimpleUpdate => {
            command.arg("-N");
        }
    }
    let output = command
        .arg(url)
        .env("LC_ALL", "C")
        .output()
        .await
        .context("cannot run pgbench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let tps = stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .with_context(|| format!("no `tps = ` line in pgbench's output:\n{stdout}"))?;
    let transactions = stdout
        .lines()
        .find_map(|line| line.strip_prefix("number of transactions actually processed: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // Each line: client_id transaction_no latency_us script_no epoch us.
    let mut latencies = Latencies::default();
    for entry in std::fs::read_dir(&dir)?.flatten() {
        let text = std::fs::read_to_string(entry.path())?;
        for line in text.lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u32>().ok())
            {
                latencies.push_us(us);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(PgbenchRun {
        tps,
        transactions,
        latencies,
    })
}
