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
use diesel_async::SimpleAsyncConnection;
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
    session::{Mode, Session, Watchdog, answer_within},
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
    watchdog: Arc<Watchdog>,
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
            watchdog: Arc::new(Watchdog::new(settings.statement_timeout)),
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
    /// (see [`Session`]): then waiting for the connection counts too.
    pub(super) async fn session(
        &self,
        timeout: Option<Duration>,
        mode: Mode,
    ) -> Result<Session, StoreError> {
        let expires = timeout.map(|budget| tokio::time::Instant::now() + answer_within(budget));
        let conn = match expires {
            Some(expires) => tokio::time::timeout_at(expires, self.conn())
                .await
                .map_err(|_| {
                    StoreError::Unavailable("no database connection within the deadline".into())
                })??,
            None => self.conn().await?,
        };
        Ok(Session::new(
            conn,
            timeout,
            mode,
            expires,
            self.watchdog.clone(),
        ))
    }

    /// A session whose statements run in one read-write transaction,
    /// bounded like a statement without a client deadline.
    pub(super) async fn transaction(&self) -> Result<Session, StoreError> {
        self.session(Some(self.watchdog.statement_timeout()), Mode::ReadWrite)
            .await
    }

    /// A session whose statements share one repeatable-read snapshot
    /// (see [`Session::repeatable_read`]).
    pub(super) async fn snapshot_session(&self) -> Result<Session, StoreError> {
        Ok(Session::repeatable_read(
            self.conn().await?,
            self.watchdog.clone(),
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

    /// Whether the database answers within `timeout` (a connection
    /// included). A connection that did not answer is discarded, not
    /// returned to the pool.
    pub async fn ping(&self, timeout: Duration) -> Result<(), StoreError> {
        let unanswered =
            || StoreError::Unavailable(format!("the database did not answer within {timeout:?}"));
        let expires = tokio::time::Instant::now() + timeout;
        let mut conn = tokio::time::timeout_at(expires, self.conn())
            .await
            .map_err(|_| unanswered())??;
        match tokio::time::timeout_at(expires, diesel::sql_query("SELECT 1").execute(&mut conn))
            .await
        {
            Ok(result) => {
                result?;
                self.watchdog.answered();
                Ok(())
            }
            Err(_) => {
                drop(Object::take(conn));
                Err(unanswered())
            }
        }
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
            let mut conn = connect(&url).await?;
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

/// Upper bound on opening a TCP connection to the database, unless the
/// URL sets `connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle time before the first TCP keepalive probe, unless the URL sets
/// `keepalives_idle`.
pub const KEEPALIVES_IDLE: Duration = Duration::from_secs(10);
/// Time between keepalive probes, unless the URL sets `keepalives_interval`.
pub const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes before the connection is dropped, unless the URL sets
/// `keepalives_retries`.
pub const KEEPALIVES_RETRIES: u32 = 3;
/// Longest time sent data may stay unacknowledged (`TCP_USER_TIMEOUT`)
/// before the kernel drops the connection, unless the URL sets
/// `tcp_user_timeout` (in seconds for this driver, not libpq's
/// milliseconds).
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// tokio-postgres's default `keepalives_idle`: a URL that leaves it at that
/// gets [`KEEPALIVES_IDLE`].
const DRIVER_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// The connection settings of `database_url` (a URL or libpq key=value
/// string), with what makes a dead database noticed — connect timeout,
/// TCP keepalive, `TCP_USER_TIMEOUT` — wherever the URL leaves them unset
/// (`keepalives=0` in the URL turns keepalive off).
pub fn connection_config(
    database_url: &str,
) -> Result<tokio_postgres::Config, diesel::ConnectionError> {
    let mut config: tokio_postgres::Config =
        database_url.parse().map_err(|e: tokio_postgres::Error| {
            diesel::ConnectionError::InvalidConnectionUrl(e.to_string())
        })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    if config.get_keepalives_idle() == DRIVER_KEEPALIVES_IDLE {
        config.keepalives_idle(KEEPALIVES_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVES_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(KEEPALIVES_RETRIES);
    }
    Ok(config)
}

/// A connection to `database_url` with [`connection_config`]'s settings
/// (no TLS, as diesel-async's own `establish`).
pub async fn connect(database_url: &str) -> diesel::ConnectionResult<AsyncPgConnection> {
    let config = connection_config(database_url)?;
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
    AsyncPgConnection::try_from_client_and_connection(client, connection).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_notice_a_dead_database_by_default() {
        let config = connection_config("postgres://u:p@127.0.0.1:5432/db").expect("a URL");
        assert_eq!(config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(config.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert!(config.get_keepalives());
        assert_eq!(config.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(config.get_keepalives_interval(), Some(KEEPALIVES_INTERVAL));
        assert_eq!(config.get_keepalives_retries(), Some(KEEPALIVES_RETRIES));
    }

    #[test]
    fn the_url_wins() {
        let config = connection_config(
            "postgres://u:p@127.0.0.1:5432/db?connect_timeout=2&tcp_user_timeout=30\
             &keepalives_idle=60&keepalives_interval=7&keepalives_retries=9",
        )
        .expect("a URL");
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(2)));
        assert_eq!(
            config.get_tcp_user_timeout(),
            Some(&Duration::from_secs(30))
        );
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(60));
        assert_eq!(
            config.get_keepalives_interval(),
            Some(Duration::from_secs(7))
        );
        assert_eq!(config.get_keepalives_retries(), Some(9));

        let off = connection_config("host=127.0.0.1 user=u dbname=db keepalives=0")
            .expect("key=value settings");
        assert!(!off.get_keepalives());
        assert!(connection_config("postgres://u@h/db?connect_timeout=soon").is_err());
    }
}
