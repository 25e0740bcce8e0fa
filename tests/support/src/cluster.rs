//! PostgreSQL for tests and benchmarks: a cluster of the process's own
//! (the service's embedded default, in a temporary directory) or a server
//! named by [`EXTERNAL_DATABASE_ENV`], and databases on it.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
};

use anyhow::Context as _;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use invoice_cases::{
    embedded::{EmbeddedPostgres, find_binaries},
    store::run_migrations,
};
use uuid::Uuid;

/// Set to a PostgreSQL URL (of a role that may create databases) to test
/// against that server instead of a cluster of the test process's own.
pub const EXTERNAL_DATABASE_ENV: &str = "INVOICE_CASES_TEST_DATABASE_URL";

/// A PostgreSQL server to create databases on.
pub struct Cluster {
    /// URL of the `postgres` database, for creating databases.
    admin_url: String,
    embedded: Option<EmbeddedPostgres>,
    /// The temporary directory of an embedded cluster.
    dir: Option<PathBuf>,
}

impl Cluster {
    /// The server of [`EXTERNAL_DATABASE_ENV`] when set, else a new cluster
    /// of the embedded default in a temporary directory.
    pub async fn start() -> anyhow::Result<Cluster> {
        if let Ok(url) = std::env::var(EXTERNAL_DATABASE_ENV) {
            return Ok(Cluster {
                admin_url: url,
                embedded: None,
                dir: None,
            });
        }
        Self::start_embedded().await
    }

    /// A new cluster of the embedded default in a temporary directory.
    pub async fn start_embedded() -> anyhow::Result<Cluster> {
        let dir = std::env::temp_dir().join(format!(
            "invoice-cases-tests-{}-{}",
            std::process::id(),
            Uuid::new_v4().simple()
        ));
        let embedded = EmbeddedPostgres::start(&dir, None)
            .await
            .context("cannot start a PostgreSQL cluster")?;
        Ok(Cluster {
            admin_url: embedded.url("postgres"),
            embedded: Some(embedded),
            dir: Some(dir),
        })
    }

    /// The URL of the `postgres` database.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        database_url(&self.admin_url, database)
    }

    /// The embedded cluster (absent with an external server).
    pub fn embedded(&self) -> Option<&EmbeddedPostgres> {
        self.embedded.as_ref()
    }

    /// The PostgreSQL programs' directory (pgbench and psql live there).
    pub fn bin_dir(&self) -> anyhow::Result<PathBuf> {
        find_binaries(None)
    }

    /// The pid of the postmaster of an embedded cluster, from its
    /// `postmaster.pid`.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let embedded = self.embedded.as_ref()?;
        std::fs::read_to_string(embedded.cluster_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Creates `name` (a copy of `template` when given).
    pub async fn create_database(&self, name: &str, template: Option<&str>) -> anyhow::Result<()> {
        check_name(name)?;
        let sql = match template {
            Some(template) => {
                check_name(template)?;
                format!("CREATE DATABASE {name} TEMPLATE {template}")
            }
            None => format!("CREATE DATABASE {name}"),
        };
        self.admin(&sql).await
    }

    /// Drops `name`, ending the sessions still connected to it.
    pub async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        check_name(name)?;
        self.admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
    }

    /// Creates `name` and applies the service's migrations to it.
    pub async fn create_migrated(&self, name: &str) -> anyhow::Result<String> {
        self.create_database(name, None).await?;
        let url = self.url(name);
        run_migrations(&url)
            .await
            .with_context(|| format!("cannot migrate {name}"))?;
        Ok(url)
    }

    /// Stops an embedded cluster and removes its directory.
    pub async fn stop(self) -> anyhow::Result<()> {
        if let Some(embedded) = &self.embedded {
            embedded.stop().await?;
            remove_cluster_dirs(embedded, self.dir.as_deref());
        }
        Ok(())
    }

    /// Stops an embedded cluster at once, synchronously (exit handlers).
    pub fn kill_blocking(&self) {
        if let Some(embedded) = &self.embedded {
            embedded.kill_blocking();
            remove_cluster_dirs(embedded, self.dir.as_deref());
        }
    }

    async fn admin(&self, sql: &str) -> anyhow::Result<()> {
        let mut conn = AsyncPgConnection::establish(&self.admin_url)
            .await
            .context("cannot connect to the test PostgreSQL server")?;
        diesel::sql_query(sql)
            .execute(&mut conn)
            .await
            .with_context(|| sql.to_owned())?;
        Ok(())
    }
}

/// Removes the cluster's directory, and the directory the cluster lives in
/// when the PostgreSQL user could not reach `dir`.
fn remove_cluster_dirs(embedded: &EmbeddedPostgres, dir: Option<&Path>) {
    if let Some(dir) = dir {
        let cluster = embedded.cluster_dir();
        if !cluster.starts_with(dir) {
            let _ = std::fs::remove_dir_all(cluster);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn check_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "invalid database name {name:?}"
    );
    Ok(())
}

/// The URL of `database` on the server of `admin_url`.
pub fn database_url(admin_url: &str, database: &str) -> String {
    match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{database}"),
        None => format!("{admin_url}/{database}"),
    }
}

// ---- the test process's cluster ------------------------------------------

/// The cluster a test process shares between its tests, with a template
/// database migrated once.
pub struct SharedCluster {
    pub cluster: Cluster,
    template: String,
}

static SHARED: OnceLock<SharedCluster> = OnceLock::new();
static CREATE_LOCK: Mutex<()> = Mutex::new(());

extern "C" fn stop_shared_at_exit() {
    if let Some(shared) = SHARED.get() {
        if shared.cluster.embedded().is_none() {
            drop_done_databases();
        }
        shared.cluster.kill_blocking();
    }
}

/// Runs `future` on a runtime of its own on another thread: the shared
/// cluster must not belong to one test's runtime, and a test's runtime must
/// not be blocked by it.
pub fn on_own_runtime<T: Send + 'static>(
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the test harness")
            .block_on(future)
    })
    .join()
    .expect("the test harness thread")
}

/// The test process's cluster, started on first use and stopped when the
/// process exits.
pub fn shared() -> &'static SharedCluster {
    SHARED.get_or_init(|| {
        on_own_runtime(async {
            let cluster = Cluster::start()
                .await
                .expect("start the test PostgreSQL cluster");
            // SAFETY: registering a plain extern "C" function is sound.
            unsafe {
                libc::atexit(stop_shared_at_exit);
            }
            let template = format!("tmpl_{}", Uuid::new_v4().simple());
            cluster
                .create_migrated(&template)
                .await
                .expect("create the migrated template database");
            SharedCluster { cluster, template }
        })
    })
}

impl SharedCluster {
    /// A fresh, migrated database (see [`TestDatabase`] for its end).
    pub fn new_database(&'static self) -> TestDatabase {
        let name = format!("t_{}", Uuid::new_v4().simple());
        // PostgreSQL copies a template for one CREATE DATABASE at a time.
        let _guard = CREATE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let db = name.clone();
        on_own_runtime(async move {
            let shared = shared();
            shared
                .cluster
                .create_database(&db, Some(&shared.template))
                .await
                .expect("create a test database");
        });
        TestDatabase {
            url: self.cluster.url(&name),
            name,
        }
    }

    /// A fresh, empty database (no migrations; see [`TestDatabase`]).
    pub fn new_empty_database(&'static self) -> TestDatabase {
        let name = format!("e_{}", Uuid::new_v4().simple());
        let db = name.clone();
        on_own_runtime(async move {
            shared()
                .cluster
                .create_database(&db, None)
                .await
                .expect("create an empty test database");
        });
        TestDatabase {
            url: self.cluster.url(&name),
            name,
        }
    }

    /// The URL of the `postgres` database.
    pub fn admin_url(&self) -> &str {
        self.cluster.admin_url()
    }

    /// The embedded cluster (absent with an external server).
    pub fn embedded(&self) -> Option<&EmbeddedPostgres> {
        self.cluster.embedded()
    }
}

/// A database of the shared cluster, done when the value is dropped; done
/// databases are dropped (with any session still on them) when the test
/// process exits, or go with a cluster of the process's own.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    pub name: String,
}

impl std::ops::Deref for TestDatabase {
    type Target = str;

    /// The database's URL.
    fn deref(&self) -> &str {
        &self.url
    }
}

impl AsRef<str> for TestDatabase {
    fn as_ref(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Display for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Drop for TestDatabase {
    /// Marks the database done. It is dropped when the test process exits,
    /// not now: DROP DATABASE holds a transaction id while it runs, which
    /// holds back the cluster-wide snapshot horizon that other tests' watch
    /// streams deliver up to (their events would wait for every drop).
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        DONE.lock().unwrap_or_else(|e| e.into_inner()).push(name);
    }
}

/// Databases whose tests are done, dropped at exit.
static DONE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Drops the databases of [`DONE`] (on a server of the process's own they
/// go with the cluster anyway).
fn drop_done_databases() {
    let names = std::mem::take(&mut *DONE.lock().unwrap_or_else(|e| e.into_inner()));
    if names.is_empty() {
        return;
    }
    on_own_runtime(async move {
        for name in names {
            // A cluster a test stopped on purpose may refuse: nothing to drop.
            let _ = shared().cluster.drop_database(&name).await;
        }
    });
}
