//! Watch benchmark: many WatchStateChanges subscribers while writers move
//! cases through their states, measured in one run against the real server
//! binary and a PostgreSQL cluster of the benchmark's own.
//!
//! ```text
//! cargo build --release && cargo bench --bench watch -- --subscribers 1000
//! ```
//!
//! Options (after `--`): `--subscribers N` (1000), `--writers W` (4),
//! `--seconds S` (20), `--channels C` (20, the HTTP/2 connections the
//! subscribers share), `--server PATH` (the release binary),
//! `--pgbench-seconds T` (10; 0 skips pgbench), `--drain-timeout-seconds D`
//! (120), `--server-arg ARG` (repeatable, passed on to `serve`).
//!
//! What it measures:
//! * commit time = the instant a writer's RPC returned (the server answers
//!   after the transaction committed, so this is a little after the commit);
//! * delivery time = the instant a subscriber read the event off its stream;
//! * latency = delivery - commit, over every (subscriber, event) pair (it
//!   can be negative when a subscriber saw the event before the writer saw
//!   its response);
//! * server memory = VmRSS of the server process, sampled every 250 ms;
//! * pgbench on the same cluster right before and after, so that writes/s
//!   can be read as a ratio on a noisy machine.
//!
//! Every subscriber must receive every written event exactly once, in order
//! per case; anything else is reported as a bug and the exit status is 1.
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it does nothing.

use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use invoice_cases::pb::{
    self, WatchStateChangesRequest,
    invoice_case_service_client::InvoiceCaseServiceClient,
    state_change_event::Action,
    watch_state_changes_request::{FromBeginning, Start},
    watch_state_changes_response::Kind,
};
use invoice_cases_test_support::{
    Bearer, Cluster, ServerProcess, connect, free_addr, measure::cpu_seconds, new_secret, pgbench,
    serve_command, token,
};
use tokio::{sync::watch, time::Instant};
use tonic::{Status, Streaming, service::interceptor::InterceptedService, transport::Channel};

/// Events one case cycle writes: create, submit, assign to me, request
/// information, information received, propose solution, close.
const STEPS: usize = 7;
/// An empty slot (no commit, no receipt).
const NONE: u32 = u32::MAX;
/// Slots grow by this many at a time (keeps the vectors' slack small).
const GROW: usize = 4096;
/// More slots per writer than this means a garbled event.
const MAX_SLOTS: usize = 200_000_000;

// ---- arguments -----------------------------------------------------------

#[derive(Debug, Clone)]
struct Args {
    subscribers: usize,
    writers: usize,
    seconds: u64,
    channels: usize,
    server: PathBuf,
    pgbench_seconds: u64,
    drain_timeout: u64,
    server_args: Vec<String>,
    /// The arguments as given (without cargo's `--bench`).
    given: Vec<String>,
}

const USAGE: &str = "usage: cargo bench --bench watch -- [--subscribers N] [--writers W] \
[--seconds S] [--channels C] [--server PATH] [--pgbench-seconds T] \
[--drain-timeout-seconds D] [--server-arg ARG]...";

/// The arguments; `None` when not run by `cargo bench` (no `--bench`).
fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        subscribers: 1000,
        writers: 4,
        seconds: 20,
        channels: 20,
        server: PathBuf::from(env!("CARGO_BIN_EXE_invoice-cases")),
        pgbench_seconds: 10,
        drain_timeout: 120,
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
        args.given.push(name.clone());
        args.given.push(value.clone());
        let number = |value: &str| -> Result<u64, String> {
            value
                .parse::<u64>()
                .map_err(|e| format!("{name} {value:?}: {e}"))
        };
        match name.as_str() {
            "--subscribers" => args.subscribers = number(&value)? as usize,
            "--writers" => args.writers = number(&value)? as usize,
            "--seconds" => args.seconds = number(&value)?,
            "--channels" => args.channels = number(&value)? as usize,
            "--server" => args.server = PathBuf::from(value),
            "--pgbench-seconds" => args.pgbench_seconds = number(&value)?,
            "--drain-timeout-seconds" => args.drain_timeout = number(&value)?,
            "--server-arg" => args.server_args.push(value),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if !bench {
        return Ok(None);
    }
    if args.writers == 0 || args.channels == 0 || args.seconds == 0 {
        return Err(format!(
            "--writers, --channels and --seconds must be positive\n{USAGE}"
        ));
    }
    if args.seconds > 3600 {
        return Err("--seconds is at most 3600 (times are kept as u32 microseconds)".into());
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("watch benchmark: not run without --bench (use `cargo bench --bench watch`)");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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

/// Runs the benchmark between starting and removing the cluster; `Ok(false)`
/// when events were lost, duplicated or reordered, or calls failed.
async fn run(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!(
        args.server.is_file(),
        "the server binary {} does not exist: run `cargo build --release` first",
        args.server.display()
    );
    let dir = tempfile::Builder::new()
        .prefix("invoice-cases-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    progress("starting PostgreSQL");
    let cluster = Cluster::start_embedded().await?;
    let result = tokio::select! {
        result = bench(&args, &cluster, dir.path()) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if let Err(e) = cluster.stop().await {
        eprintln!("warning: cannot stop PostgreSQL: {e:#}");
    }
    if let Err(e) = dir.close() {
        eprintln!("warning: cannot remove the temporary directory: {e}");
    }
    result
}

fn progress(message: &str) {
    eprintln!("[watch bench] {message}");
}

// ---- the run ---------------------------------------------------------------

/// Everything measured, for the report.
#[derive(Default)]
struct Report {
    lines: Vec<(String, String)>,
    problems: Vec<String>,
}

impl Report {
    fn add(&mut self, name: &str, value: impl Into<String>) {
        self.lines.push((name.to_owned(), value.into()));
    }

    fn section(&mut self, title: &str) {
        self.lines.push((String::new(), title.to_owned()));
    }

    fn problem(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    fn print(&self) {
        println!();
        println!("================ watch benchmark ================");
        for (name, value) in &self.lines {
            if name.is_empty() {
                println!("\n-- {value}");
            } else {
                println!("{name:<44} {value}");
            }
        }
        println!();
        if self.problems.is_empty() {
            println!(
                "RESULT: OK (every subscriber received every event exactly once, in order per case)"
            );
        } else {
            println!("RESULT: FAILED ({} problems)", self.problems.len());
            for problem in &self.problems {
                println!("  !!! {problem}");
            }
        }
        println!("=================================================");
    }
}

async fn bench(args: &Args, cluster: &Cluster, dir: &Path) -> anyhow::Result<bool> {
    let mut report = Report::default();
    let command_line = format!(
        "cargo build --release && cargo bench --bench watch -- {}",
        args.given.join(" ")
    );
    report.section("setup");
    report.add("command", command_line.trim_end());
    report.add("git commit", git_commit());
    report.add("server binary", args.server.display().to_string());
    report.add("CPUs (available parallelism)", cpus());
    let load_start = loadavg();
    report.add(
        "subscribers / channels / writers",
        format!(
            "{} over {} HTTP/2 connections / {} (own connection each)",
            args.subscribers, args.channels, args.writers
        ),
    );
    report.add(
        "write phase",
        format!(
            "{} s of case cycles of {STEPS} events (create with 2 lines, submit, assign, \
             request info, info received, propose, close)",
            args.seconds
        ),
    );

    // pgbench before, on a scratch database of the same cluster.
    let pg_bin = cluster.bin_dir()?;
    let mut pgbench_tps = Vec::new();
    let pgbench_url = cluster.url("pgbench_scratch");
    if args.pgbench_seconds > 0 {
        cluster.create_database("pgbench_scratch", None).await?;
        progress("pgbench -i");
        pgbench::init(&pg_bin, &pgbench_url, 1).await?;
        progress(&format!("pgbench (before), {} s", args.pgbench_seconds));
        pgbench_tps.push(pgbench_run(&pg_bin, &pgbench_url, args, dir).await?);
    }

    // The server.
    let secret = new_secret();
    let log_path = dir.join("server.log");
    cluster.create_database("invoice_cases_bench", None).await?;
    let server = start_server(
        args,
        &cluster.url("invoice_cases_bench"),
        &secret,
        &log_path,
    )
    .await?;
    let pid = server.pid();
    let rss_start = rss_kib(pid).unwrap_or(0);
    let rss_peak = Arc::new(AtomicU64::new(rss_start));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let rss_peak = rss_peak.clone();
        let sampling = sampling.clone();
        async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(rss) = rss_kib(pid) {
                    rss_peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    });

    let start = Instant::now();
    let subscriber_token = bearer(&secret, "bench-subscriber", &["viewer"]);
    let mut channels = Vec::with_capacity(args.channels);
    for _ in 0..args.channels {
        channels.push(connect(server.addr).await?);
    }

    // Subscribers.
    progress(&format!("opening {} subscribers", args.subscribers));
    let (stop_tx, stop_rx) = watch::channel(false);
    let states: Arc<Vec<SubState>> =
        Arc::new((0..args.subscribers).map(|_| SubState::default()).collect());
    let mut subscribers = Vec::with_capacity(args.subscribers);
    let open_started = Instant::now();
    for i in 0..args.subscribers {
        let client = InvoiceCaseServiceClient::with_interceptor(
            channels[i % channels.len()].clone(),
            subscriber_token.clone(),
        );
        subscribers.push(tokio::spawn(subscriber(
            i,
            client,
            states.clone(),
            start,
            args.writers,
            stop_rx.clone(),
        )));
    }
    let open_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending = states
            .iter()
            .filter(|s| s.phase.load(Ordering::Acquire) == OPENING)
            .count();
        if pending == 0 || Instant::now() > open_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_time = open_started.elapsed();
    let opened = states
        .iter()
        .filter(|s| s.phase.load(Ordering::Acquire) == OPEN)
        .count();
    let rss_open = rss_kib(pid).unwrap_or(0);
    progress(&format!(
        "{opened} of {} subscribers open in {:.2} s",
        args.subscribers,
        open_time.as_secs_f64()
    ));
    if opened < args.subscribers {
        report.problem(format!(
            "only {opened} of {} subscribers could open their stream (see the subscriber \
             errors below)",
            args.subscribers
        ));
    }

    // Writers.
    progress(&format!("{} writers for {} s", args.writers, args.seconds));
    let write_start = Instant::now();
    let cpu_start = (cpu_seconds(&pid.to_string()), cpu_seconds("self"));
    let deadline = write_start + Duration::from_secs(args.seconds);
    let mut writers = Vec::with_capacity(args.writers);
    for w in 0..args.writers {
        let token = bearer(
            &secret,
            &format!("bench-writer-{w}"),
            &["requester", "agent"],
        );
        let client = InvoiceCaseServiceClient::with_interceptor(connect(server.addr).await?, token);
        writers.push(tokio::spawn(writer(w, client, start, deadline)));
    }
    let mut written = Vec::with_capacity(args.writers);
    for (w, handle) in writers.into_iter().enumerate() {
        written.push(
            handle
                .await
                .with_context(|| format!("writer {w} panicked"))?,
        );
    }
    let writers_done = Instant::now();
    let writers_done_us = micros(start, writers_done);
    let events_written: u64 = written.iter().map(|w| w.events).sum();
    let expected_checksum = written
        .iter()
        .fold(0u64, |sum, w| sum.wrapping_add(w.checksum));
    progress(&format!(
        "{events_written} events written; waiting for every subscriber to receive them"
    ));

    // Drain: every open subscriber has every event, and has been sent a
    // progress message after the writers stopped (so nothing more is on its
    // way: a late duplicate would show up).
    let drain_deadline = writers_done + Duration::from_secs(args.drain_timeout);
    let mut all_received_at = None;
    let drained = loop {
        let mut complete = 0;
        let mut quiet = 0;
        let mut open = 0;
        for state in states.iter() {
            if state.phase.load(Ordering::Acquire) != OPEN {
                continue;
            }
            open += 1;
            if state.received.load(Ordering::Acquire) >= events_written {
                complete += 1;
                if state.last_progress_us.load(Ordering::Acquire) > writers_done_us
                    && state.last_progress_us.load(Ordering::Acquire) != NONE
                {
                    quiet += 1;
                }
            }
        }
        if complete == open && all_received_at.is_none() {
            all_received_at = Some(Instant::now());
        }
        if quiet == open {
            break true;
        }
        if Instant::now() > drain_deadline {
            progress(&format!(
                "drain timeout: {complete} of {open} open subscribers have every event"
            ));
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rss_end = rss_kib(pid).unwrap_or(0);
    let cpu_end = (cpu_seconds(&pid.to_string()), cpu_seconds("self"));
    let busy_wall = write_start.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    let rss_peak = rss_peak.load(Ordering::Relaxed).max(rss_end);

    // Stop the subscribers, then the server.
    stop_tx.send_replace(true);
    let mut results = Vec::with_capacity(subscribers.len());
    for (i, handle) in subscribers.into_iter().enumerate() {
        results.push(
            handle
                .await
                .with_context(|| format!("subscriber {i} panicked"))?,
        );
    }
    drop(channels);
    progress("stopping the server (SIGTERM)");
    let exit = server.terminate().await;
    let server_log = std::fs::read_to_string(&log_path).unwrap_or_default();

    if args.pgbench_seconds > 0 {
        progress(&format!("pgbench (after), {} s", args.pgbench_seconds));
        pgbench_tps.push(pgbench_run(&pg_bin, &pgbench_url, args, dir).await?);
    }

    // ---- analysis ----
    let write_secs = (writers_done - write_start).as_secs_f64();
    let write_rate = events_written as f64 / write_secs;
    let mut rpc_us: Vec<u32> = written
        .iter_mut()
        .flat_map(|w| w.rpc_us.drain(..))
        .collect();
    rpc_us.sort_unstable();
    let writer_errors: u64 = written.iter().map(|w| w.error_count).sum();

    report.add(
        "load average at start / end",
        format!("{load_start} / {}", loadavg()),
    );

    report.section("writes");
    report.add(
        "events written (acknowledged RPCs)",
        events_written.to_string(),
    );
    report.add(
        "cases started",
        written.iter().map(|w| w.cases).sum::<u64>().to_string(),
    );
    report.add("write phase duration", format!("{write_secs:.2} s"));
    report.add("writes/s", format!("{write_rate:.1}"));
    report.add(
        "write RPC latency p50 / p99 / max",
        format!(
            "{} / {} / {}",
            ms(percentile_u32(&rpc_us, 0.50)),
            ms(percentile_u32(&rpc_us, 0.99)),
            ms(rpc_us.last().map_or(0, |v| i64::from(*v)))
        ),
    );
    if writer_errors > 0 {
        let examples: Vec<&String> = written.iter().flat_map(|w| &w.errors).take(5).collect();
        report.problem(format!(
            "{writer_errors} writer RPCs failed, e.g. {examples:?}"
        ));
    }

    // Pairs (subscriber, event).
    let writer_commits: Vec<&[u32]> = written.iter().map(|w| w.commits.as_slice()).collect();
    let mut last_delivery: Vec<Vec<u32>> = writer_commits
        .iter()
        .map(|commits| vec![NONE; commits.len()])
        .collect();
    let mut latencies: Vec<i32> =
        Vec::with_capacity((events_written as usize).saturating_mul(opened));
    let mut missing = 0u64;
    let mut subscribers_missing = 0usize;
    let mut unacknowledged = 0u64;
    let mut duplicates = 0u64;
    let mut out_of_order = 0u64;
    let mut foreign = 0u64;
    let mut reconnects = 0u64;
    let mut gave_up = 0usize;
    let mut checksum_mismatch = 0usize;
    let mut last_receipt_us = 0u32;
    let mut open_errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut stream_errors: BTreeMap<String, usize> = BTreeMap::new();
    for result in results {
        for error in &result.stream_errors {
            *stream_errors.entry(error.clone()).or_default() += 1;
        }
        reconnects += u64::from(result.reconnects);
        gave_up += usize::from(result.gave_up);
        if let Some(error) = result.open_error {
            *open_errors.entry(error).or_default() += 1;
            continue;
        }
        duplicates += result.duplicates;
        out_of_order += result.out_of_order;
        foreign += result.foreign;
        let mut own_missing = 0u64;
        for (w, commits) in writer_commits.iter().enumerate() {
            let receipts = result.receipts.get(w).map_or(&[][..], Vec::as_slice);
            for (slot, &commit) in commits.iter().enumerate() {
                let receipt = receipts.get(slot).copied().unwrap_or(NONE);
                match (commit != NONE, receipt != NONE) {
                    (true, true) => {
                        let latency = i64::from(receipt) - i64::from(commit);
                        latencies.push(latency.clamp(i32::MIN.into(), i32::MAX.into()) as i32);
                        let last = &mut last_delivery[w][slot];
                        *last = if *last == NONE {
                            receipt
                        } else {
                            (*last).max(receipt)
                        };
                        last_receipt_us = last_receipt_us.max(receipt);
                    }
                    (true, false) => own_missing += 1,
                    (false, true) => unacknowledged += 1,
                    (false, false) => {}
                }
            }
            unacknowledged += receipts
                .iter()
                .skip(commits.len())
                .filter(|r| **r != NONE)
                .count() as u64;
        }
        if own_missing > 0 {
            subscribers_missing += 1;
            missing += own_missing;
        }
        if writer_errors == 0 && result.checksum != expected_checksum {
            checksum_mismatch += 1;
        }
    }
    let deliveries = latencies.len() as u64;
    latencies.sort_unstable();
    let mut fanout: Vec<i64> = Vec::with_capacity(events_written as usize);
    for (w, commits) in writer_commits.iter().enumerate() {
        for (slot, &commit) in commits.iter().enumerate() {
            let last = last_delivery[w][slot];
            if commit != NONE && last != NONE {
                fanout.push(i64::from(last) - i64::from(commit));
            }
        }
    }
    fanout.sort_unstable();
    let delivery_window =
        f64::from(last_receipt_us.saturating_sub(micros(start, write_start))) / 1_000_000.0;
    let negative = latencies.iter().take_while(|l| **l < 0).count();

    report.section("delivery");
    report.add(
        "subscribers open / asked",
        format!(
            "{opened} / {} (opened in {:.2} s)",
            args.subscribers,
            open_time.as_secs_f64()
        ),
    );
    report.add(
        "events delivered in total",
        format!(
            "{deliveries} (expected {} = {opened} subscribers x {events_written} events)",
            events_written * opened as u64
        ),
    );
    report.add(
        "delivered events/s",
        format!(
            "{:.0} (deliveries / {delivery_window:.2} s from first write to last delivery)",
            deliveries as f64 / delivery_window.max(1e-9)
        ),
    );
    report.add(
        "commit-to-delivery latency p50",
        ms(percentile_i32(&latencies, 0.50)),
    );
    report.add(
        "                            p90",
        ms(percentile_i32(&latencies, 0.90)),
    );
    report.add(
        "                            p99",
        ms(percentile_i32(&latencies, 0.99)),
    );
    report.add(
        "                            max",
        ms(latencies.last().map_or(0, |v| i64::from(*v))),
    );
    report.add(
        "  (over every subscriber x event pair;",
        "commit = the writer's RPC returned, after the commit)",
    );
    report.add(
        "pairs delivered before the RPC returned",
        format!("{negative} (negative latency, counted as such)"),
    );
    report.add(
        "commit to delivered at ALL subs p50 / p99",
        format!(
            "{} / {} (max {})",
            ms(percentile_i64(&fanout, 0.50)),
            ms(percentile_i64(&fanout, 0.99)),
            ms(fanout.last().copied().unwrap_or(0))
        ),
    );
    report.add(
        "last commit to all delivered",
        match all_received_at {
            Some(at) => format!("{:.3} s", (at - writers_done).as_secs_f64()),
            None => "never (timeout)".to_owned(),
        },
    );
    report.add(
        "stream reconnects (resumed by cursor)",
        reconnects.to_string(),
    );

    if let ((Some(server0), Some(bench0)), (Some(server1), Some(bench1))) = (cpu_start, cpu_end) {
        report.add(
            "CPU s, first write to end of drain",
            format!(
                "server {:.1}, benchmark {:.1} (wall {busy_wall:.1} s, {} CPUs)",
                server1 - server0,
                bench1 - bench0,
                cpus()
            ),
        );
    }

    report.section("server memory (VmRSS)");
    report.add("at start (SERVING, no streams)", mib(rss_start));
    report.add(
        format!("with {opened} streams open, before writes").as_str(),
        mib(rss_open),
    );
    report.add("peak (sampled every 250 ms)", mib(rss_peak));
    report.add("at end (all delivered, streams open)", mib(rss_end));
    if opened > 0 {
        report.add(
            "per open stream (open - start)",
            format!(
                "{:.1} KiB",
                rss_open.saturating_sub(rss_start) as f64 / opened as f64
            ),
        );
    }
    report.add(
        "benchmark process peak (VmHWM)",
        mib(self_hwm_kib().unwrap_or(0)),
    );

    report.section("pgbench on the same cluster");
    if pgbench_tps.is_empty() {
        report.add("pgbench", "skipped (--pgbench-seconds 0)");
    } else {
        let workers = args.writers.min(2);
        report.add(
            "command",
            format!(
                "pgbench -c {} -j {workers} -T {} -N (after pgbench -i, scale 1)",
                args.writers, args.pgbench_seconds
            ),
        );
        let shown: Vec<String> = pgbench_tps.iter().map(|t| format!("{t:.1}")).collect();
        report.add("TPS before / after the watch run", shown.join(" / "));
        let mean = pgbench_tps.iter().sum::<f64>() / pgbench_tps.len() as f64;
        report.add(
            "writes/s / pgbench TPS (mean of both)",
            format!("{:.3}", write_rate / mean),
        );
    }

    report.section("server");
    report.add(
        "exit after SIGTERM",
        match exit {
            Ok(status) => status.to_string(),
            Err(e) => format!("{e:#}"),
        },
    );
    let warnings: Vec<&str> = server_log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    report.add("log warnings / errors", warnings.len().to_string());
    for line in warnings.iter().take(5) {
        report.add("  log", line.chars().take(200).collect::<String>());
    }
    if !open_errors.is_empty() {
        for (error, count) in &open_errors {
            report.add("subscriber could not open", format!("{count} x {error}"));
        }
    }
    for (error, count) in &stream_errors {
        report.add("stream ended early (resumed)", format!("{count} x {error}"));
    }

    // ---- verdict ----
    if !drained {
        report.problem(format!(
            "not every subscriber received every event within {} s of the last write",
            args.drain_timeout
        ));
    }
    if missing > 0 {
        report.problem(format!(
            "MISSING EVENTS: {missing} (subscriber, event) pairs never arrived, at \
             {subscribers_missing} subscribers"
        ));
    }
    if duplicates > 0 {
        report.problem(format!(
            "DUPLICATED EVENTS: {duplicates} deliveries were repeats"
        ));
    }
    if out_of_order > 0 {
        report.problem(format!(
            "OUT OF ORDER: {out_of_order} events of one case arrived after a later event of it"
        ));
    }
    if checksum_mismatch > 0 {
        report.problem(format!(
            "{checksum_mismatch} subscribers received (case_id, etag) pairs other than the \
             ones the writers were returned"
        ));
    }
    if foreign > 0 {
        report.problem(format!(
            "{foreign} events of unknown cases or actions were delivered"
        ));
    }
    if unacknowledged > 0 && writer_errors == 0 {
        report.problem(format!(
            "{unacknowledged} deliveries of events no writer was told about"
        ));
    }
    if gave_up > 0 {
        report.problem(format!("{gave_up} streams broke and could not be resumed"));
    }
    report.print();
    println!("reproduce with: {}", command_line.trim_end());
    Ok(report.problems.is_empty())
}

// ---- subscribers -----------------------------------------------------------

const OPENING: u8 = 0;
const OPEN: u8 = 1;
const FAILED: u8 = 2;

/// What the main task watches of one subscriber while it runs.
struct SubState {
    phase: AtomicU8,
    /// Distinct events received.
    received: AtomicU64,
    /// When the last progress message came (µs since start; NONE: never).
    last_progress_us: AtomicU32,
}

impl Default for SubState {
    fn default() -> Self {
        SubState {
            phase: AtomicU8::new(OPENING),
            received: AtomicU64::new(0),
            last_progress_us: AtomicU32::new(NONE),
        }
    }
}

/// What one subscriber saw.
#[derive(Default)]
struct SubResult {
    /// Per writer, per slot (case * STEPS + step): µs since start of the
    /// first receipt, NONE if never.
    receipts: Vec<Vec<u32>>,
    duplicates: u64,
    out_of_order: u64,
    /// Events not of a benchmark case or action.
    foreign: u64,
    /// Sum of hash(case_id, etag) over distinct events.
    checksum: u64,
    reconnects: u32,
    /// The stream broke and could not be resumed.
    gave_up: bool,
    open_error: Option<String>,
    stream_errors: Vec<String>,
}

type Client = InvoiceCaseServiceClient<InterceptedService<Channel, Bearer>>;

async fn subscriber(
    index: usize,
    mut client: Client,
    states: Arc<Vec<SubState>>,
    start: Instant,
    writers: usize,
    mut stop: watch::Receiver<bool>,
) -> SubResult {
    let state = &states[index];
    let mut result = SubResult {
        receipts: vec![Vec::new(); writers],
        ..SubResult::default()
    };
    let opened = tokio::time::timeout(
        Duration::from_secs(60),
        client.watch_state_changes(WatchStateChangesRequest::default()),
    )
    .await;
    let mut stream = match opened {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => {
            result.open_error = Some(describe(&status));
            state.phase.store(FAILED, Ordering::Release);
            return result;
        }
        Err(_) => {
            result.open_error = Some("no response within 60 s".to_owned());
            state.phase.store(FAILED, Ordering::Release);
            return result;
        }
    };
    state.phase.store(OPEN, Ordering::Release);
    // The last position read: where a broken stream resumes.
    let mut cursor: Option<String> = None;
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            message = stream.message() => message,
        };
        match message {
            Ok(Some(message)) => match message.kind {
                Some(Kind::Event(event)) => {
                    let now = micros(start, Instant::now());
                    record(&mut result, state, &event, now);
                    cursor = Some(event.cursor);
                }
                Some(Kind::Progress(p)) => {
                    state
                        .last_progress_us
                        .store(micros(start, Instant::now()), Ordering::Release);
                    cursor = Some(p.cursor);
                }
                _ => result.foreign += 1,
            },
            Ok(None) | Err(_) => {
                let error = match message {
                    Err(status) => describe(&status),
                    _ => "the stream ended without a status".to_owned(),
                };
                result.stream_errors.push(error);
                match resume(&mut client, cursor.clone(), &mut stop).await {
                    Some(resumed) => {
                        result.reconnects += 1;
                        stream = resumed;
                    }
                    None => {
                        if !*stop.borrow() {
                            result.gave_up = true;
                            state.phase.store(FAILED, Ordering::Release);
                        }
                        break;
                    }
                }
            }
        }
    }
    result
}

/// Opens the stream again after `cursor` (from the beginning when nothing
/// was read yet: the database holds only the benchmark's events). Gives up
/// after a few tries or when told to stop.
async fn resume(
    client: &mut Client,
    cursor: Option<String>,
    stop: &mut watch::Receiver<bool>,
) -> Option<Streaming<pb::WatchStateChangesResponse>> {
    let start = match cursor {
        Some(cursor) => Start::AfterCursor(cursor),
        None => Start::FromBeginning(FromBeginning {}),
    };
    for attempt in 0..10u32 {
        if *stop.borrow() {
            return None;
        }
        let request = WatchStateChangesRequest {
            start: Some(start.clone()),
            ..WatchStateChangesRequest::default()
        };
        if let Ok(response) = client.watch_state_changes(request).await {
            return Some(response.into_inner());
        }
        tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
    }
    None
}

/// Files one event under its slot.
fn record(result: &mut SubResult, state: &SubState, event: &pb::StateChangeEvent, now: u32) {
    let Some((writer, case)) = parse_account(&event.account_id) else {
        result.foreign += 1;
        return;
    };
    let Some(step) = step_of(event.action()) else {
        result.foreign += 1;
        return;
    };
    let slot = case.saturating_mul(STEPS).saturating_add(step);
    let Some(receipts) = result.receipts.get_mut(writer) else {
        result.foreign += 1;
        return;
    };
    if slot >= MAX_SLOTS {
        result.foreign += 1;
        return;
    }
    grow(receipts, slot);
    if receipts[slot] != NONE {
        result.duplicates += 1;
        return;
    }
    receipts[slot] = now;
    // A later event of the same case already here: this one is late.
    if step + 1 < STEPS && receipts.get(slot + 1).is_some_and(|r| *r != NONE) {
        result.out_of_order += 1;
    }
    result.checksum = result
        .checksum
        .wrapping_add(event_hash(&event.case_id, &event.etag));
    state.received.fetch_add(1, Ordering::Release);
}

/// Makes `slots[slot]` exist, growing by [`GROW`] slots at a time.
fn grow(slots: &mut Vec<u32>, slot: usize) {
    if slot < slots.len() {
        return;
    }
    let len = (slot / GROW + 1) * GROW;
    slots.reserve_exact(len - slots.len());
    slots.resize(len, NONE);
}

fn step_of(action: Action) -> Option<usize> {
    Some(match action {
        Action::Create => 0,
        Action::Submit => 1,
        Action::AssignToMe => 2,
        Action::RequestInformation => 3,
        Action::InformationReceived => 4,
        Action::ProposeSolution => 5,
        Action::Close => 6,
        _ => return None,
    })
}

/// The account of writer `w`'s case `c`.
fn account(writer: usize, case: usize) -> String {
    format!("bench-w{writer}-c{case}")
}

fn parse_account(account: &str) -> Option<(usize, usize)> {
    let rest = account.strip_prefix("bench-w")?;
    let (writer, case) = rest.split_once("-c")?;
    Some((writer.parse().ok()?, case.parse().ok()?))
}

fn event_hash(case_id: &str, etag: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    case_id.hash(&mut hasher);
    etag.hash(&mut hasher);
    hasher.finish()
}

fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

// ---- writers ---------------------------------------------------------------

/// What one writer wrote.
#[derive(Default)]
struct Written {
    /// Per slot (case * STEPS + step): µs since start when the RPC returned.
    commits: Vec<u32>,
    events: u64,
    cases: u64,
    /// Sum of hash(case_id, etag) over the returned cases.
    checksum: u64,
    /// RPC durations in µs.
    rpc_us: Vec<u32>,
    error_count: u64,
    errors: Vec<String>,
}

async fn writer(index: usize, mut client: Client, start: Instant, deadline: Instant) -> Written {
    let mut out = Written::default();
    let mut case_number = 0usize;
    'cases: while Instant::now() < deadline {
        let case = case_number;
        case_number += 1;
        out.cases += 1;
        let mut id = String::new();
        for step in 0..STEPS {
            if Instant::now() >= deadline {
                break 'cases;
            }
            let began = Instant::now();
            let result = transition(&mut client, step, index, case, &id).await;
            let returned = Instant::now();
            match result {
                Ok(returned_case) => {
                    let slot = case * STEPS + step;
                    grow(&mut out.commits, slot);
                    out.commits[slot] = micros(start, returned);
                    out.events += 1;
                    out.checksum = out
                        .checksum
                        .wrapping_add(event_hash(&returned_case.id, &returned_case.etag));
                    out.rpc_us.push(micros(began, returned));
                    id = returned_case.id;
                }
                Err(status) => {
                    out.error_count += 1;
                    if out.errors.len() < 10 {
                        out.errors
                            .push(format!("step {step}: {}", describe(&status)));
                    }
                    // The case's state is unknown now: start a new one.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'cases;
                }
            }
        }
    }
    out
}

/// Makes step `step` of a case cycle.
async fn transition(
    client: &mut Client,
    step: usize,
    writer: usize,
    case: usize,
    id: &str,
) -> Result<pb::InvoiceCase, Status> {
    let case_id = id.to_owned();
    let response = match step {
        0 => {
            client
                .create_invoice_case(pb::CreateInvoiceCaseRequest {
                    invoice_case: Some(new_case(&account(writer, case))),
                    request_id: String::new(),
                    comment: String::new(),
                })
                .await
        }
        1 => {
            client
                .submit_case(pb::SubmitCaseRequest {
                    case_id,
                    ..Default::default()
                })
                .await
        }
        2 => {
            client
                .assign_to_me(pb::AssignToMeRequest {
                    case_id,
                    ..Default::default()
                })
                .await
        }
        3 => {
            client
                .request_information(pb::RequestInformationRequest {
                    case_id,
                    ..Default::default()
                })
                .await
        }
        4 => {
            client
                .information_received(pb::InformationReceivedRequest {
                    case_id,
                    ..Default::default()
                })
                .await
        }
        5 => {
            client
                .propose_solution(pb::ProposeSolutionRequest {
                    case_id,
                    resolution_code: pb::invoice_case::ResolutionCode::SolvedCredit.into(),
                    resolution_notes: "credit note issued".into(),
                    default_outcome: pb::case_line::State::ResolvedAccepted.into(),
                    ..Default::default()
                })
                .await
        }
        _ => {
            client
                .close_case(pb::CloseCaseRequest {
                    case_id,
                    ..Default::default()
                })
                .await
        }
    };
    response.map(tonic::Response::into_inner)
}

/// A single-invoice case of `account` with two lines.
fn new_case(account: &str) -> pb::InvoiceCase {
    let line = |n: usize| pb::CaseLine {
        dispute_code: pb::case_line::DisputeCode::PricingDiscrepancy.into(),
        short_description: format!("line {n}"),
        invoiced_amount: "100.00".into(),
        disputed_amount: "40.00".into(),
        ..Default::default()
    };
    pb::InvoiceCase {
        account_id: account.to_owned(),
        invoice_number: "ARINV0012345".into(),
        request_source: pb::invoice_case::RequestSource::SingleInvoice.into(),
        short_description: "Invoice disputed (benchmark)".into(),
        currency_code: "EUR".into(),
        lines: vec![line(1), line(2)],
        ..Default::default()
    }
}

// ---- the server process ----------------------------------------------------

fn bearer(secret: &str, sub: &str, roles: &[&str]) -> Bearer {
    Bearer::token(Some(&token(secret, sub, roles, None, 24 * 3600)))
}

async fn start_server(
    args: &Args,
    database_url: &str,
    secret: &str,
    log: &Path,
) -> anyhow::Result<ServerProcess> {
    let addr = free_addr();
    let log_file = std::fs::File::create(log).context("cannot create the server log")?;
    progress(&format!(
        "starting {} serve --listen {addr}",
        args.server.display()
    ));
    let mut command = serve_command(&args.server, addr, database_url, secret);
    command
        .args(["--watch-progress-interval-seconds", "5"])
        .args(&args.server_args)
        // Servers that serve metrics default to a fixed port, which another
        // server on the machine may hold.
        .env("METRICS_LISTEN", free_addr().to_string())
        .env("RUST_LOG", "warn")
        .stderr(Stdio::from(log_file));
    ServerProcess::spawn(command, addr, Some(log.to_owned()), Duration::from_secs(60)).await
}

// ---- pgbench ---------------------------------------------------------------

async fn pgbench_run(bin: &Path, url: &str, args: &Args, logs: &Path) -> anyhow::Result<f64> {
    let clients = args.writers as u32;
    let run = pgbench::run(
        bin,
        url,
        pgbench::Script::SimpleUpdate,
        clients,
        clients.min(2),
        args.pgbench_seconds,
        logs,
    )
    .await?;
    Ok(run.tps)
}

// ---- small helpers -----------------------------------------------------------

/// µs from `start` to `at`, as u32 (saturating below NONE).
fn micros(start: Instant, at: Instant) -> u32 {
    let us = at.saturating_duration_since(start).as_micros();
    u32::try_from(us).unwrap_or(NONE - 1).min(NONE - 1)
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    status_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// This process's peak resident memory in KiB.
fn self_hwm_kib() -> Option<u64> {
    status_field("/proc/self/status", "VmHWM:")
}

fn status_field(path: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn ms(us: i64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

/// Nearest-rank percentile of sorted values.
fn rank(len: usize, q: f64) -> Option<usize> {
    if len == 0 {
        return None;
    }
    let rank = (q * len as f64).ceil() as usize;
    Some(rank.clamp(1, len) - 1)
}

fn percentile_i32(sorted: &[i32], q: f64) -> i64 {
    rank(sorted.len(), q).map_or(0, |i| i64::from(sorted[i]))
}

fn percentile_i64(sorted: &[i64], q: f64) -> i64 {
    rank(sorted.len(), q).map_or(0, |i| sorted[i])
}

fn percentile_u32(sorted: &[u32], q: f64) -> i64 {
    rank(sorted.len(), q).map_or(0, |i| i64::from(sorted[i]))
}

/// The 1-minute load average.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn cpus() -> String {
    std::thread::available_parallelism().map_or_else(|e| e.to_string(), |n| n.to_string())
}

fn git_commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match run(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty = run(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{commit} (with uncommitted changes)")
            } else {
                commit
            }
        }
        None => "unknown".to_owned(),
    }
}
