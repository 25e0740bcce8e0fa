//! The Prometheus endpoint (`GET /metrics`) on a port of its own.
//!
//! Metrics: `grpc_server_handled_total{grpc_service,grpc_method,grpc_code}`
//! and `grpc_server_handling_seconds` (every RPC),
//! `invoice_cases_transitions_total{action}` (committed actions),
//! `invoice_cases_watch_streams` (open watch streams),
//! `invoice_cases_event_delivery_lag_seconds` (from an action's time to the
//! watch reader publishing its event), and
//! `invoice_cases_db_pool_connections{state}` and
//! `invoice_cases_db_pool_waiting` (database pool use). Every family has
//! its `# HELP` line.

use std::{net::SocketAddr, sync::OnceLock};

use anyhow::Context as _;
use axum::{Router, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::{net::TcpListener, task::JoinHandle};

use crate::store::Store;

/// Latency buckets, in seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// The process's metrics recorder, installed on first use.
pub fn recorder() -> anyhow::Result<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .and_then(|builder| builder.install_recorder())
                .inspect(|_| describe())
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))
}

/// The `# HELP` line of every metric.
fn describe() {
    metrics::describe_counter!(
        "grpc_server_handled_total",
        "RPCs completed on the server, by method and status code \
         (grpc_service and grpc_method are \"unknown\" for a path the server does not serve)."
    );
    metrics::describe_histogram!(
        "grpc_server_handling_seconds",
        metrics::Unit::Seconds,
        "Time from an RPC's request to the end of its response, by method."
    );
    metrics::describe_counter!(
        "invoice_cases_transitions_total",
        "Actions committed, by the action its event names (CREATE, SUBMIT, ...); \
         a replayed request id does not count again."
    );
    metrics::describe_gauge!(
        "invoice_cases_watch_streams",
        "WatchStateChanges streams open."
    );
    metrics::describe_histogram!(
        "invoice_cases_event_delivery_lag_seconds",
        metrics::Unit::Seconds,
        "Time from an action's commit time to the watch reader publishing its event."
    );
    metrics::describe_gauge!(
        "invoice_cases_db_pool_connections",
        "Database pool connections: in_use, idle, and the pool's max size."
    );
    metrics::describe_gauge!(
        "invoice_cases_db_pool_waiting",
        "Calls waiting for a database pool connection."
    );
}

/// Serves `/metrics` on `addr`; returns the bound address and the task.
pub async fn serve(addr: SocketAddr, store: Store) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let handle = recorder()?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let local = listener.local_addr()?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let store = store.clone();
            async move {
                let pool = store.pool_status();
                let in_use = pool.size.saturating_sub(pool.available);
                metrics::gauge!("invoice_cases_db_pool_connections", "state" => "in_use")
                    .set(in_use as f64);
                metrics::gauge!("invoice_cases_db_pool_connections", "state" => "idle")
                    .set(pool.available as f64);
                metrics::gauge!("invoice_cases_db_pool_connections", "state" => "max")
                    .set(pool.max_size as f64);
                metrics::gauge!("invoice_cases_db_pool_waiting").set(pool.waiting as f64);
                handle.render()
            }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    tracing::info!(%local, "serving metrics");
    Ok((local, task))
}
