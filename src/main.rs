//! `invoice-cases`: the command line of the invoice case service.

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use invoice_cases::{
    auth::{self, KeySet, KeySettings},
    config::{
        AuthArgs, Cli, Command, DatabaseArgs, JwtSecretArgs, LogFormat, ServeArgs, TlsArgs,
        TokenArgs,
    },
    embedded::EmbeddedPostgres,
    server::{self, Limits, ServerSettings, TlsSettings},
    store,
};
use secrecy::{ExposeSecret, SecretString};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let (cli, warnings) =
        Cli::try_parse_with_warnings(std::env::args_os()).unwrap_or_else(|e| e.exit());
    // Flushes what is still queued when main returns.
    let _log_writer = init_logging(cli.log_format, &cli.log);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to stderr from a thread of its own: a call hands its line over and
/// goes on, and lines written together leave in one write. Nothing is
/// dropped (a full queue makes the caller wait).
fn init_logging(format: LogFormat, filter: &str) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("invoice-cases-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Token(args) => token(args),
        Command::States => {
            print!("{}", invoice_cases::domain::diagram::mermaid());
            Ok(())
        }
    }
}

/// The database to use: the configured URL, or the embedded cluster.
async fn database(args: &DatabaseArgs) -> anyhow::Result<(SecretString, Option<EmbeddedPostgres>)> {
    match &args.database_url {
        Some(url) => Ok((url.clone(), None)),
        None => {
            let cluster = EmbeddedPostgres::start(&args.data_dir, args.pg_bin_dir.as_deref())
                .await
                .context("cannot start the embedded PostgreSQL")?;
            Ok((SecretString::from(cluster.database_url()), Some(cluster)))
        }
    }
}

/// The configured HS256 secret, or the data directory's (created when
/// missing).
fn jwt_secret(args: &JwtSecretArgs, data_dir: &Path) -> anyhow::Result<SecretString> {
    match args.configured()? {
        Some(secret) => Ok(secret),
        None => auth::load_or_create_secret(data_dir),
    }
}

/// The token keys: the configured secret and public keys, or, when none
/// is configured, the data directory's secret (created when missing).
fn keys(args: &AuthArgs, data_dir: &Path) -> anyhow::Result<KeySet> {
    let mut keys = KeySet::new(KeySettings {
        leeway_seconds: args.jwt_leeway_seconds,
        issuer: args.jwt_issuer.clone(),
        audience: args.jwt_audience.clone(),
    });
    for path in &args.jwt_public_key_file {
        let setting = "--jwt-public-key-file (JWT_PUBLIC_KEY_FILES)";
        let pem = read_setting_file(setting, path)?;
        let algorithm = keys
            .add_pem(&pem)
            .map_err(|e| anyhow::anyhow!("{setting} {}: {e}", path.display()))?;
        tracing::info!(file = %path.display(), ?algorithm, "token public key");
    }
    if let Some(path) = &args.jwks_file {
        let setting = "--jwks-file (JWKS_FILE)";
        let json = read_setting_file(setting, path)?;
        let added = keys
            .add_jwks(&json)
            .map_err(|e| anyhow::anyhow!("{setting} {}: {e}", path.display()))?;
        tracing::info!(file = %path.display(), keys = added, "token keys from JWKS");
    }
    let configured = args.secret.jwt_secret.is_some() || args.secret.jwt_secret_file.is_some();
    if configured || keys.is_empty() {
        let secret = jwt_secret(&args.secret, data_dir)?;
        if !configured {
            tracing::info!(file = %data_dir.join("jwt-secret").display(), "JWT secret from the data directory");
        }
        keys.add_hs256(secret.expose_secret().as_bytes());
    }
    Ok(keys)
}

/// Reads a file a setting names; the error names the setting.
fn read_setting_file(setting: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{setting}: cannot read {}", path.display()))
}

fn tls(args: &TlsArgs) -> anyhow::Result<Option<TlsSettings>> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(TlsSettings {
            certificate_chain: read_setting_file("--tls-cert (TLS_CERT_FILE)", cert)?,
            private_key: read_setting_file("--tls-key (TLS_KEY_FILE)", key)?.into(),
            client_ca: args
                .tls_client_ca
                .as_deref()
                .map(|ca| read_setting_file("--tls-client-ca (TLS_CLIENT_CA_FILE)", ca))
                .transpose()?,
        })),
        (None, None) => Ok(None),
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let keys = keys(&args.auth, &args.database.data_dir)?;
    let tls = tls(&args.tls)?;
    let metrics = args.metrics_addr().map_err(anyhow::Error::msg)?;
    let (database_url, cluster) = database(&args.database).await?;
    let drain = Duration::from_secs(args.shutdown.drain_timeout_seconds);
    let deadline = Duration::from_secs(args.shutdown.shutdown_deadline_seconds);
    let result = async {
        let running = server::start(ServerSettings {
            listen: args.listen,
            database_url,
            pool: args.pool(),
            keys,
            idempotency_retention: Duration::from_secs(args.idempotency_retention_hours * 3600),
            health_interval: Duration::from_secs(2),
            watch: args.watch(),
            tls,
            limits: Limits {
                max_message_bytes: usize::try_from(args.limits.max_message_bytes)
                    .unwrap_or(usize::MAX),
                max_concurrent_streams: args.limits.max_concurrent_streams,
                max_header_list_bytes: args.limits.max_header_list_bytes,
                max_connections: usize::try_from(args.limits.max_connections).unwrap_or(usize::MAX),
            },
            metrics,
        })
        .await?;
        shutdown_signal().await;
        tracing::info!(?drain, ?deadline, "shutting down");
        tokio::select! {
            result = tokio::time::timeout(deadline, running.shutdown(drain)) => match result {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("shutdown deadline reached: exiting");
                    Ok(())
                }
            },
            _ = shutdown_signal() => {
                tracing::warn!("second signal: exiting now");
                Ok(())
            }
        }
    }
    .await;
    if let Some(cluster) = cluster {
        cluster.stop().await?;
    }
    result
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    let (database_url, cluster) = database(&args).await?;
    let result = store::run_migrations(database_url.expose_secret()).await;
    if let Some(cluster) = cluster {
        cluster.stop().await?;
    }
    let applied = result?;
    tracing::info!(?applied, "database migrated");
    Ok(())
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let secret = jwt_secret(&args.secret, &args.data_dir)?;
    let token = auth::mint_token(
        secret.expose_secret(),
        &args.sub,
        &args.roles,
        args.accounts,
        args.ttl,
        args.issuer,
        args.audience,
    )?;
    println!("{token}");
    Ok(())
}
