//! The embedded default: a PostgreSQL cluster of the service's own, in its
//! data directory, from the PostgreSQL binaries installed on the machine.
//!
//! The cluster listens on 127.0.0.1 only, on a port chosen at each start,
//! with password authentication (the password is generated once and kept in
//! the data directory, mode 0600). PostgreSQL refuses to run as root, so
//! when the service runs as root the cluster belongs to, and runs as, an
//! unprivileged user (`postgres` when it exists, else `nobody`).

use std::{
    fs,
    io::Write,
    net::TcpListener,
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, bail};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::process::Command;

/// How long a postmaster left running gets to answer before the service
/// gives up on it.
const ADOPT_WAIT: Duration = Duration::from_secs(10);

/// The database the service uses inside the cluster.
pub const DATABASE: &str = "invoice_cases";
/// The cluster's superuser, which the service connects as.
pub const USER: &str = "invoice_cases";

/// A running cluster of the embedded default. `Debug` leaves the password
/// out.
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    cluster_dir: PathBuf,
    owner: Option<Owner>,
    port: u16,
    password: String,
    /// Whether this process stops the cluster: it started it, or adopted
    /// it from a predecessor that died without stopping it.
    started_here: bool,
}

impl std::fmt::Debug for EmbeddedPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedPostgres")
            .field("bin_dir", &self.bin_dir)
            .field("cluster_dir", &self.cluster_dir)
            .field("owner", &self.owner)
            .field("port", &self.port)
            .field("password", &"[REDACTED]")
            .field("started_here", &self.started_here)
            .finish()
    }
}

/// What the pid in a cluster's `postmaster.pid` is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// No such process (or a zombie): the pid file is stale.
    Dead,
    /// A live process that is not a postmaster of this cluster (the pid
    /// was reused): the pid file is stale.
    Other,
    /// A live postmaster running on the cluster's directory.
    Postmaster,
}

/// The unprivileged user that owns and runs the cluster when we are root.
#[derive(Debug, Clone)]
struct Owner {
    name: String,
    uid: u32,
    gid: u32,
}

impl EmbeddedPostgres {
    /// Initialises (the first time) and starts the cluster of `data_dir`,
    /// and creates the service's database in it.
    pub async fn start(data_dir: &Path, bin_dir: Option<&Path>) -> anyhow::Result<Self> {
        let bin_dir = find_binaries(bin_dir)?;
        fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let data_dir = fs::canonicalize(data_dir)?;
        let owner = if is_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let cluster_dir = match &owner {
            Some(owner) => cluster_dir_for(&data_dir, owner)?,
            None => data_dir.join("postgres"),
        };
        let password = load_or_create_password(&data_dir)?;
        let mut cluster = EmbeddedPostgres {
            bin_dir,
            cluster_dir,
            owner,
            port: 0,
            password,
            started_here: false,
        };
        if !cluster.cluster_dir.join("PG_VERSION").exists() {
            cluster.init().await?;
        }
        match cluster.pid_file() {
            None => cluster.start_server().await?,
            Some((pid, port)) => match cluster.holder(pid) {
                Holder::Postmaster => cluster.adopt(pid, port).await?,
                holder => {
                    // A crash left the file behind; PostgreSQL itself would
                    // refuse to start while a live process of its user
                    // holds the pid.
                    tracing::warn!(pid, ?holder, dir = %cluster.cluster_dir.display(), "removing the stale postmaster.pid of the embedded PostgreSQL");
                    let path = cluster.cluster_dir.join("postmaster.pid");
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(e)
                                .with_context(|| format!("cannot remove {}", path.display()));
                        }
                    }
                    cluster.start_server().await?;
                }
            },
        }
        cluster.create_database().await?;
        Ok(cluster)
    }

    /// Takes over a postmaster a previous server left running (it was
    /// killed before it could stop it), when it answers on its port as
    /// this cluster's superuser: this process stops it on exit. One that
    /// does not answer is not ours to use or stop.
    async fn adopt(&mut self, pid: i32, port: Option<u16>) -> anyhow::Result<()> {
        let answered = match port {
            Some(port) => {
                self.port = port;
                tokio::time::timeout(ADOPT_WAIT, connect_with_retry(&self.url("postgres")))
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|connected| connected.map(drop))
            }
            None => Err(anyhow::anyhow!("postmaster.pid names no port")),
        };
        if let Err(e) = answered {
            bail!(
                "PostgreSQL (pid {pid}) runs on the embedded cluster {dir} but does not answer \
                 on 127.0.0.1:{port} ({e:#}); stop it (`pg_ctl stop -D {dir}` as its owner) \
                 and start the service again",
                dir = self.cluster_dir.display(),
                port = port.map_or_else(|| "?".to_owned(), |p| p.to_string()),
            );
        }
        self.started_here = true;
        tracing::info!(pid, port = self.port, dir = %self.cluster_dir.display(), "adopted the embedded PostgreSQL a previous run left running; it is stopped on exit");
        Ok(())
    }

    /// The pid and port in the cluster's `postmaster.pid`, when there is
    /// one.
    fn pid_file(&self) -> Option<(i32, Option<u16>)> {
        let text = fs::read_to_string(self.cluster_dir.join("postmaster.pid")).ok()?;
        let mut lines = text.lines();
        let pid = lines.next()?.trim().parse().ok()?;
        let port = lines.nth(2).and_then(|line| line.trim().parse().ok());
        Some((pid, port))
    }

    /// Whether `pid` is a live postmaster of this cluster: a postmaster's
    /// working directory is its data directory.
    fn holder(&self, pid: i32) -> Holder {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return Holder::Dead;
        };
        // The state follows the command name, which is in parentheses.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if matches!(state, None | Some('Z' | 'X')) {
            return Holder::Dead;
        }
        let cluster =
            fs::canonicalize(&self.cluster_dir).unwrap_or_else(|_| self.cluster_dir.clone());
        match fs::read_link(format!("/proc/{pid}/cwd")) {
            Ok(cwd) if cwd == cluster => Holder::Postmaster,
            Ok(_) => Holder::Other,
            // Not ours to inspect: a postmaster by its name, to be safe.
            Err(_) => {
                let name = stat
                    .split_once('(')
                    .and_then(|(_, rest)| rest.rsplit_once(')'))
                    .map(|(name, _)| name);
                if matches!(name, Some("postgres" | "postmaster")) {
                    Holder::Postmaster
                } else {
                    Holder::Other
                }
            }
        }
    }

    /// The URL of the service's database.
    pub fn database_url(&self) -> String {
        self.url(DATABASE)
    }

    /// The URL of another database of the cluster.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// The port the cluster listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory.
    pub fn cluster_dir(&self) -> &Path {
        &self.cluster_dir
    }

    /// Stops the cluster if this process started it.
    pub async fn stop(&self) -> anyhow::Result<()> {
        if !self.started_here {
            return Ok(());
        }
        let output = self
            .command("pg_ctl")
            .args(["stop", "-m", "fast", "-w", "-t", "60", "-D"])
            .arg(&self.cluster_dir)
            .output()
            .await
            .context("cannot run pg_ctl stop")?;
        if !output.status.success() {
            bail!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        tracing::info!("embedded PostgreSQL stopped");
        Ok(())
    }

    /// Stops the cluster at once, without waiting for clients (for tests
    /// that simulate a crash).
    pub async fn kill(&self) -> anyhow::Result<()> {
        let status = self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.cluster_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(status.success(), "pg_ctl stop -m immediate failed");
        Ok(())
    }

    /// Stops the cluster at once, synchronously (for exit handlers, where no
    /// runtime is left).
    pub fn kill_blocking(&self) {
        let mut command = std::process::Command::new(self.bin_dir.join("pg_ctl"));
        command
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.cluster_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(owner) = &self.owner {
            use std::os::unix::process::CommandExt;
            command.uid(owner.uid).gid(owner.gid).current_dir("/");
        }
        let _ = command.status();
    }

    /// Starts a stopped cluster again on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let port = self.port;
        self.start_on(port).await
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .kill_on_drop(false);
        if let Some(owner) = &self.owner {
            // std drops the supplementary groups when it changes the uid.
            command.uid(owner.uid).gid(owner.gid);
            command.current_dir("/");
        }
        command
    }

    async fn init(&self) -> anyhow::Result<()> {
        tracing::info!(dir = %self.cluster_dir.display(), "initialising the embedded PostgreSQL cluster");
        let parent = self
            .cluster_dir
            .parent()
            .context("the cluster directory has no parent")?;
        fs::create_dir_all(&self.cluster_dir)?;
        fs::set_permissions(&self.cluster_dir, fs::Permissions::from_mode(0o700))?;
        // initdb reads the superuser's password from a file.
        let pwfile = parent.join(format!(".pwfile-{}", std::process::id()));
        {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&pwfile)?;
            file.write_all(self.password.as_bytes())?;
        }
        if let Some(owner) = &self.owner {
            chown(&self.cluster_dir, owner)?;
            chown(&pwfile, owner)?;
        }
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(&self.cluster_dir)
            .args([
                "-U",
                USER,
                "-E",
                "UTF8",
                "--locale=C",
                "--auth=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .await
            .context("cannot run initdb")?;
        let _ = fs::remove_file(&pwfile);
        if !output.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    async fn start_server(&mut self) -> anyhow::Result<()> {
        let port = free_port()?;
        self.start_on(port).await?;
        self.started_here = true;
        Ok(())
    }

    async fn start_on(&mut self, port: u16) -> anyhow::Result<()> {
        let log = self.cluster_dir.join("server.log");
        // Only TCP on loopback: no socket directory to share or clean up.
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' \
             -c max_connections=200 -c fsync=on"
        );
        let output = self
            .command("pg_ctl")
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&self.cluster_dir)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(options)
            .stdout(Stdio::null())
            .output()
            .await
            .context("cannot run pg_ctl start")?;
        if !output.status.success() {
            let log_tail = fs::read_to_string(&log)
                .map(|text| {
                    text.lines()
                        .rev()
                        .take(10)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            bail!(
                "PostgreSQL did not start: {}\n{log_tail}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        self.port = port;
        tracing::info!(port, dir = %self.cluster_dir.display(), "embedded PostgreSQL started");
        Ok(())
    }

    async fn create_database(&self) -> anyhow::Result<()> {
        create_database(&self.url("postgres"), DATABASE).await
    }
}

/// Creates `database` on the server of `admin_url` unless it exists.
pub async fn create_database(admin_url: &str, database: &str) -> anyhow::Result<()> {
    use diesel::{
        QueryableByName,
        sql_types::{BigInt, Text},
    };
    use diesel_async::RunQueryDsl;

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = connect_with_retry(admin_url).await?;
    let count: Count =
        diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
            .bind::<Text, _>(database)
            .get_result(&mut conn)
            .await?;
    if count.n == 0 {
        anyhow::ensure!(
            database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "invalid database name {database:?}"
        );
        diesel::sql_query(format!("CREATE DATABASE {database}"))
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}

/// Connects, retrying for a few seconds while the server starts up.
async fn connect_with_retry(url: &str) -> anyhow::Result<diesel_async::AsyncPgConnection> {
    use diesel_async::AsyncConnection;
    let mut attempts = 0;
    loop {
        match diesel_async::AsyncPgConnection::establish(url).await {
            Ok(conn) => return Ok(conn),
            Err(e) if attempts < 50 => {
                attempts += 1;
                tracing::debug!(error = %e, "waiting for PostgreSQL");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("cannot connect to the embedded PostgreSQL"),
        }
    }
}

/// Finds `initdb`, `pg_ctl` and `postgres`: in `explicit`, else where
/// `pg_config` says, else the newest `/usr/lib/postgresql/*/bin`, else PATH.
pub fn find_binaries(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|tool| dir.join(tool).is_file())
    };
    if let Some(dir) = explicit {
        if complete(dir) {
            return Ok(dir.to_owned());
        }
        bail!(
            "{} does not hold the PostgreSQL server programs initdb, pg_ctl and postgres",
            dir.display()
        );
    }
    let mut candidates = Vec::new();
    if let Ok(output) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        && output.status.success()
    {
        candidates.push(PathBuf::from(
            String::from_utf8_lossy(&output.stdout).trim(),
        ));
    }
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev().map(|(_, dir)| dir));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates
        .into_iter()
        .find(|dir| complete(dir))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the PostgreSQL server programs (initdb, pg_ctl, postgres) were not found. \
             Install PostgreSQL (on Debian/Ubuntu: `apt-get install postgresql`), \
             point --pg-bin-dir (PG_BIN_DIR) at them, or set DATABASE_URL to use a \
             PostgreSQL server you run"
            )
        })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `postgres` when it exists, else `nobody`.
fn unprivileged_user() -> anyhow::Result<Owner> {
    for name in ["postgres", "nobody"] {
        if let Some(owner) = lookup_user(name) {
            return Ok(owner);
        }
    }
    bail!("PostgreSQL refuses to run as root and there is no postgres or nobody user to run it as")
}

fn lookup_user(name: &str) -> Option<Owner> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 || fields[0] != name {
            return None;
        }
        Some(Owner {
            name: name.to_owned(),
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
        })
    })
}

fn chown(path: &Path, owner: &Owner) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))
        .with_context(|| format!("cannot give {} to {}", path.display(), owner.name))
}

/// Where the cluster of `data_dir` lives when it runs as `owner`: inside
/// the data directory when `owner` can reach it, else (a data directory
/// under a private home, say) in `/var/lib/invoice-cases`, under a name
/// derived from the data directory's path.
fn cluster_dir_for(data_dir: &Path, owner: &Owner) -> anyhow::Result<PathBuf> {
    // The data directory holds secrets in 0600 files; the owner only needs
    // to pass through it.
    let mode = fs::metadata(data_dir)?.permissions().mode();
    if mode & 0o001 == 0 {
        fs::set_permissions(data_dir, fs::Permissions::from_mode((mode & 0o777) | 0o711))?;
    }
    if reachable(data_dir, owner) {
        return Ok(data_dir.join("postgres"));
    }
    let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let base = Path::new("/var/lib/invoice-cases");
    fs::create_dir_all(base)?;
    let cluster = base.join(name).join("postgres");
    fs::create_dir_all(cluster.parent().unwrap_or(base))?;
    tracing::info!(
        data_dir = %data_dir.display(),
        cluster = %cluster.display(),
        user = %owner.name,
        "the data directory is not reachable by the PostgreSQL user; the cluster lives elsewhere"
    );
    Ok(cluster)
}

/// Whether `owner` may pass through every directory down to `dir`.
fn reachable(dir: &Path, owner: &Owner) -> bool {
    dir.ancestors().all(|ancestor| {
        let Ok(meta) = fs::metadata(ancestor) else {
            return false;
        };
        let mode = meta.mode();
        if meta.uid() == owner.uid {
            mode & 0o100 != 0
        } else if meta.gid() == owner.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    })
}

/// The cluster password in `<data_dir>/postgres-password`, created when
/// missing.
fn load_or_create_password(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("postgres-password");
    if !path.exists() {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        crate::auth::secret::create_secret_file(&path, &password)?;
    }
    Ok(fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .trim()
        .to_owned())
}

/// A free TCP port on loopback.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_server_programs_are_named_with_what_to_install() {
        let error = find_binaries(Some(Path::new("/nonexistent/postgresql/bin")))
            .expect_err("no programs there");
        let message = error.to_string();
        assert!(message.contains("initdb, pg_ctl and postgres"), "{message}");
    }

    /// A cluster value that was never started, with `password`.
    fn sample(password: &str) -> EmbeddedPostgres {
        EmbeddedPostgres {
            bin_dir: PathBuf::from("/usr/lib/postgresql/15/bin"),
            cluster_dir: PathBuf::from("/var/lib/invoice-cases/postgres"),
            owner: None,
            port: 5432,
            password: password.to_owned(),
            started_here: false,
        }
    }

    #[test]
    fn debug_output_does_not_show_the_password() {
        let password = "0123456789abcdef-embedded-password";
        let cluster = sample(password);
        let debug = format!("{cluster:?}");
        assert!(!debug.contains(password), "{debug}");
        assert!(debug.contains("5432"), "the rest is still shown: {debug}");
        assert_eq!(
            cluster.database_url(),
            format!("postgres://{USER}:{password}@127.0.0.1:5432/{DATABASE}")
        );
        assert_eq!(
            cluster.url("postgres"),
            format!("postgres://{USER}:{password}@127.0.0.1:5432/postgres")
        );
    }

    #[test]
    fn reachability_follows_the_mode_bits() {
        let dir = std::env::temp_dir().join(format!("reach-{}", std::process::id()));
        let inner = dir.join("inner");
        fs::create_dir_all(&inner).expect("dirs");
        let stranger = Owner {
            name: "stranger".into(),
            uid: 4_000_000,
            gid: 4_000_000,
        };
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(!reachable(&inner, &stranger));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)).expect("chmod");
        // (Unless the temporary directory itself is private.)
        let parent = dir.parent().expect("a parent");
        assert_eq!(reachable(&inner, &stranger), reachable(parent, &stranger));
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
