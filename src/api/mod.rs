//! The gRPC API: converts requests, calls the store, converts back, and
//! maps every error to a status with details.

mod authenticate;
mod edits;
mod filter;
mod paging;
mod requests;
mod service;
pub mod status;
mod subscriptions;

use std::pin::Pin;

use futures::Stream;
use tonic::Status;

pub use authenticate::AuthenticateLayer;
pub use requests::case_key;
pub use service::InvoiceCaseApi;

use crate::{pb, watch::Encoded};

/// The stream of a watch as the server sends it: its messages, encoded.
pub type EncodedStream = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send + 'static>>;

/// The stream of a watch as the generated service trait has it (decoded
/// again: the server's own route sends [`EncodedStream`]s as they are).
pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchStateChangesResponse, Status>> + Send + 'static>>;
