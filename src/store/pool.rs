//! The connection pool and the embedded migrations.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

use diesel::Connection;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use diesel_async::{
    AsyncPgConnection, RunQueryDsl,
    async_connection_wrapper::AsyncConnectionWrapper,
    pooled_connection::{
        AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
        deadpool::{Object, Pool},
    },
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::{
    StoreError,
    recent::RecentCases,
    session::{Mode, Session},
};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// A lock id only migrations take, so that replicas starting together
/// migrate one after the other.
const MIGRATION_LOCK: i64 = 0x1c0a_5e5e_0001;

/// Pool sizing and how long to wait for the database.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Most connections held for calls.
    pub max_size: usize,
    /// Most connections held for watch streams (snapshots, catch-up
    /// reads, the log reader): a pool of their own, so that streams whose
    /// clients do not read cannot take the connections calls need.
    pub stream_max_size: usize,
    /// How long a call waits for a free connection or a new one before it
    /// fails with UNAVAILABLE.
    pub wait_timeout: Duration,
    /// Longest a statement may run (`statement_timeout` of every
    /// connection).
    pub statement_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_size: 16,
            stream_max_size: 4,
            wait_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// The database: a pool of async connections.
#[derive(Clone)]
pub struct Store {
    pool: Pool<AsyncPgConnection>,
    stream_pool: Pool<AsyncPgConnection>,
    database_url: String,
    signals: Arc<Signals>,
    recent: Arc<RecentCases>,
    /// Each connection's `statement_timeout`.
    statement_timeout: Duration,
}

/// What writers tell the event log's readers.
#[derive(Debug)]
struct Signals {
    /// Woken after every committed action of this process.
    commits: Notify,
    /// Whether another replica's readers want a notification per action
    /// (until the watch listener knows, they may).
    notify_replicas: AtomicBool,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            commits: Notify::new(),
            notify_replicas: AtomicBool::new(true),
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("Store")
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl Store {
    /// Builds the pools; connections are opened on first use.
    pub fn new(database_url: &str, settings: &PoolSettings) -> Result<Self, StoreError> {
        let pool = build_pool(database_url, settings, settings.max_size)?;
        let stream_pool = build_pool(database_url, settings, settings.stream_max_size)?;
        Ok(Store {
            pool,
            stream_pool,
            database_url: database_url.to_owned(),
            signals: Arc::default(),
            recent: Arc::new(RecentCases::new()),
            statement_timeout: settings.statement_timeout,
        })
    }

    /// The same store, for watch streams: its connections come from the
    /// streams' own pool.
    pub fn for_streams(&self) -> Store {
        Store {
            pool: self.stream_pool.clone(),
            ..self.clone()
        }
    }

    /// Cases this process committed or read recently (see `recent.rs`).
    pub(super) fn recent(&self) -> &RecentCases {
        &self.recent
    }

    /// A session on a pooled connection, bounded by `timeout` when given
    /// (see [`Session`]).
    pub(super) async fn session(
        &self,
        timeout: Option<Duration>,
        mode: Mode,
    ) -> Result<Session, StoreError> {
        Ok(Session::new(
            self.conn().await?,
            timeout,
            self.statement_timeout,
            mode,
        ))
    }

    /// A session whose statements share one repeatable-read, read-only
    /// snapshot (see [`Session::repeatable_read`]).
    pub(super) async fn snapshot_session(&self) -> Result<Session, StoreError> {
        Ok(Session::repeatable_read(
            self.conn().await?,
            self.statement_timeout,
        ))
    }

    /// Tells this process's event log reader that an action committed.
    pub(super) fn committed(&self) {
        self.signals.commits.notify_one();
    }

    /// Resolves after an action of this process commits (or at once, when
    /// one committed since the last call).
    pub async fn next_commit(&self) {
        self.signals.commits.notified().await;
    }

    /// Whether actions notify other replicas' event log readers.
    pub(super) fn notify_replicas(&self) -> bool {
        AtomicBool::load(&self.signals.notify_replicas, Ordering::Relaxed)
    }

    /// Sets whether actions notify other replicas' event log readers (true
    /// while another replica has watch streams).
    pub fn set_notify_replicas(&self, notify: bool) {
        self.signals
            .notify_replicas
            .store(notify, Ordering::Relaxed);
    }

    /// A pooled connection, or UNAVAILABLE when the database cannot be
    /// reached in time.
    pub(crate) async fn conn(&self) -> Result<Object<AsyncPgConnection>, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await?;
        Ok(())
    }

    /// The URL the pool connects to (holds credentials: do not log it).
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// Connections in use and idle, for metrics.
    pub fn pool_status(&self) -> deadpool::Status {
        self.pool.status()
    }
}

/// A pool of `size` connections to `database_url`; connections are opened
/// on first use.
fn build_pool(
    database_url: &str,
    settings: &PoolSettings,
    size: usize,
) -> Result<Pool<AsyncPgConnection>, StoreError> {
    // A closed connection (the server restarted, say) is seen by
    // `is_broken` and discarded on recycling; a test query per checkout
    // ("Verified") would add a round trip to every call.
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    let statement_timeout = settings.statement_timeout.as_millis();
    config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        Box::pin(async move {
            let mut conn = AsyncPgConnection::establish(&url).await?;
            // No JIT: every statement here is short, and a plan whose
            // estimate crosses `jit_above_cost` would spend tens of
            // milliseconds compiling on every execution.
            conn.batch_execute(&format!(
                "SET statement_timeout = {statement_timeout}; \
                 SET jit = off; \
                 SET application_name = 'invoice-cases'"
            ))
            .await
            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(database_url, config);
    Pool::builder(manager)
        .max_size(size.max(1))
        .wait_timeout(Some(settings.wait_timeout))
        .create_timeout(Some(settings.wait_timeout))
        .recycle_timeout(Some(settings.wait_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// Runs the pending migrations, holding an advisory lock so that replicas
/// starting together do not race. Runs on a blocking thread: diesel's
/// migration harness is synchronous.
pub async fn run_migrations(database_url: &str) -> anyhow::Result<Vec<String>> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let mut conn = <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url)?;
        let lock = format!("SELECT pg_advisory_lock({MIGRATION_LOCK})");
        diesel::RunQueryDsl::execute(diesel::sql_query(lock), &mut conn)?;
        let applied: anyhow::Result<Vec<String>> = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.into_iter().map(|v| v.to_string()).collect())
            .map_err(|e| anyhow::anyhow!("migration failed: {e}"));
        let unlock = format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})");
        diesel::RunQueryDsl::execute(diesel::sql_query(unlock), &mut conn)?;
        applied
    })
    .await?
}
