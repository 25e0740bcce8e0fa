//! What the hub's reader and every subscriber share: the ring, the
//! settings, the shutdown signal, the retry backoff.

use std::{
    sync::{Arc, atomic::AtomicUsize},
    time::Duration,
};

use backon::{BackoffBuilder as _, ExponentialBuilder};
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

/// What the watch listener tells subscription streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Deletion {
    /// This subscription was deleted (a notification).
    Of(Uuid),
    /// Notifications may have been missed (the listener reconnected): every
    /// subscription stream checks that its subscription still exists.
    Recheck,
}

pub(super) struct Shared {
    pub store: Store,
    /// Wakes the reader (a notification, a new stream).
    pub wake: Arc<Notify>,
    pub settings: WatchSettings,
    pub ring: broadcast::Sender<Arc<Published>>,
    pub shutdown: watch::Receiver<bool>,
    pub streams: AtomicUsize,
    /// Deletions of subscriptions, to the streams of subscriptions.
    pub deletions: broadcast::Sender<Deletion>,
}

/// Retry delays: exponential from 100 ms to 5 s, each with random jitter
/// (so that replicas and streams that lost the database together do not
/// retry in step), without end.
#[derive(Debug)]
pub(super) struct Backoff(backon::ExponentialBackoff);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(
            ExponentialBuilder::new()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(MAX_DELAY)
                .with_jitter()
                .without_max_times()
                .build(),
        )
    }
}

/// The longest retry delay (before jitter).
const MAX_DELAY: Duration = Duration::from_secs(5);

impl Backoff {
    pub fn next(&mut self) -> Duration {
        self.0.next().unwrap_or(MAX_DELAY)
    }
}

/// Resolves once the hub shuts down.
pub(super) async fn shut_down(shutdown: &mut watch::Receiver<bool>) {
    // An error means the hub is gone: shut down as well.
    let _ = shutdown.wait_for(|down| *down).await.map(|_| ());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_bound_with_jitter_and_never_ends() {
        let delays: Vec<Duration> = {
            let mut backoff = Backoff::default();
            (0..40).map(|_| backoff.next()).collect()
        };
        // Jitter adds up to the delay itself.
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] <= Duration::from_millis(200));
        assert!(delays.iter().all(|d| *d <= MAX_DELAY * 2), "{delays:?}");
        assert!(delays[30..].iter().all(|d| *d >= MAX_DELAY), "{delays:?}");
        // Two backoffs do not retry in step.
        let mut a = Backoff::default();
        let mut b = Backoff::default();
        let differ = (0..10).any(|_| a.next() != b.next());
        assert!(differ, "two backoffs gave the same delays");
    }
}
