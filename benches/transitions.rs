//! Transitions and reads, side by side with pgbench on the same PostgreSQL
//! cluster, in one run.
//!
//! ```text
//! cargo bench --bench transitions
//! ```
//!
//! It starts a PostgreSQL cluster of its own and the release server on it,
//! and in each of several rounds runs pgbench TPC-B and select-only on the
//! same cluster and drives the server with concurrent clients over a few
//! HTTP/2 connections, one phase after the other:
//!
//! * `lifecycle`: whole case lifecycles (create with 2 lines, submit,
//!   assign to me, 2 x SetLineState, close: six mutating RPCs);
//! * `get`: GetInvoiceCase of existing cases;
//! * `list`: ListInvoiceCases pages of 50, newest first (up to 5 pages deep);
//! * `list-filtered`: the same with a filter (state, account, assignee,
//!   priority, and two combined);
//! * `history`: ListStateChanges of existing cases;
//! * `health`: grpc.health.v1.Health/Check, which touches neither the
//!   database nor a token: what the gRPC stack alone costs per call, the
//!   floor under every RPC's rate.
//!
//! Every phase (pgbench's too) starts on a settled server — after `VACUUM
//! ANALYZE` of both databases and a `CHECKPOINT`, as pgbench itself starts
//! its runs — so that no phase pays for the one before. For every measure it prints the
//! median over the rounds of the rate,
//! latency p50/p99, the CPU microseconds per call of the server, of
//! PostgreSQL (all its processes) and of this load generator (from /proc),
//! and PostgreSQL's writing transactions per WAL flush; and the ratios to
//! pgbench within each round (the machine's speed drifts between rounds on
//! a shared host), with their median.
//!
//! Options (after `--`): `--clients N` (16), `--connections C` (4),
//! `--rounds R` (3), `--seconds S` (10, per phase), `--pgbench-seconds T`
//! (10; 0 skips pgbench), `--pgbench-scale K` (10), `--seed-cases N` (2000,
//! in mixed states, for the filters), `--phases a,b,..` (all),
//! `--server PATH` (the release binary), `--server-arg ARG` (repeatable,
//! passed to `serve`).
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it does nothing.

use std::{
    collections::BTreeMap,
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    process::{ExitCode, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use invoice_cases::pb::{self, case_line::State as LineState};
use invoice_cases_test_support::{
    Client, Cluster, ServerProcess, authorized, connect, free_addr,
    measure::{CpuPerOp, CpuSample, Latencies, PgCounters, settle},
    new_secret, pgbench, serve_command, token,
};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[derive(Debug, Clone)]
struct Args {
    clients: usize,
    connections: usize,
    seconds: u64,
    pgbench_seconds: u64,
    pgbench_scale: u32,
    seed_cases: usize,
    rounds: usize,
    phases: Vec<String>,
    server: PathBuf,
    server_args: Vec<String>,
    given: Vec<String>,
}

const PHASES: [&str; 6] = [
    "lifecycle",
    "get",
    "list",
    "list-filtered",
    "history",
    "health",
];

const USAGE: &str = "usage: cargo bench --bench transitions -- [--clients N] [--connections C] \
[--seconds S] [--pgbench-seconds T] [--pgbench-scale K] [--seed-cases N] [--rounds R] \
[--phases a,b,..] \
[--server PATH] [--server-arg ARG]...";

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        clients: 16,
        connections: 4,
        seconds: 10,
        pgbench_seconds: 10,
        pgbench_scale: 10,
        seed_cases: 2000,
        rounds: 3,
        phases: PHASES.iter().map(|p| (*p).to_owned()).collect(),
        server: PathBuf::from(env!("CARGO_BIN_EXE_invoice-cases")),
        server_args: Vec::new(),
        given: Vec::new(),
    };
    let mut bench = false;
    let mut raw = std::env::args().skip(1);
    while let Some(arg) = raw.next() {
        if arg == "--bench" {
            bench = true;
            continue;
        }
        if arg == "--help" || arg == "-h" {
            return Err(USAGE.to_owned());
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        let value = match inline {
            Some(value) => value,
            None => raw
                .next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))?,
        };
        args.given.push(format!("{name} {value}"));
        let number = |value: &str| -> Result<u64, String> {
            value
                .parse::<u64>()
                .map_err(|e| format!("{name} {value:?}: {e}"))
        };
        match name.as_str() {
            "--clients" => args.clients = number(&value)?.max(1) as usize,
            "--connections" => args.connections = number(&value)?.max(1) as usize,
            "--seconds" => args.seconds = number(&value)?.max(1),
            "--pgbench-seconds" => args.pgbench_seconds = number(&value)?,
            "--pgbench-scale" => args.pgbench_scale = number(&value)?.max(1) as u32,
            "--seed-cases" => args.seed_cases = number(&value)? as usize,
            "--rounds" => args.rounds = number(&value)?.max(1) as usize,
            "--phases" => {
                args.phases = value.split(',').map(str::to_owned).collect();
                if let Some(bad) = args.phases.iter().find(|p| !PHASES.contains(&p.as_str())) {
                    return Err(format!("unknown phase {bad}; phases: {}", PHASES.join(",")));
                }
            }
            "--server" => args.server = PathBuf::from(value),
            "--server-arg" => args.server_args.push(value),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(bench.then_some(args))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!(
                "transitions benchmark: not run without --bench (use `cargo bench --bench transitions`)"
            );
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("\n*** BENCHMARK FAILED: see the problems reported above ***");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn progress(message: &str) {
    eprintln!("[transitions bench] {message}");
}

async fn run(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!(
        args.server.is_file(),
        "the server binary {} does not exist: run `cargo build --release` first",
        args.server.display()
    );
    progress("starting PostgreSQL");
    let cluster = Cluster::start_embedded().await?;
    let result = tokio::select! {
        result = bench(&args, &cluster) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if let Err(e) = cluster.stop().await {
        eprintln!("warning: cannot stop PostgreSQL: {e:#}");
    }
    result
}

/// One row of the report.
#[derive(Clone)]
struct Row {
    name: String,
    calls: u64,
    seconds: f64,
    latencies: Latencies,
    cpu: CpuPerOp,
    /// Committed transactions per WAL flush, where it matters.
    per_sync: Option<f64>,
}

impl Row {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.seconds.max(1e-9)
    }
}

/// Every round's rows, by measure, in the order measures first appeared.
#[derive(Default)]
struct Rounds {
    order: Vec<String>,
    rows: BTreeMap<String, Vec<Row>>,
}

impl Rounds {
    fn add(&mut self, row: Row) {
        if !self.rows.contains_key(&row.name) {
            self.order.push(row.name.clone());
        }
        self.rows.entry(row.name.clone()).or_default().push(row);
    }

    /// The row of `name` in round `round` (0-based), if measured.
    fn get(&self, name: &str, round: usize) -> Option<&Row> {
        self.rows.get(name)?.get(round)
    }
}

/// The databases every phase settles first (pgbench's and the server's).
static DATABASES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

const TPC_B: &str = "pgbench TPC-B";
const SELECT_ONLY: &str = "pgbench select-only";
const MUTATING: &str = "mutating RPCs of lifecycles (all)";
const GET: &str = "GetInvoiceCase";
const HEALTH: &str = "Health/Check (no database, no token)";

async fn bench(args: &Args, cluster: &Cluster) -> anyhow::Result<bool> {
    let mut problems: Vec<String> = Vec::new();
    let bin = cluster.bin_dir()?;
    let postmaster = cluster.postmaster_pid();
    let logs = tempdir()?;
    let threads = 2.min(args.clients as u32);
    let clients = args.clients as u32;
    let pgbench_url = cluster.url("pgbench_scratch");
    if args.pgbench_seconds > 0 {
        cluster.create_database("pgbench_scratch", None).await?;
        progress(&format!("pgbench -i -s {}", args.pgbench_scale));
        pgbench::init(&bin, &pgbench_url, args.pgbench_scale).await?;
    }

    // The server, on a database of its own in the same cluster.
    cluster.create_database("invoice_cases_bench", None).await?;
    let database_url = cluster.url("invoice_cases_bench");
    let mut databases = vec![database_url.clone()];
    if args.pgbench_seconds > 0 {
        databases.push(pgbench_url.clone());
    }
    let _ = DATABASES.set(databases);
    let secret = new_secret();
    let addr = free_addr();
    let server_log = logs.path().join("server.log");
    let log_file = std::fs::File::create(&server_log)?;
    let mut command = serve_command(&args.server, addr, &database_url, &secret);
    command
        .args(["--metrics-listen", &free_addr().to_string()])
        .args(&args.server_args)
        .stderr(Stdio::from(log_file));
    progress(&format!(
        "starting {} serve on {addr}",
        args.server.display()
    ));
    let server = ServerProcess::spawn(
        command,
        addr,
        Some(server_log.clone()),
        Duration::from_secs(60),
    )
    .await?;
    let server_pid = Some(server.pid());
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        channels.push(connect(addr).await?);
    }
    let clients_for = |prefix: &str, roles: &[&str]| -> Vec<Client> {
        (0..args.clients)
            .map(|i| {
                let token = token(&secret, &format!("{prefix}-{i}"), roles, None, 24 * 3600);
                authorized(channels[i % channels.len()].clone(), &token)
            })
            .collect()
    };
    let wants = |phase: &str| args.phases.iter().any(|p| p == phase);
    let pgbench_run = |script, name: &'static str, round: usize| {
        let bin = bin.clone();
        let url = pgbench_url.clone();
        let logs = logs.path().to_owned();
        async move {
            progress(&format!(
                "round {round}: pgbench {name}, {} s",
                args.pgbench_seconds
            ));
            pgbench_row(
                &bin, cluster, &url, script, name, clients, threads, args, postmaster, &logs,
            )
            .await
        }
    };

    let mut rounds = Rounds::default();
    let created: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let mut seeded = false;
    for round in 1..=args.rounds {
        if args.pgbench_seconds > 0 {
            rounds.add(pgbench_run(pgbench::Script::TpcB, "TPC-B", round).await?);
        }
        if wants("lifecycle") || created.lock().map(|c| c.is_empty()).unwrap_or(true) {
            progress(&format!(
                "round {round}: lifecycles, {} clients over {} connections, {} s",
                args.clients, args.connections, args.seconds
            ));
            let workers = clients_for("bench-agent", &["requester", "agent"]);
            let created = created.clone();
            let (phase, by_method) = run_phase(
                workers,
                args.seconds,
                server_pid,
                postmaster,
                cluster.admin_url(),
                move |worker, mut client, i| {
                    let created = created.clone();
                    Box::pin(async move {
                        let mut timings = Vec::with_capacity(6);
                        let id = lifecycle(&mut client, worker, i, &mut timings).await?;
                        created.lock().unwrap_or_else(|e| e.into_inner()).push(id);
                        Ok((client, timings))
                    })
                },
            )
            .await;
            problems.extend(phase.errors.iter().take(5).cloned());
            if !phase.errors.is_empty() {
                problems.push(format!("{} lifecycle calls failed", phase.errors.len()));
            }
            let mut all = Latencies::default();
            for latencies in by_method.values() {
                all.extend(latencies.clone());
            }
            rounds.add(Row {
                name: MUTATING.into(),
                calls: phase.calls,
                seconds: phase.seconds,
                latencies: all,
                cpu: phase.cpu,
                per_sync: phase.per_sync,
            });
            for (method, latencies) in by_method {
                rounds.add(Row {
                    name: format!("  {method}"),
                    calls: latencies.len() as u64,
                    seconds: phase.seconds,
                    latencies,
                    cpu: CpuPerOp::default(),
                    per_sync: None,
                });
            }
        }
        let ids: Arc<Vec<String>> =
            Arc::new(created.lock().unwrap_or_else(|e| e.into_inner()).clone());
        if ids.is_empty() {
            problems.push("no case was created: the read phases have nothing to read".into());
            break;
        }
        if !seeded && args.seed_cases > 0 && (wants("list") || wants("list-filtered")) {
            progress(&format!(
                "seeding {} cases in mixed states for the filters",
                args.seed_cases
            ));
            seed(
                clients_for("bench-agent", &["requester", "agent"]),
                args.seed_cases,
            )
            .await?;
            seeded = true;
        }
        if args.pgbench_seconds > 0 {
            rounds.add(pgbench_run(pgbench::Script::SelectOnly, "select-only", round).await?);
        }
        let readers = || clients_for("bench-viewer", &["viewer"]);
        if wants("get") {
            progress(&format!("round {round}: get, {} s", args.seconds));
            let ids = ids.clone();
            let (row, errors) = read_phase(
                GET,
                readers(),
                args,
                server_pid,
                postmaster,
                cluster,
                move |_, mut client, i| {
                    let id = ids[pick(i, ids.len())].clone();
                    Box::pin(async move {
                        let started = Instant::now();
                        client
                            .get_invoice_case(pb::GetInvoiceCaseRequest { case_id: id })
                            .await
                            .map_err(failed("GetInvoiceCase"))?;
                        Ok((client, vec![("GetInvoiceCase", started)]))
                    })
                },
            )
            .await;
            rounds.add(row);
            problems.extend(errors);
        }
        if wants("list") {
            progress(&format!("round {round}: list, {} s", args.seconds));
            let (row, errors) = read_phase(
                "ListInvoiceCases (page of 50)",
                readers(),
                args,
                server_pid,
                postmaster,
                cluster,
                |_, mut client, i| {
                    Box::pin(async move {
                        let pages =
                            list_pages(&mut client, String::new(), 1 + i as usize % 5).await?;
                        Ok((client, pages))
                    })
                },
            )
            .await;
            rounds.add(row);
            problems.extend(errors);
        }
        if wants("list-filtered") {
            progress(&format!("round {round}: list-filtered, {} s", args.seconds));
            let (row, errors) = read_phase(
                "ListInvoiceCases (filtered)",
                readers(),
                args,
                server_pid,
                postmaster,
                cluster,
                |worker, mut client, i| {
                    let filter = FILTERS[(worker + i as usize) % FILTERS.len()]
                        .replace("{w}", &(worker % ACCOUNTS).to_string());
                    Box::pin(async move {
                        let pages = list_pages(&mut client, filter, 1 + i as usize % 3).await?;
                        Ok((client, pages))
                    })
                },
            )
            .await;
            rounds.add(row);
            problems.extend(errors);
        }
        if wants("history") {
            progress(&format!("round {round}: history, {} s", args.seconds));
            let ids = ids.clone();
            let (row, errors) = read_phase(
                "ListStateChanges",
                readers(),
                args,
                server_pid,
                postmaster,
                cluster,
                move |_, mut client, i| {
                    let id = ids[pick(i.wrapping_mul(7), ids.len())].clone();
                    Box::pin(async move {
                        let started = Instant::now();
                        let page = client
                            .list_state_changes(pb::ListStateChangesRequest {
                                case_id: id,
                                page_size: 0,
                                page_token: String::new(),
                            })
                            .await
                            .map_err(failed("ListStateChanges"))?
                            .into_inner();
                        if page.events.len() != 6 {
                            return Err(format!(
                                "a lifecycle's history has {} events, not 6",
                                page.events.len()
                            ));
                        }
                        Ok((client, vec![("ListStateChanges", started)]))
                    })
                },
            )
            .await;
            rounds.add(row);
            problems.extend(errors);
        }
        if wants("health") {
            progress(&format!("round {round}: health checks, {} s", args.seconds));
            let probes: Vec<HealthClient<Channel>> = (0..args.clients)
                .map(|i| HealthClient::new(channels[i % channels.len()].clone()))
                .collect();
            let (row, errors) = read_phase(
                HEALTH,
                probes,
                args,
                server_pid,
                postmaster,
                cluster,
                |_, mut client, _| {
                    Box::pin(async move {
                        let started = Instant::now();
                        client
                            .check(HealthCheckRequest {
                                service: String::new(),
                            })
                            .await
                            .map_err(failed("Health/Check"))?;
                        Ok((client, vec![("Check", started)]))
                    })
                },
            )
            .await;
            rounds.add(row);
            problems.extend(errors);
        }
    }
    drop(channels);

    progress("stopping the server (SIGTERM)");
    match server.terminate().await {
        Ok(status) if status.success() => {}
        Ok(status) => problems.push(format!("the server exited with {status}")),
        Err(e) => problems.push(format!("the server did not stop: {e:#}")),
    }
    let log = std::fs::read_to_string(&server_log).unwrap_or_default();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    if !warnings.is_empty() {
        problems.push(format!(
            "the server logged {} warnings or errors, e.g. {}",
            warnings.len(),
            warnings[0].chars().take(300).collect::<String>()
        ));
    }
    print_report(args, &mut rounds, &problems);
    Ok(problems.is_empty())
}

/// Accounts the benchmark's cases belong to.
const ACCOUNTS: usize = 20;

/// Filters of the `list-filtered` phase (`{w}` is a number below
/// [`ACCOUNTS`]).
const FILTERS: [&str; 6] = [
    "state = WORK_IN_PROGRESS",
    "account_id = \"ACME-{w}\"",
    "assigned_to = \"bench-agent-{w}\"",
    "priority = 2",
    "state = CLOSED AND account_id = \"ACME-{w}\"",
    "state != CLOSED AND priority = 1",
];

/// A pseudo-random index below `len` for call `i`.
fn pick(i: u64, len: usize) -> usize {
    let mut x = i
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0xD1B5_4A32_D192_ED03);
    x ^= x >> 31;
    (x % len.max(1) as u64) as usize
}

type Timings = Vec<(&'static str, Instant)>;
type OpFuture<C> = Pin<Box<dyn Future<Output = Result<(C, Timings), String>> + Send>>;

/// What one phase measured.
struct Phase {
    calls: u64,
    seconds: f64,
    cpu: CpuPerOp,
    per_sync: Option<f64>,
    errors: Vec<String>,
}

/// Runs `op` in a loop on every client until `seconds` have passed; each
/// op returns the start instants of the RPCs it made (each ends when the
/// next starts, the last when the op returns).
async fn run_phase<C, F>(
    clients: Vec<C>,
    seconds: u64,
    server_pid: Option<u32>,
    postmaster: Option<u32>,
    admin_url: &str,
    op: F,
) -> (Phase, BTreeMap<&'static str, Latencies>)
where
    C: Send + 'static,
    F: Fn(usize, C, u64) -> OpFuture<C> + Send + Sync + 'static,
{
    let op = Arc::new(op);
    let _ = settle(admin_url, DATABASES.get().map_or(&[][..], Vec::as_slice)).await;
    let counters_start = PgCounters::read(admin_url).await.ok();
    let cpu_start = CpuSample::take(server_pid, postmaster);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (worker, client) in clients.into_iter().enumerate() {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut by_method: BTreeMap<&'static str, Latencies> = BTreeMap::new();
            let mut errors = Vec::new();
            let mut calls = 0u64;
            let mut client = Some(client);
            let mut i = worker as u64 * 1_000_003;
            while Instant::now() < deadline {
                let Some(c) = client.take() else { break };
                match op(worker, c, i).await {
                    Ok((c, timings)) => {
                        let end = Instant::now();
                        let mut starts = timings.iter().map(|(_, at)| *at).skip(1).chain([end]);
                        for (method, started) in &timings {
                            let ended = starts.next().unwrap_or(end);
                            let us = ended.saturating_duration_since(*started).as_micros();
                            by_method
                                .entry(*method)
                                .or_default()
                                .push_us(u32::try_from(us).unwrap_or(u32::MAX));
                        }
                        calls += timings.len() as u64;
                        client = Some(c);
                    }
                    Err(error) => {
                        errors.push(error);
                        break;
                    }
                }
                i += 1;
            }
            (calls, by_method, errors)
        }));
    }
    let mut calls = 0;
    let mut by_method: BTreeMap<&'static str, Latencies> = BTreeMap::new();
    let mut errors = Vec::new();
    for task in tasks {
        match task.await {
            Ok((n, methods, errs)) => {
                calls += n;
                for (method, latencies) in methods {
                    by_method.entry(method).or_default().extend(latencies);
                }
                errors.extend(errs);
            }
            Err(e) => errors.push(format!("a client panicked: {e}")),
        }
    }
    let cpu_end = CpuSample::take(server_pid, postmaster);
    // Other sessions' counts reach the statistics up to a second late.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let counters_end = PgCounters::read(admin_url).await.ok();
    // Every call of a write phase commits one transaction that writes.
    let per_sync = match (counters_start, counters_end) {
        (Some(a), Some(b)) if b.wal_syncs > a.wal_syncs => {
            Some(calls as f64 / (b.wal_syncs - a.wal_syncs) as f64)
        }
        _ => None,
    };
    (
        Phase {
            calls,
            seconds: (cpu_end.at - cpu_start.at).as_secs_f64(),
            cpu: cpu_start.per_op_us(&cpu_end, calls),
            per_sync,
            errors,
        },
        by_method,
    )
}

/// A read phase: one row, and its problems.
async fn read_phase<C, F>(
    name: &str,
    clients: Vec<C>,
    args: &Args,
    server_pid: Option<u32>,
    postmaster: Option<u32>,
    cluster: &Cluster,
    op: F,
) -> (Row, Vec<String>)
where
    C: Send + 'static,
    F: Fn(usize, C, u64) -> OpFuture<C> + Send + Sync + 'static,
{
    let (phase, by_method) = run_phase(
        clients,
        args.seconds,
        server_pid,
        postmaster,
        cluster.admin_url(),
        op,
    )
    .await;
    let mut latencies = Latencies::default();
    for (_, l) in by_method {
        latencies.extend(l);
    }
    let mut problems: Vec<String> = phase.errors.iter().take(5).cloned().collect();
    if !phase.errors.is_empty() {
        problems.push(format!("{}: {} calls failed", name, phase.errors.len()));
    }
    (
        Row {
            name: name.to_owned(),
            calls: phase.calls,
            seconds: phase.seconds,
            latencies,
            cpu: phase.cpu,
            per_sync: None,
        },
        problems,
    )
}

/// A two-line case of `account`.
fn new_case(account: &str, priority: pb::invoice_case::Priority) -> pb::InvoiceCase {
    let line = |n: u32| pb::CaseLine {
        dispute_code: pb::case_line::DisputeCode::PricingDiscrepancy.into(),
        short_description: format!("Unit price of line {n} above the agreed one"),
        invoice_line_ref: n.to_string(),
        invoiced_amount: "125.00".into(),
        disputed_amount: "15.00".into(),
        ..Default::default()
    };
    pb::InvoiceCase {
        account_id: account.to_owned(),
        invoice_number: "ARINV0012345".into(),
        request_source: pb::invoice_case::RequestSource::SingleInvoice.into(),
        short_description: "Wrong unit prices".into(),
        currency_code: "EUR".into(),
        priority: priority.into(),
        lines: vec![line(10), line(20)],
        ..Default::default()
    }
}

fn failed(method: &str) -> impl Fn(tonic::Status) -> String + '_ {
    move |s| format!("{method}: {:?} {}", s.code(), s.message())
}

/// One whole lifecycle; returns the case id.
async fn lifecycle(
    client: &mut Client,
    worker: usize,
    i: u64,
    timings: &mut Timings,
) -> Result<String, String> {
    let account = format!("ACME-{}", worker % ACCOUNTS);
    timings.push(("CreateInvoiceCase", Instant::now()));
    let case = client
        .create_invoice_case(pb::CreateInvoiceCaseRequest {
            invoice_case: Some(new_case(&account, priority(i))),
            request_id: String::new(),
            comment: String::new(),
        })
        .await
        .map_err(failed("CreateInvoiceCase"))?
        .into_inner();
    let id = case.id.clone();
    timings.push(("SubmitCase", Instant::now()));
    client
        .submit_case(pb::SubmitCaseRequest {
            case_id: id.clone(),
            ..Default::default()
        })
        .await
        .map_err(failed("SubmitCase"))?;
    timings.push(("AssignToMe", Instant::now()));
    client
        .assign_to_me(pb::AssignToMeRequest {
            case_id: id.clone(),
            ..Default::default()
        })
        .await
        .map_err(failed("AssignToMe"))?;
    for (line, state) in case
        .lines
        .iter()
        .zip([LineState::ResolvedAccepted, LineState::ResolvedDenied])
    {
        timings.push(("SetLineState", Instant::now()));
        client
            .set_line_state(pb::SetLineStateRequest {
                case_id: id.clone(),
                line_id: line.id.clone(),
                state: state.into(),
                resolution_code: pb::invoice_case::ResolutionCode::SolvedCredit.into(),
                ..Default::default()
            })
            .await
            .map_err(failed("SetLineState"))?;
    }
    timings.push(("CloseCase", Instant::now()));
    let closed = client
        .close_case(pb::CloseCaseRequest {
            case_id: id.clone(),
            ..Default::default()
        })
        .await
        .map_err(failed("CloseCase"))?
        .into_inner();
    if closed.state() != pb::invoice_case::State::Closed {
        return Err(format!("case {id} ended {:?}", closed.state()));
    }
    Ok(id)
}

fn priority(i: u64) -> pb::invoice_case::Priority {
    match i % 4 {
        0 => pb::invoice_case::Priority::Critical,
        1 => pb::invoice_case::Priority::High,
        2 => pb::invoice_case::Priority::Moderate,
        _ => pb::invoice_case::Priority::Low,
    }
}

/// Up to `pages` pages of a list, following the tokens.
async fn list_pages(client: &mut Client, filter: String, pages: usize) -> Result<Timings, String> {
    let mut timings = Vec::new();
    let mut page_token = String::new();
    for _ in 0..pages {
        timings.push(("ListInvoiceCases", Instant::now()));
        let page = client
            .list_invoice_cases(pb::ListInvoiceCasesRequest {
                page_size: 50,
                page_token,
                filter: filter.clone(),
            })
            .await
            .map_err(failed("ListInvoiceCases"))?
            .into_inner();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(timings)
}

/// Creates `count` cases spread over every state but CLOSED, the accounts
/// and the priorities (not measured).
async fn seed(clients: Vec<Client>, count: usize) -> anyhow::Result<()> {
    let per = count.div_ceil(clients.len());
    let mut tasks = Vec::new();
    for (worker, mut client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..per as u64 {
                let account = format!("ACME-{}", (worker + i as usize) % ACCOUNTS);
                let case = client
                    .create_invoice_case(pb::CreateInvoiceCaseRequest {
                        invoice_case: Some(new_case(&account, priority(i))),
                        request_id: String::new(),
                        comment: String::new(),
                    })
                    .await
                    .map_err(failed("CreateInvoiceCase"))?
                    .into_inner();
                let id = case.id;
                let depth = i % 6;
                if depth == 0 {
                    continue;
                }
                if depth == 1 {
                    client
                        .cancel_case(pb::CancelCaseRequest {
                            case_id: id,
                            ..Default::default()
                        })
                        .await
                        .map_err(failed("CancelCase"))?;
                    continue;
                }
                client
                    .submit_case(pb::SubmitCaseRequest {
                        case_id: id.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(failed("SubmitCase"))?;
                if depth == 2 {
                    continue;
                }
                client
                    .assign_to_me(pb::AssignToMeRequest {
                        case_id: id.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(failed("AssignToMe"))?;
                if depth == 4 {
                    client
                        .request_information(pb::RequestInformationRequest {
                            case_id: id.clone(),
                            ..Default::default()
                        })
                        .await
                        .map_err(failed("RequestInformation"))?;
                }
                if depth == 5 {
                    client
                        .propose_solution(pb::ProposeSolutionRequest {
                            case_id: id.clone(),
                            resolution_code: pb::invoice_case::ResolutionCode::SolvedCredit.into(),
                            resolution_notes: "credit note".into(),
                            default_outcome: pb::case_line::State::ResolvedAccepted.into(),
                            ..Default::default()
                        })
                        .await
                        .map_err(failed("ProposeSolution"))?;
                }
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await?.map_err(|e| anyhow!(e))?;
    }
    Ok(())
}

/// One pgbench run as a report row.
#[allow(clippy::too_many_arguments)]
async fn pgbench_row(
    bin: &Path,
    cluster: &Cluster,
    url: &str,
    script: pgbench::Script,
    name: &str,
    clients: u32,
    threads: u32,
    args: &Args,
    postmaster: Option<u32>,
    logs: &Path,
) -> anyhow::Result<Row> {
    let _ = settle(
        cluster.admin_url(),
        DATABASES.get().map_or(&[][..], Vec::as_slice),
    )
    .await;
    let counters_start = PgCounters::read(cluster.admin_url()).await.ok();
    let cpu_start = CpuSample::take(None, postmaster);
    let run = pgbench::run(
        bin,
        url,
        script,
        clients,
        threads,
        args.pgbench_seconds,
        logs,
    )
    .await?;
    let cpu_end = CpuSample::take(None, postmaster);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let counters_end = PgCounters::read(cluster.admin_url()).await.ok();
    // A TPC-B transaction writes; a select-only one does not.
    let per_sync = match (script, counters_start, counters_end) {
        (pgbench::Script::TpcB, Some(a), Some(b)) if b.wal_syncs > a.wal_syncs => {
            Some(run.transactions as f64 / (b.wal_syncs - a.wal_syncs) as f64)
        }
        _ => None,
    };
    let mut cpu = cpu_start.per_op_us(&cpu_end, run.transactions);
    // pgbench is another process: this one's CPU is not the client's.
    cpu.client = 0.0;
    Ok(Row {
        name: format!("pgbench {name}"),
        calls: run.transactions,
        seconds: args.pgbench_seconds as f64,
        latencies: run.latencies,
        cpu,
        per_sync,
    })
}

fn tempdir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("invoice-cases-bench-")
        .tempdir()
        .context("cannot create a temporary directory")
}

/// The median of `values` (0 when there are none).
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn print_report(args: &Args, rounds: &mut Rounds, problems: &[String]) {
    let command = format!(
        "cargo bench --bench transitions -- {}",
        args.given.join(" ")
    );
    let clients = args.clients as u32;
    println!();
    println!("## transitions benchmark");
    println!();
    println!("command: `{}`", command.trim_end());
    println!(
        "machine: {} CPUs, load average {}; {} clients over {} HTTP/2 connections; {} rounds of \
         {} s per phase; pgbench: `{}` and `{}` on the same cluster (scale {}), in every round",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|t| t.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default(),
        args.clients,
        args.connections,
        args.rounds,
        args.seconds,
        pgbench::command_line(
            pgbench::Script::TpcB,
            clients,
            2.min(clients),
            args.pgbench_seconds
        ),
        pgbench::command_line(
            pgbench::Script::SelectOnly,
            clients,
            2.min(clients),
            args.pgbench_seconds
        ),
        args.pgbench_scale,
    );
    println!();
    println!("Medians over the rounds:");
    println!();
    println!(
        "| measure | calls/s | p50 ms | p99 ms | server CPU µs/call | PostgreSQL CPU µs/call | load generator CPU µs/call | writing transactions per WAL flush |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let order = rounds.order.clone();
    for name in &order {
        let Some(rows) = rounds.rows.get_mut(name) else {
            continue;
        };
        let of = |f: &dyn Fn(&mut Row) -> f64, rows: &mut Vec<Row>| {
            median(rows.iter_mut().map(f).collect())
        };
        let rate = of(&|r| r.rate(), rows);
        let p50 = of(&|r| r.latencies.percentile_ms(0.50), rows);
        let p99 = of(&|r| r.latencies.percentile_ms(0.99), rows);
        let server = of(&|r| r.cpu.server, rows);
        let postgres = of(&|r| r.cpu.postgres, rows);
        let client = of(&|r| r.cpu.client, rows);
        let syncs: Vec<f64> = rows.iter().filter_map(|r| r.per_sync).collect();
        let cpu = |v: f64| {
            if v > 0.0 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        };
        println!(
            "| {name} | {rate:.0} | {p50:.2} | {p99:.2} | {} | {} | {} | {} |",
            cpu(server),
            cpu(postgres),
            cpu(client),
            if syncs.is_empty() {
                String::new()
            } else {
                format!("{:.2}", median(syncs))
            },
        );
    }
    // The main measures round by round, to show drift.
    println!();
    println!("Round by round (calls/s, PostgreSQL CPU µs/call):");
    println!();
    println!(
        "| measure | {} |",
        (1..=args.rounds)
            .map(|r| format!("round {r}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---:|".repeat(args.rounds));
    for name in [TPC_B, MUTATING, SELECT_ONLY, GET] {
        let Some(rows) = rounds.rows.get(name) else {
            continue;
        };
        let cells: Vec<String> = rows
            .iter()
            .map(|r| format!("{:.0} ({:.0})", r.rate(), r.cpu.postgres))
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    // Ratios within each round, then their median.
    let mut ratios: Vec<(&str, &str, Vec<f64>)> = vec![
        ("mutating RPCs/s ÷ TPC-B tps", "≥ 0.8", Vec::new()),
        ("mutating RPC p99 ÷ TPC-B p99", "≤ 2", Vec::new()),
        ("GetInvoiceCase/s ÷ select-only tps", "≥ 0.7", Vec::new()),
    ];
    for round in 0..args.rounds {
        let row = |name: &str| rounds.get(name, round).cloned();
        if let (Some(mut writes), Some(mut tpcb)) = (row(MUTATING), row(TPC_B)) {
            ratios[0].2.push(writes.rate() / tpcb.rate());
            ratios[1]
                .2
                .push(writes.latencies.percentile_ms(0.99) / tpcb.latencies.percentile_ms(0.99));
        }
        if let (Some(get), Some(select)) = (row(GET), row(SELECT_ONLY)) {
            ratios[2].2.push(get.rate() / select.rate());
        }
    }
    println!();
    println!("| ratio, within each round | rounds | median | goal |");
    println!("|---|---|---:|---:|");
    for (name, goal, values) in ratios {
        if values.is_empty() {
            continue;
        }
        let shown: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
        println!(
            "| {name} | {} | {:.2} | {goal} |",
            shown.join(", "),
            median(values.clone())
        );
    }
    println!();
    if problems.is_empty() {
        println!("RESULT: OK (every call succeeded)");
    } else {
        println!("RESULT: FAILED");
        for problem in problems {
            println!("  !!! {problem}");
        }
    }
    println!("reproduce with: {}", command.trim_end());
}
