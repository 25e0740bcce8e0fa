//! WatchStateChanges: streams of committed events.

pub mod cursor;

use std::pin::Pin;

use futures::Stream;
use tonic::Status;

use crate::{auth::Caller, pb, store::Store};

/// The stream type of every watch.
pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchStateChangesResponse, Status>> + Send + 'static>>;

/// Hands committed events to the subscribers of this process.
#[derive(Clone, Default)]
pub struct WatchHub {}

impl WatchHub {
    /// Starts a subscription.
    pub async fn subscribe(
        &self,
        _store: &Store,
        _caller: Caller,
        _request: pb::WatchStateChangesRequest,
    ) -> Result<WatchStream, Status> {
        Err(Status::unimplemented(
            "WatchStateChanges is not available yet",
        ))
    }
}
