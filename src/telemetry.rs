//! One log line and the metrics of every RPC: method, status code,
//! latency, actor and case, under a request id.
//!
//! The line is written when the response ends — after the trailers of a
//! unary call, when a stream closes, or when the client gives up — so it
//! carries the call's final status and whole duration; a call the client
//! gives up before it is answered is logged as Cancelled. The request id is
//! the client's `x-request-id` when it sends a sane one, else a new UUID
//! (tower-http's request-id layers make and echo it, see server.rs); it is
//! returned in the response's `x-request-id`. The handlers add the actor and
//! the case to the RPC's span.
//!
//! Hand-written where no crate fits: tower-http's TraceLayer has no callback
//! for a response body dropped before its end (a client that cancels or
//! leaves a stream) and reports a trailers-only error when its headers
//! arrive, so it cannot write exactly one line per call with its final
//! status; and no crate has gRPC metrics labelled from the services'
//! descriptor sets.
//!
//! The metrics' `grpc_service` and `grpc_method` labels name only the
//! methods the server serves (read from the descriptor sets of its
//! services); any other path counts as `unknown`, so that calls to made-up
//! paths cannot create new series. `grpc_code` is the canonical code name
//! (`OK`, `Canceled`, `InvalidArgument`, …) as go-grpc-prometheus writes it.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::LazyLock,
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use prost::Message as _;
use tonic::Code;
use tower::{Layer, Service};
use tower_http::request_id::RequestId;
use tracing::{Instrument, Span, field::Empty};

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

/// The request id's header, in requests and responses.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether a client's request id is kept: 1-128 of `[A-Za-z0-9-_.:]`.
fn is_sane_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

/// Keeps the client's first `x-request-id` only when it is sane, else
/// removes it, so that tower-http's `SetRequestIdLayer` (next, see
/// server.rs) gives the call a new UUID. Hand-written: `SetRequestId` keeps
/// whatever id a client sends.
pub fn keep_sane_request_id<B>(mut request: Request<B>) -> Request<B> {
    match request
        .headers()
        .get(&REQUEST_ID)
        .filter(|value| is_sane_request_id(value))
        .cloned()
    {
        // `insert` drops any further values: the first one is the id.
        Some(value) => {
            request.headers_mut().insert(REQUEST_ID, value);
        }
        None => {
            request.headers_mut().remove(REQUEST_ID);
        }
    }
    request
}

/// The `grpc_service` and `grpc_method` of a path the server does not
/// serve.
const UNKNOWN: &str = "unknown";

/// The services the server mounts, and the descriptor sets declaring them.
const SERVICES: &[(&str, &[u8])] = &[
    (crate::server::SERVICE_NAME, crate::pb::FILE_DESCRIPTOR_SET),
    (
        crate::health::pb::health_server::SERVICE_NAME,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ),
    (
        tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    ),
    (
        tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ),
];

/// Every method served: its path (`/package.Service/Method`) → (service,
/// method).
static KNOWN_METHODS: LazyLock<HashMap<String, (String, String)>> = LazyLock::new(|| {
    let mut known = HashMap::new();
    for (name, descriptor) in SERVICES {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*descriptor) else {
            tracing::error!(service = name, "its descriptor set does not decode");
            continue;
        };
        for file in &set.file {
            for service in &file.service {
                let full = match file.package() {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                if full != *name {
                    continue;
                }
                for method in &service.method {
                    known.insert(
                        format!("/{full}/{}", method.name()),
                        (full.clone(), method.name().to_owned()),
                    );
                }
            }
        }
    }
    known
});

/// The metric labels of a request path: (`grpc_service`, `grpc_method`) of
/// a method served, else `unknown` for both.
pub fn method_labels(path: &str) -> (&'static str, &'static str) {
    match KNOWN_METHODS.get(path) {
        Some((service, method)) => (service, method),
        None => (UNKNOWN, UNKNOWN),
    }
}

/// The canonical name of a status code, as go-grpc-prometheus labels it
/// (`OK`, `Canceled`, …; `Code`'s `Debug` says `Ok`, `Cancelled`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// What the log line of one call says.
struct Call {
    span: Span,
    /// The metric labels (see [`method_labels`]).
    service: &'static str,
    method: &'static str,
    started: Instant,
    /// Health checks and reflection are frequent and dull: debug level.
    quiet: bool,
}

impl Call {
    /// Writes the line and the metrics.
    fn finish(self, code: Code) {
        let latency = self.started.elapsed();
        // The log keeps `Code`'s own names.
        let logged = format!("{code:?}");
        let latency_ms = latency.as_secs_f64() * 1000.0;
        let _enter = self.span.enter();
        if self.quiet {
            tracing::debug!(code = %logged, latency_ms, "rpc");
        } else if matches!(code, Code::Internal | Code::Unknown | Code::DataLoss) {
            tracing::error!(code = %logged, latency_ms, "rpc");
        } else {
            tracing::info!(code = %logged, latency_ms, "rpc");
        }
        metrics::counter!(
            "grpc_server_handled_total",
            "grpc_service" => self.service,
            "grpc_method" => self.method,
            "grpc_code" => code_name(code),
        )
        .increment(1);
        metrics::histogram!(
            "grpc_server_handling_seconds",
            "grpc_service" => self.service,
            "grpc_method" => self.method,
        )
        .record(latency.as_secs_f64());
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from)
}

impl<S, B, R> Service<Request<B>> for RpcTelemetry<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Body + Send + 'static,
{
    type Response = Response<LoggedBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        // The log names the method the path names, served or not.
        let method = path.rsplit('/').next().unwrap_or_default().to_owned();
        let (service, method_label) = method_labels(path);
        // Set by tower-http's SetRequestIdLayer, outside this layer (see
        // server.rs): the client's sane id or a new UUID.
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .and_then(|id| id.header_value().to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let span = tracing::info_span!(
            "rpc",
            method = %method,
            request_id = %request_id,
            actor = Empty,
            case = Empty,
        );
        let call = Call {
            span: span.clone(),
            quiet: service.starts_with("grpc."),
            service,
            method: method_label,
            started: Instant::now(),
        };
        let future = self.inner.call(request).instrument(span);
        Box::pin(async move {
            // Dropped before it is answered (the client went away), the
            // call is logged as Cancelled.
            let pending = PendingCall(Some(call));
            let result = future.await;
            let call = pending.answered();
            let response = match result {
                Ok(response) => response,
                Err(error) => {
                    if let Some(call) = call {
                        call.finish(Code::Unknown);
                    }
                    return Err(error);
                }
            };
            // A trailers-only response (an error) has its status in the
            // headers; otherwise it comes in the trailers.
            let status = grpc_status(response.headers());
            Ok(response.map(|body| LoggedBody {
                inner: Box::pin(body),
                call,
                status,
            }))
        })
    }
}

/// A call whose response is not ready yet: dropped (the client cancelled
/// before the handler answered, and hyper dropped the call), it is logged
/// as Cancelled.
struct PendingCall(Option<Call>);

impl PendingCall {
    /// The response is there: its body logs the call from now on.
    fn answered(mut self) -> Option<Call> {
        self.0.take()
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if let Some(call) = self.0.take() {
            call.finish(Code::Cancelled);
        }
    }
}

/// A response body that writes the call's log line when it ends.
pub struct LoggedBody<B> {
    inner: Pin<Box<B>>,
    call: Option<Call>,
    status: Option<Code>,
}

impl<B> LoggedBody<B> {
    fn finish(&mut self, code: Code) {
        if let Some(call) = self.call.take() {
            call.finish(code);
        }
    }
}

impl<B: Body> Body for LoggedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.status = Some(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(Code::Internal),
            Poll::Ready(None) => {
                let code = this.status.unwrap_or(Code::Ok);
                this.finish(code);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for LoggedBody<B> {
    fn drop(&mut self) {
        // The body was dropped before its end: the client went away (or the
        // status is known from the headers of an empty body).
        let code = self.status.unwrap_or(Code::Cancelled);
        self.finish(code);
    }
}

/// Records the caller on the current RPC's log line.
pub fn record_actor(actor: &str) {
    Span::current().record("actor", actor);
}

/// Records the case on the current RPC's log line.
pub fn record_case(number: &str) {
    Span::current().record("case", number);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mounted_service_has_its_methods_labelled() {
        for (service, _) in SERVICES {
            let methods: Vec<_> = KNOWN_METHODS
                .values()
                .filter(|(s, _)| s == service)
                .collect();
            assert!(!methods.is_empty(), "{service}: no method known");
        }
        assert_eq!(
            method_labels("/invoicecase.v1.InvoiceCaseService/WatchStateChanges"),
            ("invoicecase.v1.InvoiceCaseService", "WatchStateChanges")
        );
        assert_eq!(
            method_labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        assert_eq!(
            method_labels("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            (
                "grpc.reflection.v1alpha.ServerReflection",
                "ServerReflectionInfo"
            )
        );
        for path in [
            "/invoicecase.v1.InvoiceCaseService/Nope",
            "/nope.Service/SubmitCase",
            "/invoicecase.v1.InvoiceCaseService/SubmitCase/extra",
            "",
            "/",
        ] {
            assert_eq!(method_labels(path), (UNKNOWN, UNKNOWN), "{path}");
        }
    }

    #[test]
    fn codes_have_their_canonical_names() {
        let names: Vec<_> = (0..=16).map(|c| code_name(Code::from(c))).collect();
        assert_eq!(
            names,
            [
                "OK",
                "Canceled",
                "Unknown",
                "InvalidArgument",
                "DeadlineExceeded",
                "NotFound",
                "AlreadyExists",
                "PermissionDenied",
                "ResourceExhausted",
                "FailedPrecondition",
                "Aborted",
                "OutOfRange",
                "Unimplemented",
                "Internal",
                "Unavailable",
                "DataLoss",
                "Unauthenticated",
            ]
        );
    }
}
