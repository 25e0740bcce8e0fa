//! Refuses new calls once a graceful shutdown has begun.
//!
//! Closing the listener stops new connections, and hyper's graceful
//! shutdown sends GOAWAY on open ones; but HTTP/2's GOAWAY is two-phased
//! (first "no more streams, soon", then the last stream id after a ping
//! round trip), so a call a client opens on an old connection in between is
//! still served. This layer makes "no new call after SIGTERM" exact: from the
//! moment [`Drain::begin`] is called, every call that reaches the server gets
//! `UNAVAILABLE` with reason `SERVER_SHUTTING_DOWN` — a status every gRPC
//! retry policy retries, on another replica. Calls that started before keep
//! running until the drain timeout.
//!
//! Health `Check` stays answered (NOT_SERVING), so that probes on an open
//! connection learn the truth rather than an error.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use http::{Request, Response};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Layer, Service};

use crate::api::status::{ERROR_DOMAIN, SERVER_SHUTTING_DOWN};

/// The switch the server flips when it starts to shut down.
#[derive(Debug, Clone, Default)]
pub struct Drain(Arc<AtomicBool>);

impl Drain {
    /// From now on new calls are refused.
    pub fn begin(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl<S> Layer<S> for Drain {
    type Service = RefuseWhileDraining<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RefuseWhileDraining {
            inner,
            drain: self.clone(),
        }
    }
}

/// The service [`Drain`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct RefuseWhileDraining<S> {
    inner: S,
    drain: Drain,
}

/// Still answered while draining.
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// The status of a call that arrives during shutdown.
fn shutting_down() -> Status {
    Status::with_error_details(
        Code::Unavailable,
        "the server is shutting down; retry the call, it was not started",
        ErrorDetails::with_error_info(SERVER_SHUTTING_DOWN, ERROR_DOMAIN, HashMap::new()),
    )
}

impl<S, B> Service<Request<B>> for RefuseWhileDraining<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future =
        futures::future::Either<std::future::Ready<Result<Self::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.drain.draining() && request.uri().path() != HEALTH_CHECK {
            return futures::future::Either::Left(std::future::ready(Ok(
                shutting_down().into_http()
            )));
        }
        futures::future::Either::Right(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{ServiceExt, service_fn};

    use super::*;

    /// A stand-in for the routes: answers every call with OK.
    fn routes() -> impl Service<
        Request<()>,
        Response = Response<tonic::body::Body>,
        Error = Infallible,
        Future = std::future::Ready<Result<Response<tonic::body::Body>, Infallible>>,
    > + Clone {
        service_fn(|_: Request<()>| std::future::ready(Ok(Status::ok("").into_http())))
    }

    async fn call(drain: &Drain, path: &str) -> Status {
        let request = Request::builder().uri(path).body(()).expect("request");
        let response = drain
            .layer(routes())
            .oneshot(request)
            .await
            .expect("infallible");
        Status::from_header_map(response.headers()).expect("a grpc-status header")
    }

    #[tokio::test]
    async fn calls_pass_until_the_drain_begins_then_only_health_checks_do() {
        let drain = Drain::default();
        let get = "/invoicecase.v1.InvoiceCaseService/GetInvoiceCase";
        assert_eq!(call(&drain, get).await.code(), Code::Ok);

        drain.begin();
        let refused = call(&drain, get).await;
        assert_eq!(refused.code(), Code::Unavailable);
        let info = refused.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "SERVER_SHUTTING_DOWN");
        assert_eq!(info.domain, ERROR_DOMAIN);
        for path in [
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(call(&drain, path).await.code(), Code::Unavailable, "{path}");
        }
        assert_eq!(call(&drain, HEALTH_CHECK).await.code(), Code::Ok);
    }
}
