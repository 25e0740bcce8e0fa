//! Authentication before anything else reads a call: a tower layer checks
//! the bearer token of every call of the invoice case service from the
//! HTTP/2 headers alone — before its body is decompressed or decoded — and
//! answers UNAUTHENTICATED at once when it is missing or invalid. The
//! caller it finds travels in the request's extensions; handlers read it
//! from there (and check its roles against the permission matrix).
//!
//! Health and reflection need no token.

use std::{
    future::{Ready, ready},
    task::{Context, Poll},
};

use futures::future::Either;
use http::{Request, Response};
use tower::{Layer, Service};

use super::status;
use crate::auth::Authenticator;

/// The calls that need a token.
const AUTHENTICATED_PREFIX: &str = "/invoicecase.v1.InvoiceCaseService/";

/// Adds [`Authenticate`] to the server's routes.
#[derive(Clone)]
pub struct AuthenticateLayer {
    auth: Authenticator,
}

impl AuthenticateLayer {
    pub fn new(auth: Authenticator) -> Self {
        AuthenticateLayer { auth }
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// The service [`AuthenticateLayer`] wraps around the routes.
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    auth: Authenticator,
}

impl<S, B> Service<Request<B>> for Authenticate<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if !request.uri().path().starts_with(AUTHENTICATED_PREFIX) {
            return Either::Right(self.inner.call(request));
        }
        match self.auth.authenticate_value(
            request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|value| value.as_bytes()),
        ) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Right(self.inner.call(request))
            }
            Err(error) => Either::Left(ready(Ok(status::auth(error).into_http()))),
        }
    }
}
