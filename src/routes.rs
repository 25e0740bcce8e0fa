//! The invoice case service as the server mounts it: the generated
//! service, except WatchStateChanges, whose messages are sent as they were
//! encoded — once for every stream (see [`crate::watch::encoded`]).

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{
    Request, Response, Status,
    body::Body,
    codec::CompressionEncoding,
    codegen::BoxFuture,
    server::{Grpc, NamedService, ServerStreamingService},
};
use tower::Service;

use crate::{
    api::EncodedStream,
    api::InvoiceCaseApi,
    codec::ValidatingCodec,
    pb::{self, invoice_case_service_server::InvoiceCaseServiceServer},
    watch::Encoded,
};

/// The method served here rather than by the generated service.
const WATCH: &str = "/invoicecase.v1.InvoiceCaseService/WatchStateChanges";

/// The service's routes.
#[derive(Clone)]
pub struct InvoiceCaseRoutes {
    generated: InvoiceCaseServiceServer<InvoiceCaseApi>,
    api: Arc<InvoiceCaseApi>,
    max_decoding_message_size: usize,
    max_encoding_message_size: usize,
}

impl InvoiceCaseRoutes {
    /// Every method of `api`, gzip accepted and sent, with these message
    /// size limits.
    pub fn new(
        api: InvoiceCaseApi,
        max_decoding_message_size: usize,
        max_encoding_message_size: usize,
    ) -> Self {
        let api = Arc::new(api);
        let generated = InvoiceCaseServiceServer::from_arc(api.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_decoding_message_size)
            .max_encoding_message_size(max_encoding_message_size);
        InvoiceCaseRoutes {
            generated,
            api,
            max_decoding_message_size,
            max_encoding_message_size,
        }
    }
}

impl NamedService for InvoiceCaseRoutes {
    const NAME: &'static str = crate::server::SERVICE_NAME;
}

impl Service<http::Request<Body>> for InvoiceCaseRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != WATCH {
            return self.generated.call(request);
        }
        let watch = Watch(self.api.clone());
        let mut grpc =
            Grpc::new(ValidatingCodec::<Encoded, pb::WatchStateChangesRequest>::default())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(self.max_decoding_message_size)
                .max_encoding_message_size(self.max_encoding_message_size);
        Box::pin(async move { Ok(grpc.server_streaming(watch, request).await) })
    }
}

/// WatchStateChanges, answered with encoded messages.
struct Watch(Arc<InvoiceCaseApi>);

impl ServerStreamingService<pb::WatchStateChangesRequest> for Watch {
    type Response = Encoded;
    type ResponseStream = EncodedStream;
    type Future = BoxFuture<Response<EncodedStream>, Status>;

    fn call(&mut self, request: Request<pb::WatchStateChangesRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move { api.watch(request).await })
    }
}
