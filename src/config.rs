//! Configuration: one typed struct per subcommand, from flags and
//! environment variables (flags win), checked at start. Secrets are never
//! printed: their environment values are hidden from `--help` and `Debug`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The invoice case service: invoice disputes run through their states,
/// stored in PostgreSQL, streamed to subscribers over gRPC.
#[derive(Debug, Parser)]
#[command(name = "invoice-cases", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax, e.g. `info,invoice_cases=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info", global = true)]
    pub log: String,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the gRPC service.
    Serve(Box<ServeArgs>),
    /// Applies the database migrations and exits.
    Migrate(DatabaseArgs),
    /// Prints a signed token (HS256) for local use and grpcurl, and nothing else.
    Token(TokenArgs),
    /// Prints the state diagram of cases and lines (Mermaid).
    States,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL (postgres://user:password@host:port/database). Without
    /// it the service runs its own PostgreSQL cluster in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// The embedded default's directory: its PostgreSQL cluster, the
    /// cluster's password and the JWT signing secret.
    #[arg(long, env = "INVOICE_CASES_DATA_DIR", default_value = ".invoice-cases")]
    pub data_dir: PathBuf,

    /// Directory of the PostgreSQL server programs (initdb, pg_ctl,
    /// postgres) for the embedded default; found automatically when unset.
    #[arg(long, env = "PG_BIN_DIR")]
    pub pg_bin_dir: Option<PathBuf>,
}

/// How tokens are checked.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// HS256 signing secret (at least 32 bytes). Without it, the embedded
    /// default uses (and creates) `<data-dir>/jwt-secret`.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Required `iss` claim.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(long, env = "JWT_LEEWAY_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub jwt_leeway_seconds: u64,

    /// PEM public keys accepting RS256 (RSA) or ES256 (P-256) tokens;
    /// repeat the flag or separate with commas.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILES", value_delimiter = ',')]
    pub jwt_public_key_file: Vec<PathBuf>,

    /// A JWKS file of RS256/ES256 public keys (matched by `kid`).
    #[arg(long, env = "JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
}

/// TLS of the gRPC listener (rustls).
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM certificate chain of the server; with --tls-key it serves TLS.
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the server.
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates of clients: every client must then present a
    /// certificate they signed (mutual TLS).
    #[arg(long, env = "TLS_CLIENT_CA_FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// Limits that protect the service.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Largest request message, in bytes (decoded).
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub max_message_bytes: u64,

    /// Concurrent calls (streams included) per HTTP/2 connection.
    #[arg(long, env = "MAX_CONCURRENT_STREAMS", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,

    /// Largest request header list, in bytes (HTTP/2
    /// SETTINGS_MAX_HEADER_LIST_SIZE). Tokens over 8 KiB are refused
    /// UNAUTHENTICATED; a header list over this is refused by HTTP/2 itself.
    #[arg(long, env = "MAX_HEADER_LIST_BYTES", default_value_t = 128 * 1024, value_parser = clap::value_parser!(u32).range(16 * 1024..=16 * 1024 * 1024))]
    pub max_header_list_bytes: u32,

    /// Open client connections at most; more wait until one closes.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// Longest a database statement may run (milliseconds); a client
    /// deadline shortens it for its call.
    #[arg(long, env = "DB_STATEMENT_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub db_statement_timeout_ms: u64,
}

/// Shutdown.
#[derive(Debug, Clone, Args)]
pub struct ShutdownArgs {
    /// On SIGTERM/SIGINT, how long calls in flight may take to finish.
    #[arg(long, env = "DRAIN_TIMEOUT_SECONDS", default_value_t = 10)]
    pub drain_timeout_seconds: u64,

    /// On SIGTERM/SIGINT, the process exits after this long whatever
    /// clients do.
    #[arg(long, env = "SHUTDOWN_DEADLINE_SECONDS", default_value_t = 20)]
    pub shutdown_deadline_seconds: u64,
}

/// `invoice-cases serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the gRPC server listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    /// Most database connections.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_pool_size: u32,

    /// Database connections of watch streams (snapshots and catch-up
    /// reads), apart from those of calls: streams cannot take them all.
    #[arg(long, env = "DB_STREAM_POOL_SIZE", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_stream_pool_size: u32,

    /// How long a call waits for a database connection before failing with
    /// UNAVAILABLE, in milliseconds.
    #[arg(long, env = "DB_WAIT_TIMEOUT_MS", default_value_t = 5000)]
    pub db_wait_timeout_ms: u64,

    #[command(flatten)]
    pub watch: WatchArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub shutdown: ShutdownArgs,

    /// Address of the Prometheus metrics endpoint (`/metrics`); `off` to
    /// serve none.
    #[arg(long, env = "METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: String,

    /// How long idempotency records (request ids) are kept, in hours (at
    /// least 24).
    #[arg(long, env = "IDEMPOTENCY_RETENTION_HOURS", default_value_t = 48, value_parser = clap::value_parser!(u64).range(24..))]
    pub idempotency_retention_hours: u64,
}

/// How watch streams behave.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Seconds an idle watch stream waits before a progress message.
    #[arg(long, env = "WATCH_PROGRESS_INTERVAL_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub watch_progress_interval_seconds: u64,

    /// Milliseconds between polls of the event log (notifications wake the
    /// reader earlier; the poll covers lost ones).
    #[arg(long, env = "WATCH_POLL_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub watch_poll_interval_ms: u64,

    /// Events kept on the in-memory broadcast ring; subscribers further
    /// behind catch up from the database.
    #[arg(long, env = "WATCH_RING_CAPACITY", default_value_t = 256, value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    pub watch_ring_capacity: u64,

    /// Messages buffered towards each watch client.
    #[arg(long, env = "WATCH_SUBSCRIBER_BUFFER", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub watch_subscriber_buffer: u64,

    /// Most watch streams this process serves at once.
    #[arg(long, env = "WATCH_MAX_STREAMS", default_value_t = 10_000)]
    pub watch_max_streams: usize,

    /// Prune events older than this many hours (the audit trail of
    /// ListStateChanges shrinks with them); keep every event when unset.
    #[arg(long, env = "EVENT_RETENTION_HOURS", value_parser = clap::value_parser!(u64).range(1..))]
    pub event_retention_hours: Option<u64>,
}

impl ServeArgs {
    /// The watch settings.
    pub fn watch(&self) -> crate::watch::WatchSettings {
        crate::watch::WatchSettings {
            progress_interval: Duration::from_secs(self.watch.watch_progress_interval_seconds),
            poll_interval: Duration::from_millis(self.watch.watch_poll_interval_ms),
            max_streams: self.watch.watch_max_streams,
            ring_capacity: usize::try_from(self.watch.watch_ring_capacity).unwrap_or(usize::MAX),
            subscriber_buffer: usize::try_from(self.watch.watch_subscriber_buffer)
                .unwrap_or(usize::MAX),
            event_retention: self
                .watch
                .event_retention_hours
                .map(|hours| Duration::from_secs(hours * 3600)),
            ..crate::watch::WatchSettings::default()
        }
    }

    /// The pool settings.
    pub fn pool(&self) -> crate::store::PoolSettings {
        crate::store::PoolSettings {
            max_size: self.db_pool_size as usize,
            stream_max_size: self.db_stream_pool_size as usize,
            wait_timeout: Duration::from_millis(self.db_wait_timeout_ms),
            statement_timeout: Duration::from_millis(self.limits.db_statement_timeout_ms),
        }
    }

    /// The metrics address, `None` when off.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, String> {
        match self.metrics_listen.as_str() {
            "off" | "" => Ok(None),
            addr => addr
                .parse()
                .map(Some)
                .map_err(|e| format!("--metrics-listen {addr:?}: {e}")),
        }
    }
}

/// `invoice-cases token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The caller (`sub`): the actor on events, the assignee of Assign to me.
    #[arg(long)]
    pub sub: String,

    /// Roles: viewer, requester, agent, admin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub roles: Vec<String>,

    /// Accounts the caller is limited to (all when absent).
    #[arg(long, value_delimiter = ',')]
    pub accounts: Option<Vec<String>>,

    /// Seconds the token is valid.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,

    /// HS256 signing secret; without it, `<data-dir>/jwt-secret`.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// The `iss` claim to put in the token.
    #[arg(long, env = "JWT_ISSUER")]
    pub issuer: Option<String>,

    /// The `aud` claim to put in the token.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub audience: Option<String>,

    /// The embedded default's directory (holds the secret).
    #[arg(long, env = "INVOICE_CASES_DATA_DIR", default_value = ".invoice-cases")]
    pub data_dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn token_command_line() {
        let cli = Cli::try_parse_from([
            "invoice-cases",
            "token",
            "--sub",
            "alice",
            "--roles",
            "agent,viewer",
            "--accounts",
            "A1,A2",
            "--ttl",
            "60",
        ])
        .unwrap();
        let Command::Token(args) = cli.command else {
            panic!("not the token command");
        };
        assert_eq!(args.sub, "alice");
        assert_eq!(args.roles, ["agent", "viewer"]);
        assert_eq!(args.accounts, Some(vec!["A1".to_owned(), "A2".to_owned()]));
        assert_eq!(args.ttl, 60);
    }
}
