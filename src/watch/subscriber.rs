//! One watch stream: catch up from the database by its cursor, then follow
//! the broadcast ring; back to the database whenever it falls behind.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::{
    sync::{
        broadcast::{
            self,
            error::{RecvError, TryRecvError},
        },
        mpsc,
    },
    time::Instant,
};
use uuid::Uuid;

use super::{
    Interruption, WatchError, cursor,
    encoded::Encoded,
    response::Outlet,
    shared::{Backoff, Deletion, Published, Shared, shut_down},
};
use crate::{
    convert,
    pb::{self, watch_state_changes_response::Kind},
    store::{EventFilter, EventPosition, LogPage, Snapshot, StoreError, StreamPosition},
};

/// Where a stream starts.
pub(super) enum Start {
    /// After this position.
    At(StreamPosition),
    /// With a snapshot of the matching cases (taken already, or by the
    /// stream).
    Snapshot(Option<Box<Snapshot>>),
}

/// The durable subscription a stream is of: the stream ends when it is
/// deleted.
pub(super) struct Watched {
    id: Uuid,
    name: String,
    deletions: broadcast::Receiver<Deletion>,
    /// Deletions may have been missed: check the database.
    recheck: bool,
}

impl Watched {
    pub fn new(id: Uuid, name: String, deletions: broadcast::Receiver<Deletion>) -> Self {
        Watched {
            id,
            name,
            deletions,
            recheck: false,
        }
    }

    /// Takes what the listener said so far without waiting: whether this
    /// subscription was deleted (a missed notification only marks a
    /// recheck).
    fn deleted(&mut self) -> bool {
        loop {
            match self.deletions.try_recv() {
                Ok(Deletion::Of(id)) if id == self.id => return true,
                Ok(Deletion::Of(_)) => {}
                Ok(Deletion::Recheck) | Err(TryRecvError::Lagged(_)) => self.recheck = true,
                Err(TryRecvError::Empty | TryRecvError::Closed) => return false,
            }
        }
    }
}

/// Waits until the listener says something about `watched` (never, for a
/// stream of no subscription): true when it was deleted, false when it must
/// be checked in the database.
async fn deletion(watched: &mut Option<Watched>) -> bool {
    let Some(watched) = watched else {
        return std::future::pending().await;
    };
    loop {
        match watched.deletions.recv().await {
            Ok(Deletion::Of(id)) if id == watched.id => return true,
            Ok(Deletion::Of(_)) => {}
            Ok(Deletion::Recheck) | Err(RecvError::Lagged(_)) => {
                watched.recheck = true;
                return false;
            }
            Err(RecvError::Closed) => return std::future::pending().await,
        }
    }
}

/// How many failed (unreachable or timed-out) database reads in a row a
/// stream rides out (with backoff, about half a minute) before it ends with
/// UNAVAILABLE and its cursor.
const MAX_READ_FAILURES: u32 = 10;

/// Why a stream stops sending.
enum Stop {
    /// The client left: nothing more to send.
    ClientGone,
    /// End the stream with this error.
    End(WatchError),
}

/// Runs one stream; it ends at `expires`, when its token does.
pub(super) async fn run(
    shared: Arc<Shared>,
    filter: EventFilter,
    start: Start,
    expires: Option<Instant>,
    outlet: Outlet,
    watched: Option<Watched>,
) {
    let Outlet { messages, end } = outlet;
    let mut stream = Stream {
        shared: shared.clone(),
        filter,
        tx: messages,
        position: StreamPosition::at(EventPosition { txid: 0, id: 0 }),
        last_sent: Instant::now(),
        expires,
        watched,
    };
    let result = match start {
        Start::At(position) => {
            stream.position = position;
            stream.follow().await
        }
        Start::Snapshot(taken) => match stream.snapshot(taken).await {
            Ok(()) => stream.follow().await,
            Err(stop) => Err(stop),
        },
    };
    if let Err(Stop::End(status)) = result {
        // Delivered after every buffered message, however full the buffer.
        let _ = end.send(status);
    }
}

struct Stream {
    shared: Arc<Shared>,
    filter: EventFilter,
    tx: mpsc::Sender<Encoded>,
    /// Every event up to here has been handed to the client's buffer or
    /// filtered out (or is shown by the snapshot the stream started from).
    position: StreamPosition,
    last_sent: Instant,
    /// When the caller's token expires.
    expires: Option<Instant>,
    /// The durable subscription the stream is of, if any.
    watched: Option<Watched>,
}

/// Resolves at `at`, or never.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Stream {
    /// Sends one message, unless the client leaves or the server shuts
    /// down meanwhile.
    async fn send(&mut self, kind: Kind) -> Result<(), Stop> {
        self.send_encoded(Encoded::of(&pb::WatchStateChangesResponse {
            kind: Some(kind),
        }))
        .await
    }

    /// Sends one encoded message (see [`Self::send`]).
    async fn send_encoded(&mut self, message: Encoded) -> Result<(), Stop> {
        // A buffer with room takes it at once; only a full one is waited
        // for, and not past shutdown or the token's expiry.
        match self.tx.try_reserve() {
            Ok(permit) => {
                permit.send(message);
                self.last_sent = Instant::now();
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Closed(())) => return Err(Stop::ClientGone),
            Err(mpsc::error::TrySendError::Full(())) => {}
        }
        let mut shutdown = self.shared.shutdown.clone();
        tokio::select! {
            sent = self.tx.send(message) => {
                sent.map_err(|_| Stop::ClientGone)?;
                self.last_sent = Instant::now();
                Ok(())
            }
            _ = shut_down(&mut shutdown) => Err(Stop::End(self.interrupted(Interruption::ShuttingDown))),
            _ = until(self.expires) => Err(Stop::End(self.expired())),
        }
    }

    /// Sends the matching cases as of one snapshot, then the marker.
    async fn snapshot(&mut self, taken: Option<Box<Snapshot>>) -> Result<(), Stop> {
        let settings = &self.shared.settings;
        let tx = self.tx.clone();
        let timeout = settings.snapshot_send_timeout;
        let cut_short = Arc::new(AtomicBool::new(false));
        let snapshot = match taken {
            Some(snapshot) => Ok(*snapshot),
            None => self.shared.store.begin_snapshot().await,
        };
        let page = settings.snapshot_page;
        let filter = &self.filter;
        let result = match snapshot {
            Err(e) => Err(e),
            Ok(snapshot) => {
                snapshot
                    .read_cases(filter, page, |cases| {
                        let tx = tx.clone();
                        let cut_short = cut_short.clone();
                        async move {
                            for case in cases {
                                let message = Encoded::of(&pb::WatchStateChangesResponse {
                                    kind: Some(Kind::SnapshotCase(convert::invoice_case(case))),
                                });
                                match tokio::time::timeout(timeout, tx.send(message)).await {
                                    Ok(Ok(())) => {}
                                    _ => {
                                        cut_short.store(true, Ordering::Relaxed);
                                        return false;
                                    }
                                }
                            }
                            true
                        }
                    })
                    .await
            }
        };
        if self.tx.is_closed() {
            return Err(Stop::ClientGone);
        }
        if cut_short.load(Ordering::Relaxed) {
            // The snapshot holds a database connection and an old snapshot:
            // a client that does not read it is not waited for.
            return Err(Stop::End(WatchError::SnapshotNotRead));
        }
        match result {
            Ok(position) => {
                self.position = position;
                let cursor = cursor::encode(&self.position);
                self.send(Kind::SnapshotComplete(pb::SnapshotComplete { cursor }))
                    .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "watch snapshot failed");
                Err(Stop::End(WatchError::SnapshotFailed))
            }
        }
    }

    /// Catches up from the database, then follows the ring; goes back to the
    /// database whenever the ring has moved on without it.
    async fn follow(&mut self) -> Result<(), Stop> {
        // Futures that outlive each event (a stream waits for thousands of
        // them): made once, not once per event.
        let interval = self.shared.settings.progress_interval;
        let mut shutdown = self.shared.shutdown.clone();
        let shut = shut_down(&mut shutdown);
        tokio::pin!(shut);
        let client = self.tx.clone();
        let left = client.closed();
        tokio::pin!(left);
        let progress = tokio::time::sleep_until(self.last_sent + interval);
        tokio::pin!(progress);
        let expiry = until(self.expires);
        tokio::pin!(expiry);
        loop {
            // Subscribe before reading: what the reader publishes from now on
            // is in the ring, what it published before is in the database.
            let mut ring = self.shared.ring.subscribe();
            // The reader reads only while someone listens: wake it.
            self.shared.wake.notify_one();
            self.catch_up().await?;
            self.check_subscription().await?;
            loop {
                tokio::select! {
                    item = ring.recv() => match item {
                        Ok(item) => self.publish(&item).await?,
                        Err(RecvError::Lagged(missed)) => {
                            tracing::debug!(missed, "watch stream fell behind; catching up from the database");
                            break;
                        }
                        Err(RecvError::Closed) => {
                            return Err(Stop::End(self.interrupted(Interruption::ShuttingDown)));
                        }
                    },
                    // The timer is not moved by every message: when it
                    // fires, it sends progress only if the stream has been
                    // idle that long, else waits for the rest.
                    deleted = deletion(&mut self.watched) => {
                        if deleted {
                            return Err(Stop::End(self.subscription_deleted()));
                        }
                        self.check_subscription().await?;
                    }
                    _ = &mut progress => {
                        // A check that failed is tried again here.
                        self.check_subscription().await?;
                        let due = self.last_sent + interval;
                        if Instant::now() >= due {
                            let cursor = cursor::encode(&self.position);
                            self.send(Kind::Progress(pb::Progress { cursor })).await?;
                            progress.as_mut().reset(self.last_sent + interval);
                        } else {
                            progress.as_mut().reset(due);
                        }
                    }
                    _ = &mut shut => {
                        return Err(Stop::End(self.interrupted(Interruption::ShuttingDown)));
                    }
                    _ = &mut left => return Err(Stop::ClientGone),
                    _ = &mut expiry => return Err(Stop::End(self.expired())),
                }
            }
        }
    }

    async fn publish(&mut self, item: &Published) -> Result<(), Stop> {
        match item {
            Published::Event {
                position,
                case_id,
                account_id,
                message,
                encoded,
            } => {
                if !self.position.wants(*position) {
                    self.position.advance(*position);
                    return Ok(());
                }
                if self.filter.matches(*case_id, account_id) {
                    let mut after = self.position.clone();
                    after.advance(*position);
                    if after.shown.is_some() {
                        // Still inside the snapshot the stream started
                        // from: the cursor must say what it showed.
                        let mut message = message.clone();
                        message.cursor = cursor::encode(&after);
                        self.send(Kind::Event(message)).await?;
                    } else {
                        self.send_encoded(encoded.clone()).await?;
                    }
                }
                // Only once it is in the client's buffer: a cursor never
                // names an event the client will not receive.
                self.position.advance(*position);
            }
            Published::Horizon(horizon) => {
                self.position.advance(*horizon);
            }
        }
        Ok(())
    }

    /// Reads and sends every matching event after the position, up to the
    /// horizon.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        let batch = self.shared.settings.read_batch;
        let mut failures = 0;
        let mut backoff = Backoff::default();
        loop {
            let page: LogPage = match self
                .shared
                .store
                .read_log(&self.position, &self.filter, batch)
                .await
            {
                Ok(page) => page,
                // An unreachable database, or a read that ran out of time
                // (a long lock, say), is worth waiting for; anything else
                // would fail again.
                Err(e)
                    if !matches!(e, StoreError::Unavailable(_) | StoreError::DeadlineExceeded) =>
                {
                    return Err(Stop::End(WatchError::Store(e)));
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "watch stream cannot read the log");
                    if failures >= MAX_READ_FAILURES {
                        return Err(Stop::End(
                            self.interrupted(Interruption::DatabaseUnavailable),
                        ));
                    }
                    let delay = backoff.next();
                    let mut shutdown = self.shared.shutdown.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shut_down(&mut shutdown) => {
                            return Err(Stop::End(self.interrupted(Interruption::ShuttingDown)));
                        }
                        _ = self.tx.closed() => return Err(Stop::ClientGone),
                    }
                    continue;
                }
            };
            if self.position.after < page.pruned_through {
                return Err(Stop::End(WatchError::CursorExpired {
                    oldest: cursor::encode_event(page.pruned_through),
                }));
            }
            if self.expires.is_some_and(|at| Instant::now() >= at) {
                return Err(Stop::End(self.expired()));
            }
            if self.watched.as_mut().is_some_and(Watched::deleted) {
                return Err(Stop::End(self.subscription_deleted()));
            }
            let more = page.more;
            for event in page.events {
                let mut after = self.position.clone();
                after.advance(event.position);
                let message = convert::event(event, cursor::encode(&after));
                self.send(Kind::Event(message)).await?;
                self.position = after;
            }
            if !more {
                self.position.advance(page.horizon);
                return Ok(());
            }
        }
    }

    /// Checks in the database that the stream's subscription still exists,
    /// when notifications of its deletion may have been missed; a check
    /// that fails is left for the next progress interval.
    async fn check_subscription(&mut self) -> Result<(), Stop> {
        let Some(watched) = self.watched.as_mut() else {
            return Ok(());
        };
        if watched.deleted() {
            return Err(Stop::End(self.subscription_deleted()));
        }
        if !watched.recheck {
            return Ok(());
        }
        match self.shared.store.subscription_exists(watched.id).await {
            Ok(true) => {
                watched.recheck = false;
                Ok(())
            }
            Ok(false) => Err(Stop::End(self.subscription_deleted())),
            Err(e) => {
                tracing::warn!(error = %e, "watch stream cannot check its subscription");
                Ok(())
            }
        }
    }

    /// The subscription was deleted: where the stream stood.
    fn subscription_deleted(&self) -> WatchError {
        WatchError::SubscriptionDeleted {
            name: self
                .watched
                .as_ref()
                .map(|w| w.name.clone())
                .unwrap_or_default(),
            cursor: cursor::encode(&self.position),
        }
    }

    /// The token expired: resume from the position with a fresh one.
    fn expired(&self) -> WatchError {
        WatchError::TokenExpired {
            cursor: cursor::encode(&self.position),
        }
    }

    /// Interrupted: resume from the position.
    fn interrupted(&self, reason: Interruption) -> WatchError {
        WatchError::Interrupted {
            reason,
            cursor: cursor::encode(&self.position),
        }
    }
}
