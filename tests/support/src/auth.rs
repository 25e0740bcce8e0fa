//! Bearer tokens on clients.

use invoice_cases::{auth::mint_token, pb::invoice_case_service_client::InvoiceCaseServiceClient};
use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

/// Adds an `authorization` value to every call (or none).
#[derive(Clone)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl Bearer {
    /// Sends `value` as the authorization metadata.
    pub fn new(value: AsciiMetadataValue) -> Self {
        Bearer(Some(value))
    }

    /// Sends `Bearer <token>`, or no authorization metadata at all.
    pub fn token(token: Option<&str>) -> Self {
        Bearer(token.map(|t| MetadataValue::try_from(format!("Bearer {t}")).expect("ascii token")))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

/// A client of the service that sends a bearer token.
pub type Client = InvoiceCaseServiceClient<InterceptedService<Channel, Bearer>>;

/// A client on `channel` that authenticates with `token`.
pub fn authorized(channel: Channel, token: &str) -> Client {
    InvoiceCaseServiceClient::with_interceptor(channel, Bearer::token(Some(token)))
}

/// An HS256 token of `sub` with `roles`, limited to `accounts` when given,
/// valid for `ttl_seconds`.
pub fn token(
    secret: &str,
    sub: &str,
    roles: &[&str],
    accounts: Option<&[&str]>,
    ttl_seconds: u64,
) -> String {
    mint_token(
        secret,
        sub,
        &roles.iter().map(|r| (*r).to_owned()).collect::<Vec<_>>(),
        accounts.map(|a| a.iter().map(|s| (*s).to_owned()).collect()),
        ttl_seconds,
        None,
        None,
    )
    .expect("mint a token")
}

/// A random secret for a test deployment (64 hex characters).
pub fn new_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}
