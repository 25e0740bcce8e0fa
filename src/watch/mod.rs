//! WatchStateChanges: streams of committed events, gap-free and resumable.
//!
//! * The events table is the only source. One reader per process reads new
//!   events once (in stream order, see `store::event_log`) and publishes
//!   them on a bounded broadcast ring to every local subscriber.
//!   `LISTEN/NOTIFY` only wakes the reader early; it also polls, so a lost
//!   notification delays an event by one poll at most.
//! * Every subscriber has a bounded buffer towards its client. A subscriber
//!   that falls behind the ring (its client reads slowly or not at all) is
//!   not waited for: it notices the lag and catches up from the database by
//!   its own cursor. Memory stays bounded whatever the clients do.
//! * A cursor names a position in the log, valid on every replica and
//!   across restarts.

pub mod cursor;
pub mod encoded;
mod hub;
mod response;
mod subscriber;

use std::{pin::Pin, time::Duration};

use futures::Stream;
use tonic::Status;

pub use encoded::Encoded;
pub use hub::WatchHub;

use crate::pb;

/// The stream of a watch: its messages, encoded.
pub type EncodedStream = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send + 'static>>;

/// The stream of a watch as the generated service trait has it (decoded
/// again: the server's own route sends [`EncodedStream`]s as they are).
pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchStateChangesResponse, Status>> + Send + 'static>>;

/// How watch streams behave.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// A stream that sent nothing for this long gets a progress message.
    pub progress_interval: Duration,
    /// The reader checks for new events at least this often (notifications
    /// wake it earlier).
    pub poll_interval: Duration,
    /// Messages buffered towards each client (a client that reads nothing
    /// holds at most this many, plus HTTP/2's send buffer).
    pub subscriber_buffer: usize,
    /// Events kept on the broadcast ring (whether or not anyone still needs
    /// them: it bounds memory, and a subscriber further behind catches up
    /// from the database).
    pub ring_capacity: usize,
    /// Events per database read.
    pub read_batch: usize,
    /// Cases per snapshot page.
    pub snapshot_page: usize,
    /// How long a stream may wait for its client to take one message of a
    /// snapshot before it is ended (the snapshot holds a database
    /// connection).
    pub snapshot_send_timeout: Duration,
    /// Streams of this process at most; more are refused with
    /// RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// When set, events older than this are pruned.
    pub event_retention: Option<Duration>,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            progress_interval: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            subscriber_buffer: 16,
            ring_capacity: 256,
            read_batch: 500,
            snapshot_page: 100,
            snapshot_send_timeout: Duration::from_secs(30),
            max_streams: 10_000,
            event_retention: None,
        }
    }
}
