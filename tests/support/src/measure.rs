//! Measurements for benchmarks: CPU time from /proc, PostgreSQL's commit
//! and WAL counters, latency percentiles.

use std::time::Instant;

use anyhow::Context as _;
use diesel::{QueryableByName, sql_types::BigInt};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// Clock ticks per second of /proc's CPU times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// The fields of `/proc/<pid>/stat` after the command name.
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(
        rest.split_whitespace()
            // The state (a letter) is the first field: keep the position.
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .collect(),
    )
}

/// User + system CPU seconds of `pid` (`"self"` for this process).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let fields = stat_fields(pid)?;
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    Some((fields.get(11)? + fields.get(12)?) as f64 / ticks_per_second())
}

/// CPU seconds of `root` and all its descendants, counting those that have
/// exited (and were reaped) through `root`'s children times. For a
/// PostgreSQL postmaster: the whole server.
pub fn tree_cpu_seconds(root: u32) -> Option<f64> {
    let root_fields = stat_fields(&root.to_string())?;
    // utime, stime, cutime, cstime.
    let mut ticks: u64 = root_fields.get(11..15)?.iter().sum();
    let mut parents = vec![root];
    let mut seen = std::collections::HashSet::from([root]);
    // Processes and their parents, read once.
    let mut table: Vec<(u32, u32, u64)> = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(fields) = stat_fields(&pid.to_string()) {
            let ppid = fields.get(1).copied().unwrap_or(0) as u32;
            let own = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
            table.push((pid, ppid, own));
        }
    }
    while let Some(parent) = parents.pop() {
        for &(pid, ppid, own) in &table {
            if ppid == parent && seen.insert(pid) {
                ticks += own;
                parents.push(pid);
            }
        }
    }
    Some(ticks as f64 / ticks_per_second())
}

/// Counters of a PostgreSQL server.
#[derive(Debug, Clone, Copy, Default)]
pub struct PgCounters {
    /// Committed transactions, every database.
    pub commits: i64,
    /// WAL flushes to disk (`pg_stat_wal.wal_sync`).
    pub wal_syncs: i64,
    /// WAL bytes written.
    pub wal_bytes: i64,
}

#[derive(QueryableByName)]
struct CountersRow {
    #[diesel(sql_type = BigInt)]
    commits: i64,
    #[diesel(sql_type = BigInt)]
    wal_syncs: i64,
    #[diesel(sql_type = BigInt)]
    wal_bytes: i64,
}

impl PgCounters {
    /// Reads the counters. PostgreSQL publishes other sessions' counts up
    /// to a second late: read after a pause when a load has just stopped.
    pub async fn read(admin_url: &str) -> anyhow::Result<PgCounters> {
        let mut conn = AsyncPgConnection::establish(admin_url)
            .await
            .context("cannot connect to read PostgreSQL's counters")?;
        let row: CountersRow = diesel::sql_query(
            "SELECT (SELECT sum(xact_commit) FROM pg_stat_database)::bigint AS commits, \
                    wal_sync AS wal_syncs, wal_bytes::bigint AS wal_bytes \
             FROM pg_stat_wal",
        )
        .get_result(&mut conn)
        .await
        .context("cannot read pg_stat_wal")?;
        Ok(PgCounters {
            commits: row.commits,
            wal_syncs: row.wal_syncs,
            wal_bytes: row.wal_bytes,
        })
    }
}

/// Settles a PostgreSQL server before a measurement, as pgbench does
/// before each of its runs: `VACUUM ANALYZE` of `databases` (so that no
/// autovacuum left over from the previous load runs during this one), then
/// `CHECKPOINT` (so that every measurement pays the same full-page writes).
pub async fn settle(admin_url: &str, databases: &[String]) -> anyhow::Result<()> {
    for url in databases {
        let mut conn = AsyncPgConnection::establish(url)
            .await
            .context("cannot connect to vacuum")?;
        diesel::sql_query("VACUUM ANALYZE")
            .execute(&mut conn)
            .await
            .context("VACUUM ANALYZE")?;
    }
    let mut conn = AsyncPgConnection::establish(admin_url)
        .await
        .context("cannot connect to checkpoint")?;
    diesel::sql_query("CHECKPOINT")
        .execute(&mut conn)
        .await
        .context("CHECKPOINT")?;
    Ok(())
}

/// CPU of the parties of a benchmark at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    pub at: Instant,
    /// The server process.
    pub server: f64,
    /// Every process of the PostgreSQL server.
    pub postgres: f64,
    /// This process (the load generator).
    pub client: f64,
}

impl CpuSample {
    /// Samples now; a party that cannot be read counts 0.
    pub fn take(server_pid: Option<u32>, postmaster_pid: Option<u32>) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            server: server_pid
                .and_then(|pid| cpu_seconds(&pid.to_string()))
                .unwrap_or(0.0),
            postgres: postmaster_pid.and_then(tree_cpu_seconds).unwrap_or(0.0),
            client: cpu_seconds("self").unwrap_or(0.0),
        }
    }

    /// CPU microseconds per operation of each party from `self` to `end`.
    pub fn per_op_us(&self, end: &CpuSample, ops: u64) -> CpuPerOp {
        let per = |a: f64, b: f64| {
            if ops == 0 {
                0.0
            } else {
                (b - a) * 1e6 / ops as f64
            }
        };
        CpuPerOp {
            server: per(self.server, end.server),
            postgres: per(self.postgres, end.postgres),
            client: per(self.client, end.client),
        }
    }
}

/// CPU microseconds per operation.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuPerOp {
    pub server: f64,
    pub postgres: f64,
    pub client: f64,
}

/// Latencies in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<u32>);

impl Latencies {
    pub fn record(&mut self, started: Instant) {
        let us = started.elapsed().as_micros();
        self.0.push(u32::try_from(us).unwrap_or(u32::MAX));
    }

    pub fn push_us(&mut self, us: u32) {
        self.0.push(us);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The nearest-rank percentile `q` (0..=1), in milliseconds.
    pub fn percentile_ms(&mut self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort_unstable();
        let rank = (q * self.0.len() as f64).ceil() as usize;
        f64::from(self.0[rank.clamp(1, self.0.len()) - 1]) / 1000.0
    }
}
