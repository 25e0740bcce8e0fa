//! `grpc.health.v1.Health` as the server mounts it: tonic-health's service
//! (driven by its [`HealthReporter`]), behind a server generated with the
//! service's own codec, so that a request body that is not a message is
//! INVALID_ARGUMENT with a `BadRequest`, as on every other RPC, rather than
//! prost's INTERNAL.

use tonic::{Request, Response, Status};
use tonic_health::{
    pb::{HealthCheckRequest, HealthCheckResponse, health_server::Health as _},
    server::{HealthReporter, HealthService, WatchStream},
};

/// The server generated in `build.rs` from tonic-health's descriptor.
pub mod pb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]

    tonic::include_proto!("grpc.health.v1");
}

pub use pb::health_server::HealthServer;

/// Answers every call with tonic-health's [`HealthService`], unchanged.
#[derive(Debug)]
pub struct ValidatedHealth(HealthService);

/// A reporter and the health service it drives, ready to mount.
pub fn health_reporter() -> (HealthReporter, HealthServer<ValidatedHealth>) {
    let reporter = HealthReporter::new();
    let service = HealthService::from_health_reporter(reporter.clone());
    (reporter, HealthServer::new(ValidatedHealth(service)))
}

#[tonic::async_trait]
impl pb::health_server::Health for ValidatedHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.0.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        self.0.watch(request).await
    }
}
