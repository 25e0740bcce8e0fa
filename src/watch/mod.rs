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
//! * A durable subscription's stream (see `store::subscriptions`) is a
//!   stream from the subscription's position that also ends when the
//!   subscription is deleted: each replica's listener hears the deletion
//!   (`LISTEN/NOTIFY`) and tells the streams, and after it reconnects every
//!   subscription stream checks its subscription once in the database.

//!
//! The module speaks the store's and the domain's terms: the API checks a
//! request into a [`WatchSpec`] and maps a [`WatchError`] to its status.

pub mod cursor;
pub mod encoded;
mod hub;
mod response;
mod shared;
mod subscriber;

use std::{pin::Pin, time::Duration};

use futures::Stream;

pub use encoded::Encoded;
pub use hub::{Prepared, StreamSlot, WatchHub};

use crate::store::{CaseKey, StoreError};

/// What a watch asks for, already checked.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    /// Only this case's events.
    pub case: Option<CaseKey>,
    /// Only this account's events.
    pub account_id: Option<String>,
    pub start: WatchStart,
}

/// Where a stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchStart {
    /// With the next event committed.
    Now,
    /// With the oldest event retained.
    FromBeginning,
    /// After the position a cursor names (its text, checked here).
    AfterCursor(String),
    /// With a snapshot of the matching cases, then their events.
    WithSnapshot,
}

/// Why a watch is refused, or why its stream ends.
#[derive(Debug)]
pub enum WatchError {
    /// The process serves its most streams.
    TooManyStreams,
    /// The start cursor is not one of this database's: why.
    InvalidCursor(String),
    /// The cursor is older than the retained history; `oldest` is the
    /// oldest cursor there is.
    CursorExpired { oldest: String },
    /// The database failed (or the watched case is not there).
    Store(StoreError),
    /// The stream was interrupted; resume after `cursor`.
    Interrupted {
        reason: Interruption,
        cursor: String,
    },
    /// The caller's token expired; resume after `cursor` with a new one.
    TokenExpired { cursor: String },
    /// The client did not read the snapshot in time.
    SnapshotNotRead,
    /// The snapshot could not be read.
    SnapshotFailed,
    /// The stream's durable subscription was deleted; `cursor` is where it
    /// stood (a new watch may start after it).
    SubscriptionDeleted { name: String, cursor: String },
}

/// Why a stream was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    ShuttingDown,
    DatabaseUnavailable,
}

/// The messages of a watch, encoded, then the error it ended with.
pub type WatchEvents = Pin<Box<dyn Stream<Item = Result<Encoded, WatchError>> + Send + 'static>>;

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
