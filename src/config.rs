//! Configuration: one typed struct per subcommand, from flags and
//! environment variables (flags win), checked at start. Secrets (the JWT
//! secret, the database URL, which may carry a password) are held as
//! [`SecretString`]: `Debug` prints `[REDACTED]` for them, and `--help`
//! hides their environment values.

use std::{
    ffi::OsString,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{
    ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum,
    error::ErrorKind, parser::ValueSource,
};
use secrecy::SecretString;

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
    pub database_url: Option<SecretString>,

    /// The embedded default's directory: its PostgreSQL cluster, the
    /// cluster's password and the JWT signing secret.
    #[arg(long, env = "INVOICE_CASES_DATA_DIR", default_value = ".invoice-cases")]
    pub data_dir: PathBuf,

    /// Directory of the PostgreSQL server programs (initdb, pg_ctl,
    /// postgres) for the embedded default; found automatically when unset.
    #[arg(long, env = "PG_BIN_DIR")]
    pub pg_bin_dir: Option<PathBuf>,
}

/// Where the HS256 signing secret comes from (`serve` and `token`).
#[derive(Debug, Clone, Args)]
pub struct JwtSecretArgs {
    /// HS256 signing secret (at least 32 bytes). Given as a flag it is
    /// visible in the process list: prefer --jwt-secret-file or the
    /// environment variable. Without either, `<data-dir>/jwt-secret` (the
    /// embedded default's, created when missing).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,

    /// A file holding the HS256 signing secret (at least 32 bytes; one
    /// trailing newline is ignored). Not with --jwt-secret.
    #[arg(long, env = "JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
}

impl JwtSecretArgs {
    /// The secret given by --jwt-secret or --jwt-secret-file, checked;
    /// `None` when neither is set. Errors name the setting.
    pub fn configured(&self) -> anyhow::Result<Option<SecretString>> {
        match (&self.jwt_secret, &self.jwt_secret_file) {
            (Some(_), Some(_)) => anyhow::bail!(
                "{JWT_SECRET_SETTING} and {JWT_SECRET_FILE_SETTING} both give the JWT secret: set only one"
            ),
            (Some(secret), None) => {
                crate::auth::secret::check_secret(JWT_SECRET_SETTING, secret)?;
                Ok(Some(secret.clone()))
            }
            (None, Some(path)) => read_jwt_secret_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }
}

const JWT_SECRET_SETTING: &str = "--jwt-secret (JWT_SECRET)";
const JWT_SECRET_FILE_SETTING: &str = "--jwt-secret-file (JWT_SECRET_FILE)";

/// The secret in the file --jwt-secret-file names.
fn read_jwt_secret_file(path: &Path) -> anyhow::Result<SecretString> {
    let setting = format!("{JWT_SECRET_FILE_SETTING} {}", path.display());
    crate::auth::secret::read_secret_file(&setting, path)
}

/// How tokens are checked.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    #[command(flatten)]
    pub secret: JwtSecretArgs,

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

    /// Roles: viewer, requester, agent, lead, admin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub roles: Vec<String>,

    /// Accounts the caller is limited to (all when absent).
    #[arg(long, value_delimiter = ',')]
    pub accounts: Option<Vec<String>>,

    /// Seconds the token is valid.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,

    #[command(flatten)]
    pub secret: JwtSecretArgs,

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

/// Logged at start when `--jwt-secret` is on the command line.
pub const JWT_SECRET_FLAG_WARNING: &str = "--jwt-secret on the command line is visible in the \
     process list to every user of this machine: use --jwt-secret-file or the JWT_SECRET \
     environment variable instead";

impl Cli {
    /// Parses `args` (the program name first) and the environment, with
    /// the warnings start-up must log. Beyond clap's checks: a JWT secret
    /// given both ways is an error naming where each came from (clap's own
    /// conflict message names flags even for environment variables), and
    /// `--jwt-secret` on the command line gives a warning.
    pub fn try_parse_with_warnings<I, T>(args: I) -> Result<(Cli, Vec<&'static str>), clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = Cli::command();
        let matches = command.try_get_matches_from_mut(args)?;
        let cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
        let mut warnings = Vec::new();
        if let Some((_, sub)) = matches.subcommand() {
            match (
                value_source(sub, "jwt_secret"),
                value_source(sub, "jwt_secret_file"),
            ) {
                (Some(secret), Some(file)) => {
                    return Err(command.error(
                        ErrorKind::ArgumentConflict,
                        format!(
                            "{} and {} both give the JWT secret: set only one",
                            given_as(secret, "--jwt-secret", "JWT_SECRET"),
                            given_as(file, "--jwt-secret-file", "JWT_SECRET_FILE"),
                        ),
                    ));
                }
                (Some(ValueSource::CommandLine), None) => warnings.push(JWT_SECRET_FLAG_WARNING),
                _ => {}
            }
        }
        Ok((cli, warnings))
    }
}

/// Where the value of `id` came from, when the subcommand has that
/// setting and it is set.
fn value_source(matches: &ArgMatches, id: &str) -> Option<ValueSource> {
    match matches.try_contains_id(id) {
        Ok(true) => matches.value_source(id),
        _ => None,
    }
}

/// A setting named the way the user gave it.
fn given_as(source: ValueSource, flag: &str, env: &str) -> String {
    match source {
        ValueSource::EnvVariable => format!("the environment variable {env}"),
        _ => flag.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    const SECRET: &str = "unit-test-jwt-secret-0123456789abcdef";
    const PASSWORD: &str = "pw-9f3b2c7d";

    #[test]
    fn debug_of_the_parsed_command_line_shows_no_secret() {
        let url = format!("postgres://u:{PASSWORD}@h/db");
        let cli = Cli::try_parse_from([
            "invoice-cases",
            "serve",
            "--jwt-secret",
            SECRET,
            "--database-url",
            &url,
        ])
        .unwrap();
        let printed = format!("{cli:?} {cli:#?}");
        assert!(!printed.contains(SECRET), "{printed}");
        assert!(!printed.contains(PASSWORD), "{printed}");
        // Still a useful print: the settings that are not secret show.
        assert!(printed.contains("127.0.0.1:50051"), "{printed}");
        let Command::Serve(args) = &cli.command else {
            panic!("not the serve command");
        };
        let printed = format!("{args:?}");
        assert!(!printed.contains(SECRET), "{printed}");
        assert!(!printed.contains(PASSWORD), "{printed}");

        let cli = Cli::try_parse_from([
            "invoice-cases",
            "token",
            "--sub",
            "alice",
            "--roles",
            "agent",
            "--jwt-secret",
            SECRET,
        ])
        .unwrap();
        let printed = format!("{cli:?}");
        assert!(!printed.contains(SECRET), "{printed}");

        let cli =
            Cli::try_parse_from(["invoice-cases", "migrate", "--database-url", &url]).unwrap();
        let printed = format!("{cli:?}");
        assert!(!printed.contains(PASSWORD), "{printed}");
    }

    fn serve(args: &[&str]) -> Result<(Cli, Vec<&'static str>), clap::Error> {
        let mut all = vec!["invoice-cases", "serve"];
        all.extend_from_slice(args);
        Cli::try_parse_with_warnings(all)
    }

    #[test]
    fn jwt_secret_on_the_command_line_gives_a_warning() {
        let (_, warnings) = serve(&["--jwt-secret", SECRET]).unwrap();
        assert_eq!(warnings, [JWT_SECRET_FLAG_WARNING]);
        assert!(JWT_SECRET_FLAG_WARNING.contains("process list"));
        assert!(JWT_SECRET_FLAG_WARNING.contains("--jwt-secret-file"));
        let (_, warnings) = serve(&["--jwt-secret-file", "/some/file"]).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let (_, warnings) = Cli::try_parse_with_warnings([
            "invoice-cases",
            "token",
            "--sub",
            "a",
            "--roles",
            "agent",
            "--jwt-secret",
            SECRET,
        ])
        .unwrap();
        assert_eq!(warnings, [JWT_SECRET_FLAG_WARNING]);
        // Commands without the setting.
        let (_, warnings) = Cli::try_parse_with_warnings(["invoice-cases", "states"]).unwrap();
        assert!(warnings.is_empty());
    }

    #[test]
    fn jwt_secret_given_twice_is_an_error_naming_both() {
        let error = serve(&["--jwt-secret", SECRET, "--jwt-secret-file", "/f"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
        let message = error.to_string();
        assert!(
            message.contains("--jwt-secret and --jwt-secret-file"),
            "{message}"
        );
        assert!(!message.contains(SECRET), "{message}");
    }

    fn secret_file(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt-secret");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    fn secret_from_file(path: &Path) -> anyhow::Result<Option<SecretString>> {
        JwtSecretArgs {
            jwt_secret: None,
            jwt_secret_file: Some(path.to_owned()),
        }
        .configured()
    }

    #[test]
    fn jwt_secret_file_loses_one_trailing_newline_only() {
        use secrecy::ExposeSecret;
        for (content, expected) in [
            (format!("{SECRET}\n"), SECRET.to_owned()),
            (format!("{SECRET}\r\n"), SECRET.to_owned()),
            (SECRET.to_owned(), SECRET.to_owned()),
            (format!("{SECRET}\n\n"), format!("{SECRET}\n")),
            (format!(" {SECRET} "), format!(" {SECRET} ")),
        ] {
            let (_dir, path) = secret_file(content.as_bytes());
            let secret = secret_from_file(&path).unwrap().unwrap();
            assert_eq!(secret.expose_secret(), expected, "from {content:?}");
        }
    }

    #[test]
    fn jwt_secret_file_errors_name_the_setting_and_not_the_secret() {
        let short = "short-secret-31-bytes-long-----";
        assert_eq!(short.len(), 31);
        let (_dir, path) = secret_file(format!("{short}\n").as_bytes());
        let message = format!("{:#}", secret_from_file(&path).unwrap_err());
        assert!(
            message.contains("--jwt-secret-file (JWT_SECRET_FILE)"),
            "{message}"
        );
        assert!(message.contains("at least 32 bytes"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(!message.contains(short), "{message}");

        let missing = path.with_file_name("missing");
        let message = format!("{:#}", secret_from_file(&missing).unwrap_err());
        assert!(
            message.contains("--jwt-secret-file (JWT_SECRET_FILE)"),
            "{message}"
        );
        assert!(message.contains("missing"), "{message}");

        let (_dir, path) = secret_file(&[0xff; 40]);
        let message = format!("{:#}", secret_from_file(&path).unwrap_err());
        assert!(
            message.contains("--jwt-secret-file (JWT_SECRET_FILE)"),
            "{message}"
        );

        let message = format!(
            "{:#}",
            JwtSecretArgs {
                jwt_secret: Some(short.into()),
                jwt_secret_file: None,
            }
            .configured()
            .unwrap_err()
        );
        assert!(message.contains("--jwt-secret (JWT_SECRET)"), "{message}");
        assert!(!message.contains(short), "{message}");
    }

    #[test]
    fn debug_of_server_settings_shows_no_secret() {
        let url = format!("postgres://u:{PASSWORD}@h/db");
        let key = "-----BEGIN PRIVATE KEY-----\nMIIEvkey-material-42\n-----END PRIVATE KEY-----\n";
        let settings = crate::server::ServerSettings {
            listen: "127.0.0.1:1".parse().unwrap(),
            database_url: url.into(),
            pool: crate::store::PoolSettings::default(),
            keys: crate::auth::KeySet::hs256(
                SECRET.as_bytes(),
                crate::auth::KeySettings::default(),
            ),
            idempotency_retention: Duration::from_secs(1),
            health_interval: Duration::from_secs(1),
            watch: crate::watch::WatchSettings::default(),
            tls: Some(crate::server::TlsSettings {
                certificate_chain: b"cert".to_vec(),
                private_key: key.as_bytes().to_vec().into(),
                client_ca: None,
            }),
            limits: crate::server::Limits::default(),
            metrics: None,
        };
        let printed = format!("{settings:?} {settings:#?}");
        for secret in [PASSWORD, SECRET, "key-material-42"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("REDACTED"), "{printed}");
        assert!(printed.contains("127.0.0.1:1"), "{printed}");
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
