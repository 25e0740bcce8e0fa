//! One log line and the metrics of every RPC: method, status code,
//! latency, actor and case, under a request id.
//!
//! The request id is the client's `x-request-id` when it sends a sane one,
//! else a new UUID; it is returned in the response's `x-request-id`. The
//! handlers add the actor and the case to the RPC's span.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::{Instrument, field::Empty};
use uuid::Uuid;

/// Adds [`RpcTelemetry`] to every service.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcTelemetryLayer;

impl<S> Layer<S> for RpcTelemetryLayer {
    type Service = RpcTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTelemetry { inner }
    }
}

/// Logs and measures each call.
#[derive(Debug, Clone)]
pub struct RpcTelemetry<S> {
    inner: S,
}

const REQUEST_ID: &str = "x-request-id";

impl<S, B, R> Service<Request<B>> for RpcTelemetry<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
    B: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let method = path.rsplit('/').next().unwrap_or_default().to_owned();
        let service = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 128
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            })
            .map(str::to_owned)
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            request.headers_mut().insert(REQUEST_ID, value);
        }
        // Health checks and reflection are frequent and dull.
        let quiet = service.starts_with("grpc.");
        let span = tracing::info_span!(
            "rpc",
            method = %method,
            request_id = %request_id,
            actor = Empty,
            case = Empty,
        );
        let started = Instant::now();
        let future = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let result = future.await;
            let latency = started.elapsed();
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map(tonic::Code::from)
                    .unwrap_or(tonic::Code::Ok),
                Err(_) => tonic::Code::Unknown,
            };
            let code_name = format!("{code:?}");
            let _enter = span.enter();
            let latency_ms = latency.as_secs_f64() * 1000.0;
            if quiet {
                tracing::debug!(code = %code_name, latency_ms, "rpc");
            } else if matches!(
                code,
                tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss
            ) {
                tracing::error!(code = %code_name, latency_ms, "rpc");
            } else {
                tracing::info!(code = %code_name, latency_ms, "rpc");
            }
            metrics::counter!(
                "grpc_server_handled_total",
                "grpc_service" => service.clone(),
                "grpc_method" => method.clone(),
                "grpc_code" => code_name,
            )
            .increment(1);
            metrics::histogram!(
                "grpc_server_handling_seconds",
                "grpc_service" => service,
                "grpc_method" => method,
            )
            .record(latency.as_secs_f64());
            result.map(|mut response| {
                if let Ok(value) = HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert(REQUEST_ID, value);
                }
                response
            })
        })
    }
}

/// Records the caller on the current RPC's log line.
pub fn record_actor(actor: &str) {
    tracing::Span::current().record("actor", actor);
}

/// Records the case on the current RPC's log line.
pub fn record_case(number: &str) {
    tracing::Span::current().record("case", number);
}
