//! Crash recovery of the embedded default: the real binary, without
//! DATABASE_URL, on a data directory of each test's own, killed with
//! SIGKILL. A restarted server adopts the PostgreSQL its predecessor left
//! running and stops it on exit; a `postmaster.pid` left by a dead
//! postmaster, or naming a pid that now belongs to another process, does
//! not keep the cluster from starting; a live postmaster that does not
//! answer is reported, and left alone.

use std::{
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use invoice_cases::{embedded::find_binaries, pb};
use invoice_cases_test_support::{ServerProcess, free_addr, token};
use tokio::{process::Command, time::Instant};

use crate::{
    binary::{BIN, new_secret, strip_ansi},
    helpers::*,
    process::{client, free_port},
};

/// How long a start may take here (initdb included, on a loaded machine).
const START_LIMIT: Duration = Duration::from_secs(90);
/// How long a start on an existing cluster may take: far more than it
/// needs, far less than a start that waits for a postmaster that is gone.
const RESTART_LIMIT: Duration = Duration::from_secs(30);

/// A temporary data directory; on drop, every PostgreSQL process of its
/// cluster is ended (a failing test leaves nothing running) and the
/// directory removed.
struct DataDir {
    dir: tempfile::TempDir,
}

impl DataDir {
    fn new() -> Self {
        DataDir {
            dir: tempfile::Builder::new()
                .prefix("invoice-cases-recovery-")
                .tempdir()
                .expect("a temporary data directory"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The cluster directory (the PostgreSQL user can reach a directory
    /// under the temporary directory, so the cluster lives inside it).
    fn cluster(&self) -> PathBuf {
        self.path().join("postgres")
    }

    /// The pid and the whole text of the cluster's `postmaster.pid`.
    fn postmaster_pid(&self) -> Option<(i32, String)> {
        let text = std::fs::read_to_string(self.cluster().join("postmaster.pid")).ok()?;
        let pid = text.lines().next()?.trim().parse().ok()?;
        Some((pid, text))
    }

    /// The uid and gid the cluster runs as (its directory's owner).
    fn owner(&self) -> (u32, u32) {
        let meta = std::fs::metadata(self.cluster()).expect("the cluster directory");
        (meta.uid(), meta.gid())
    }

    /// `pg_ctl ARGS -D <cluster>` as the cluster's owner.
    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        let bin = find_binaries(None).expect("the PostgreSQL programs");
        let (uid, gid) = self.owner();
        let mut command = std::process::Command::new(bin.join("pg_ctl"));
        command
            .args(args)
            .arg("-D")
            .arg(self.cluster())
            .env("LC_ALL", "C")
            .current_dir("/")
            .stdin(Stdio::null());
        if is_root() {
            command.uid(uid).gid(gid);
        }
        command.output().expect("run pg_ctl")
    }

    /// Live processes (zombies do not count) running in the cluster's
    /// directory: its postmaster and the postmaster's children.
    fn processes(&self) -> Vec<i32> {
        let cluster = std::fs::canonicalize(self.cluster()).unwrap_or_else(|_| self.cluster());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == cluster)
                    && alive(*pid)
            })
            .collect()
    }

    /// Waits up to `limit` for every process of the cluster to end.
    async fn wait_no_processes(&self, limit: Duration) -> Vec<i32> {
        let deadline = Instant::now() + limit;
        loop {
            let left = self.processes();
            if left.is_empty() || Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asserts that the cluster is stopped: no process of it left, and
    /// `pg_ctl status` says no server runs.
    async fn assert_stopped(&self) {
        let left = self.wait_no_processes(Duration::from_secs(10)).await;
        assert!(
            left.is_empty(),
            "PostgreSQL processes of {} still run: {left:?}",
            self.cluster().display()
        );
        let status = self.pg_ctl(&["status"]);
        assert_eq!(
            status.status.code(),
            Some(3),
            "pg_ctl status says a server runs: {}",
            String::from_utf8_lossy(&status.stdout)
        );
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.cluster().join("PG_VERSION").exists() {
            // Through the postmaster first, which releases its shared
            // memory; then whatever is left (a postmaster pg_ctl did not
            // find, orphaned children).
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "10"]);
            for pid in self.processes() {
                // SAFETY: kill(2) on a process of this test's cluster.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// `invoice-cases serve` on the embedded default of a data directory, its
/// logs captured; killed (SIGKILL) when dropped.
struct EmbeddedServer {
    addr: std::net::SocketAddr,
    process: ServerProcess,
    secret: String,
}

impl EmbeddedServer {
    /// Starts the server; does not wait for it.
    fn spawn(data_dir: &Path, secret: &str) -> Self {
        let addr = free_addr();
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--metrics-listen", "off"])
            .env_remove("DATABASE_URL")
            .env_remove("INVOICE_CASES_DATA_DIR")
            .env_remove("PG_BIN_DIR")
            .env("JWT_SECRET", secret)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        EmbeddedServer {
            addr,
            process: ServerProcess::start_capturing(command, addr)
                .expect("start invoice-cases serve"),
            secret: secret.to_owned(),
        }
    }

    /// Starts the server and waits until it serves; returns it with the
    /// time that took.
    async fn start(data_dir: &Path, secret: &str, limit: Duration) -> (Self, Duration) {
        let started = Instant::now();
        let mut server = Self::spawn(data_dir, secret);
        if let Err(e) = server.process.wait_serving(limit).await {
            panic!("{e:#}");
        }
        (server, started.elapsed())
    }

    /// What the server logged so far.
    fn logs(&self) -> String {
        self.process
            .log_lines()
            .all()
            .iter()
            .map(|line| strip_ansi(line))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGKILL, and waits for the process to be gone.
    async fn kill9(&mut self) {
        self.process
            .kill_in_place()
            .await
            .expect("kill -9 the server");
    }

    /// Waits up to `limit` for the process to exit by itself.
    async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        self.process
            .wait_exit(limit)
            .await
            .expect("wait for the server")
            .unwrap_or_else(|| panic!("the server did not exit within {limit:?}"))
    }

    /// SIGTERM, and waits for the exit.
    async fn terminate(&mut self) -> ExitStatus {
        self.process
            .signal(libc::SIGTERM)
            .expect("SIGTERM the server");
        self.wait_exit(Duration::from_secs(60)).await
    }

    async fn admin(&self) -> Client {
        client(
            self.addr,
            &token(&self.secret, "admin", &["admin"], None, 3600),
        )
        .await
    }
}

/// A process this test started, killed and reaped when dropped.
struct Spawned(std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `pid` is a live process (a zombie is not).
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may
    // hold anything.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// Starts a server on a fresh data directory, creates a case, and returns
/// both.
async fn first_start(data: &DataDir) -> (EmbeddedServer, pb::InvoiceCase) {
    let (server, took) = EmbeddedServer::start(data.path(), &new_secret(), START_LIMIT).await;
    eprintln!("first start (initdb included): {took:?}");
    assert!(
        data.cluster().join("PG_VERSION").exists(),
        "the cluster is not in {}:\n{}",
        data.cluster().display(),
        server.logs()
    );
    let mut admin = server.admin().await;
    let case = create(&mut admin, "ACME", 2).await;
    (server, case)
}

/// The case is still there, unchanged.
async fn assert_case_kept(server: &EmbeddedServer, case: &pb::InvoiceCase) {
    let mut admin = server.admin().await;
    let found = get(&mut admin, &case.id).await;
    assert_eq!(found.number, case.number);
    assert_eq!(found.etag, case.etag);
    assert_eq!(found.lines.len(), case.lines.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_with_sigkill_leaves_its_postgres_to_the_next_one_which_stops_it() {
    let data = DataDir::new();
    let (mut first, case) = first_start(&data).await;
    let (postmaster, _) = data.postmaster_pid().expect("a running postmaster");

    first.kill9().await;
    // The postmaster is not the server's child: it outlives it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alive(postmaster), "PostgreSQL ended with its server");

    let (mut second, took) = EmbeddedServer::start(data.path(), &first.secret, RESTART_LIMIT).await;
    eprintln!("start on the running cluster: {took:?}");
    assert_eq!(
        data.postmaster_pid().map(|(pid, _)| pid),
        Some(postmaster),
        "the running cluster was adopted, not started again:\n{}",
        second.logs()
    );
    assert_case_kept(&second, &case).await;

    let status = second.terminate().await;
    assert!(status.success(), "{status}:\n{}", second.logs());
    assert!(!alive(postmaster), "the adopted postmaster still runs");
    data.assert_stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_postmaster_s_pid_file_does_not_keep_the_cluster_from_starting() {
    let data = DataDir::new();
    let (mut first, case) = first_start(&data).await;
    let (postmaster, pid_file) = data.postmaster_pid().expect("a running postmaster");

    // The machine's crash, as far as the data directory can tell: the
    // server and its postmaster die at once, postmaster.pid stays behind.
    first.kill9().await;
    // SAFETY: kill(2) on the test cluster's postmaster.
    assert_eq!(unsafe { libc::kill(postmaster, libc::SIGKILL) }, 0);
    assert_eq!(
        data.postmaster_pid().map(|(_, text)| text),
        Some(pid_file),
        "the pid file is left behind"
    );

    let (mut second, took) = EmbeddedServer::start(data.path(), &first.secret, RESTART_LIMIT).await;
    eprintln!("start after the postmaster's death: {took:?}");
    let (restarted, _) = data.postmaster_pid().expect("a running postmaster");
    assert_ne!(restarted, postmaster, "a new postmaster runs the cluster");
    assert_case_kept(&second, &case).await;

    let status = second.terminate().await;
    assert!(status.success(), "{status}:\n{}", second.logs());
    data.assert_stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pid_file_naming_a_live_process_that_is_not_postgres_does_not_keep_the_cluster_from_starting()
 {
    let data = DataDir::new();
    let (mut first, case) = first_start(&data).await;
    let (_, pid_file) = data.postmaster_pid().expect("a running postmaster");
    let status = first.terminate().await;
    assert!(status.success(), "{status}:\n{}", first.logs());
    data.assert_stopped().await;

    // A reused pid: the pid file of a crash names a process that lives,
    // of the cluster's own user (PostgreSQL takes a process of another
    // user for a stale pid by itself), and is no postmaster.
    let (uid, gid) = data.owner();
    let mut sleeper = std::process::Command::new("sleep");
    sleeper
        .arg("60")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if is_root() {
        sleeper.uid(uid).gid(gid);
    }
    let sleeper = Spawned(sleeper.spawn().expect("start sleep"));
    let impostor = sleeper.0.id() as i32;
    let stale: String = std::iter::once(impostor.to_string())
        .chain(pid_file.lines().skip(1).map(str::to_owned))
        .map(|line| line + "\n")
        .collect();
    let path = data.cluster().join("postmaster.pid");
    std::fs::write(&path, stale).expect("write postmaster.pid");
    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown postmaster.pid");

    let (mut second, took) = EmbeddedServer::start(data.path(), &first.secret, RESTART_LIMIT).await;
    eprintln!("start with a pid file naming `sleep`: {took:?}");
    let (postmaster, _) = data.postmaster_pid().expect("a running postmaster");
    assert_ne!(postmaster, impostor, "a postmaster runs the cluster");
    assert!(
        alive(impostor),
        "the process the pid file named was left alone"
    );
    assert_case_kept(&second, &case).await;

    let status = second.terminate().await;
    assert!(status.success(), "{status}:\n{}", second.logs());
    data.assert_stopped().await;
    assert!(
        alive(impostor),
        "the process the pid file named was left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_postmaster_that_does_not_answer_is_reported_and_left_running() {
    let data = DataDir::new();
    let (mut first, _) = first_start(&data).await;
    let status = first.terminate().await;
    assert!(status.success(), "{status}:\n{}", first.logs());
    data.assert_stopped().await;

    // Someone runs the cluster by hand, on a Unix socket only: it holds
    // the directory, and the service cannot reach it.
    let socket_dir = data.cluster().to_string_lossy().into_owned();
    let options = format!(
        "-p {} -c listen_addresses='' -c unix_socket_directories='{socket_dir}'",
        free_port()
    );
    let log = data.cluster().join("by-hand.log");
    let started = data.pg_ctl(&[
        "start",
        "-w",
        "-t",
        "60",
        "-l",
        &log.to_string_lossy(),
        "-o",
        &options,
    ]);
    assert!(
        started.status.success(),
        "pg_ctl start: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let (postmaster, _) = data.postmaster_pid().expect("a running postmaster");

    let began = Instant::now();
    let mut second = EmbeddedServer::spawn(data.path(), &first.secret);
    let status = second.wait_exit(Duration::from_secs(60)).await;
    let logs = second.logs();
    eprintln!("refused after {:?}:\n{logs}", began.elapsed());
    assert!(!status.success(), "the server started:\n{logs}");
    assert!(
        logs.contains(&postmaster.to_string()) && logs.contains("pg_ctl stop"),
        "the error names the postmaster and how to stop it:\n{logs}"
    );
    assert!(
        alive(postmaster),
        "the postmaster the server did not own was stopped"
    );
}
