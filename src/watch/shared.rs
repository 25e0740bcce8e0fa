//! What the hub's reader and every subscriber share: the ring, the
//! settings, the shutdown signal, the retry backoff.

use std::{
    sync::{Arc, atomic::AtomicUsize},
    time::Duration,
};

use tokio::sync::{Notify, broadcast, watch};
use uuid::Uuid;

use super::{WatchSettings, encoded::Encoded};
use crate::{
    pb,
    store::{EventPosition, Store},
};

/// What the reader publishes, in stream order.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // published behind an Arc: never moved by value
pub(super) enum Published {
    /// A committed event, converted and encoded once for every
    /// subscriber.
    Event {
        position: EventPosition,
        case_id: Uuid,
        account_id: String,
        message: pb::StateChangeEvent,
        encoded: Encoded,
    },
    /// Every event before this position has been published.
    Horizon(EventPosition),
}

pub(super) struct Shared {
    pub store: Store,
    /// Wakes the reader (a notification, a new stream).
    pub wake: Arc<Notify>,
    pub settings: WatchSettings,
    pub ring: broadcast::Sender<Arc<Published>>,
    pub shutdown: watch::Receiver<bool>,
    pub streams: AtomicUsize,
}

/// Exponential backoff from 100 ms to 5 s.
#[derive(Debug)]
pub(super) struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(100))
    }
}

impl Backoff {
    pub fn next(&mut self) -> Duration {
        let delay = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        delay
    }
}

/// Resolves once the hub shuts down.
pub(super) async fn shut_down(shutdown: &mut watch::Receiver<bool>) {
    // An error means the hub is gone: shut down as well.
    let _ = shutdown.wait_for(|down| *down).await.map(|_| ());
}
