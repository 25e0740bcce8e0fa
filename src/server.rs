//! Assembles and runs the gRPC server: the invoice case service, health and
//! reflection (v1 and v1alpha), on a listener of its own.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::{
    api::{AuthenticateLayer, InvoiceCaseApi},
    auth::{Authenticator, KeySet},
    drain::Drain,
    pb,
    routes::InvoiceCaseRoutes,
    store::{PoolSettings, Store, run_migrations},
    watch::{WatchHub, WatchSettings},
};

/// Responses may always be this large, whatever the request limit: a case
/// of 1000 lines must be returned.
const MIN_ENCODING_BYTES: usize = 4 * 1024 * 1024;

/// The fully qualified name of the service, as health reports it.
pub const SERVICE_NAME: &str = "invoicecase.v1.InvoiceCaseService";

/// What the server needs to run. `Debug` shows no secret: the database
/// URL (which may carry a password) and the TLS private key are
/// redacted, token keys show only their algorithms.
#[derive(Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub database_url: SecretString,
    pub pool: PoolSettings,
    pub keys: KeySet,
    /// How long request ids are remembered.
    pub idempotency_retention: Duration,
    /// How often the database is checked for health.
    pub health_interval: Duration,
    /// Watch streams.
    pub watch: WatchSettings,
    /// TLS of the listener (plaintext when `None`).
    pub tls: Option<TlsSettings>,
    /// Protective limits.
    pub limits: Limits,
    /// Where `/metrics` is served (`None`: nowhere).
    pub metrics: Option<SocketAddr>,
}

/// TLS material, PEM-encoded.
#[derive(Clone)]
pub struct TlsSettings {
    pub certificate_chain: Vec<u8>,
    pub private_key: SecretSlice<u8>,
    /// When set, clients must present a certificate signed by these CAs.
    pub client_ca: Option<Vec<u8>>,
}

/// Sizes only: certificates are public but long, the key is secret.
impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("certificate_chain_bytes", &self.certificate_chain.len())
            .field("private_key", &self.private_key)
            .field("client_ca_bytes", &self.client_ca.as_ref().map(Vec::len))
            .finish()
    }
}

/// Protective limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest decoded message, in bytes.
    pub max_message_bytes: usize,
    /// Concurrent calls per HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Largest request header list (HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`),
    /// in bytes: headers up to it reach the service, which answers an
    /// oversized token UNAUTHENTICATED; beyond it HTTP/2 refuses the call.
    pub max_header_list_bytes: u32,
    /// Open connections.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A case of 1000 lines with every text at its longest is about
            // 1.5 MB.
            max_message_bytes: 4 * 1024 * 1024,
            max_concurrent_streams: 200,
            max_header_list_bytes: 128 * 1024,
            max_connections: 10_000,
        }
    }
}

/// The settings it names only: a field added later shows nowhere until
/// someone decides it may.
impl std::fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSettings")
            .field("listen", &self.listen)
            .field("database_url", &self.database_url)
            .field("pool", &self.pool)
            .field("keys", &self.keys)
            .field("tls", &self.tls)
            .field("limits", &self.limits)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

/// A server running in the background.
pub struct RunningServer {
    /// The address it listens on (useful with port 0).
    pub local_addr: SocketAddr,
    /// The address of `/metrics`, when served.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    background: Vec<JoinHandle<()>>,
    health: HealthReporter,
    watch: WatchHub,
    drain: Drain,
}

impl RunningServer {
    /// Watch streams open now.
    pub fn active_watch_streams(&self) -> usize {
        self.watch.active_streams()
    }

    /// Stops gracefully: health says NOT_SERVING at once, watch streams end
    /// with UNAVAILABLE and their cursor, no new call is accepted, calls in
    /// flight get up to `drain_timeout` to finish; then every connection is closed.
    pub async fn shutdown(mut self, drain_timeout: Duration) -> anyhow::Result<()> {
        self.drain.begin();
        // The health monitor must not set SERVING again.
        for task in &self.background {
            task.abort();
        }
        set_health(&self.health, ServingStatus::NotServing).await;
        self.watch.shut_down();
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        // Health Watch streams never end by themselves: end them (their
        // clients have seen NOT_SERVING), so they do not hold the drain.
        for service in ["", SERVICE_NAME] {
            self.health.clear_service_status(service).await;
        }
        match tokio::time::timeout(drain_timeout, &mut self.server).await {
            Ok(joined) => joined?.map_err(anyhow::Error::from),
            Err(_) => {
                tracing::warn!(
                    ?drain_timeout,
                    "calls still open after the drain timeout: closing them"
                );
                self.server.abort();
                Ok(())
            }
        }
    }
}

/// Migrates the database, binds the listener and starts serving.
pub async fn start(settings: ServerSettings) -> anyhow::Result<RunningServer> {
    let applied = run_migrations(settings.database_url.expose_secret())
        .await
        .context("cannot migrate the database")?;
    if !applied.is_empty() {
        tracing::info!(?applied, "migrations applied");
    }
    let store = Store::new(settings.database_url.expose_secret(), &settings.pool)?;
    store
        .ping(settings.pool.wait_timeout)
        .await
        .context("cannot reach the database")?;

    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let local_addr = listener.local_addr()?;
    let metrics = match settings.metrics {
        Some(addr) => Some(crate::metrics::serve(addr, store.clone()).await?),
        None => None,
    };

    let (health, health_service) = crate::health::health_reporter();
    set_health(&health, ServingStatus::Serving).await;

    let (watch, watch_tasks) = WatchHub::start(
        store.for_streams(),
        settings.database_url.expose_secret().to_owned(),
        settings.watch.clone(),
    )
    .await
    .context("cannot read the event log")?;
    let auth = Authenticator::new(settings.keys.clone());
    let api = InvoiceCaseApi::new(store.clone(), auth.clone(), watch.clone());
    let service = InvoiceCaseRoutes::new(
        api,
        settings.limits.max_message_bytes,
        settings.limits.max_message_bytes.max(MIN_ENCODING_BYTES),
    );
    // grpcurl 1.8 speaks only v1alpha; newer clients v1.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc error details, so that grpcurl can print them.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let (shutdown, shutdown_signal) = oneshot::channel::<()>();
    // TCP keepalive and TCP_NODELAY: set by the listener on every accepted
    // socket (the builder's settings do not reach an incoming stream).
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(settings.limits.max_concurrent_streams))
        .http2_max_header_list_size(settings.limits.max_header_list_bytes);
    if let Some(tls) = &settings.tls {
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
            &tls.certificate_chain,
            tls.private_key.expose_secret(),
        ));
        if let Some(ca) = &tls.client_ca {
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder.tls_config(config).context("invalid TLS settings")?;
    }
    let drain = Drain::default();
    let router = builder
        // A client's x-request-id that is not sane is removed, so that
        // tower-http's SetRequestId gives the call a new UUID (header and
        // extension), and PropagateRequestId returns it in the response.
        .layer(tower::util::MapRequestLayer::new(
            crate::telemetry::keep_sane_request_id::<tonic::body::Body>,
        ))
        .layer(SetRequestIdLayer::new(
            crate::telemetry::REQUEST_ID,
            MakeRequestUuid,
        ))
        .layer(PropagateRequestIdLayer::new(crate::telemetry::REQUEST_ID))
        // One line and the metrics per call, under that id.
        .layer(crate::telemetry::RpcTelemetryLayer)
        .layer(drain.clone())
        .layer(AuthenticateLayer::new(auth))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service);
    let server = tokio::spawn(router.serve_with_incoming_shutdown(
        crate::listener::incoming(listener, settings.limits.max_connections),
        async {
            let _ = shutdown_signal.await;
        },
    ));
    tracing::info!(%local_addr, "serving gRPC");

    let mut background = watch_tasks;
    let metrics_addr = metrics.map(|(addr, task)| {
        background.push(task);
        addr
    });
    background.push(tokio::spawn(watch_database(
        store.clone(),
        health.clone(),
        settings.health_interval,
    )));
    background.push(tokio::spawn(prune(
        store,
        settings.idempotency_retention,
        settings.watch.event_retention,
    )));
    Ok(RunningServer {
        local_addr,
        metrics_addr,
        shutdown: Some(shutdown),
        server,
        background,
        health,
        watch,
        drain,
    })
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(SERVICE_NAME, status).await;
}

/// Health follows the database: NOT_SERVING while it does not answer.
async fn watch_database(store: Store, health: HealthReporter, interval: Duration) {
    let mut serving = true;
    loop {
        tokio::time::sleep(interval).await;
        // A database that does not answer at all (a black-holed network)
        // counts as down once the ping has waited this long.
        let ok = store
            .ping(interval.max(Duration::from_secs(1)))
            .await
            .is_ok();
        if ok != serving {
            serving = ok;
            if ok {
                tracing::info!("database reachable again: SERVING");
                set_health(&health, ServingStatus::Serving).await;
            } else {
                tracing::warn!("database unreachable: NOT_SERVING");
                set_health(&health, ServingStatus::NotServing).await;
            }
        }
    }
}

/// Rows deleted per transaction when pruning: each batch is short, so
/// that pruning never holds watch streams back for long.
const PRUNE_BATCH: usize = 1000;

/// Every ten minutes: forgets request ids older than their retention, and
/// prunes events older than theirs (when set).
async fn prune(store: Store, idempotency: Duration, events: Option<Duration>) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        match store
            .prune_idempotency_records(idempotency, PRUNE_BATCH)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "old idempotency records pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning idempotency records failed"),
        }
        let Some(retention) = events else { continue };
        let Some(cutoff) = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|r| chrono::Utc::now().checked_sub_signed(r))
        else {
            continue;
        };
        match store.prune_events(cutoff, PRUNE_BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "events older than the retention pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning events failed"),
        }
    }
}
