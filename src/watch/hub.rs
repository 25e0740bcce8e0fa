//! The per-process hub: the one log reader, its wake-up listener, the
//! broadcast ring, and starting subscriptions.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::SystemTime,
};

use diesel_async::AsyncPgConnection;
use futures::StreamExt;
use tokio::{
    sync::{Notify, broadcast, watch},
    task::JoinHandle,
};

use super::{
    WatchError, WatchEvents, WatchSettings, WatchSpec, WatchStart, cursor,
    encoded::Encoded,
    response,
    shared::{Backoff, Deletion, Published, Shared, shut_down},
    subscriber,
};
use crate::{
    convert,
    pb::{self, watch_state_changes_response::Kind},
    store::{Access, EventFilter, EventPosition, SUBSCRIPTIONS_CHANNEL, Store, StreamPosition},
};
use uuid::Uuid;

/// The notification channel the `case_events` trigger notifies.
const CHANNEL: &str = "invoice_case_events";

/// Deletions of subscriptions a stream may fall behind by before it checks
/// its subscription in the database instead.
const DELETIONS_BUFFER: usize = 64;

/// Hands committed events to this process's subscribers.
#[derive(Clone)]
pub struct WatchHub {
    shared: Arc<Shared>,
    shutdown: Arc<watch::Sender<bool>>,
}

impl WatchHub {
    /// Starts the reader and its listener; returns the hub and their tasks.
    ///
    /// The reader's first position, the log's horizon, is read before any
    /// stream can subscribe: a stream's own catch-up then always reads a
    /// horizon at least as new, so every event is either read by the
    /// stream or published by the reader after the stream subscribed.
    pub async fn start(
        store: Store,
        database_url: String,
        settings: WatchSettings,
    ) -> Result<(Self, Vec<JoinHandle<()>>), crate::store::StoreError> {
        let start = store.log_bounds().await?.horizon;
        let (ring, _) = broadcast::channel(settings.ring_capacity.max(16));
        let (shutdown_tx, shutdown) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            store,
            wake: wake.clone(),
            settings,
            ring,
            shutdown,
            streams: AtomicUsize::new(0),
            deletions: broadcast::channel(DELETIONS_BUFFER).0,
        });
        let tasks = vec![
            tokio::spawn(read_log(shared.clone(), wake.clone(), start)),
            tokio::spawn(listen(shared.clone(), database_url, wake)),
        ];
        Ok((
            WatchHub {
                shared,
                shutdown: Arc::new(shutdown_tx),
            },
            tasks,
        ))
    }

    /// Ends every stream with UNAVAILABLE and the cursor to resume from.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Streams open in this process.
    pub fn active_streams(&self) -> usize {
        self.shared.streams.load(Ordering::Relaxed)
    }

    /// Starts the stream `spec` asks for, for a caller with `access` whose
    /// token is valid until `valid_until` (the stream ends then).
    pub async fn subscribe(
        &self,
        access: &Access,
        valid_until: SystemTime,
        spec: WatchSpec,
    ) -> Result<WatchEvents, WatchError> {
        let slot = self.reserve()?;
        let prepared = self.prepare(slot, access, spec).await?;
        Ok(self.open(prepared, valid_until, None))
    }

    /// Counts a stream about to open, before it does any database work (a
    /// refusal costs nothing, and the count includes streams still
    /// opening); from here on it also hears of deleted subscriptions.
    pub fn reserve(&self) -> Result<StreamSlot, WatchError> {
        let open = self.shared.streams.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("invoice_cases_watch_streams").increment(1.0);
        let guard = StreamGuard(self.shared.clone());
        if open >= self.shared.settings.max_streams {
            drop(guard);
            return Err(WatchError::TooManyStreams);
        }
        Ok(StreamSlot {
            guard,
            deletions: self.shared.deletions.subscribe(),
        })
    }

    /// Resolves what `spec` asks for: the case it names (visible to
    /// `access`) and where it starts. A snapshot start is only taken when
    /// the stream runs, unless [`WatchHub::fix_start`] takes it first.
    pub async fn prepare(
        &self,
        slot: StreamSlot,
        access: &Access,
        spec: WatchSpec,
    ) -> Result<Prepared, WatchError> {
        let store = &self.shared.store;
        let mut filter = EventFilter {
            case_id: None,
            account_id: spec.account_id,
            accounts: access.accounts.clone(),
        };
        if let Some(key) = &spec.case {
            let (id, _) = store
                .find_case(key, access, None)
                .await
                .map_err(WatchError::Store)?;
            filter.case_id = Some(id);
        }
        let start = match spec.start {
            WatchStart::Now => {
                subscriber::Start::At(store.stream_now().await.map_err(WatchError::Store)?)
            }
            WatchStart::AfterCursor(text) => {
                let position = cursor::decode(&text).map_err(WatchError::InvalidCursor)?;
                let bounds = store.log_bounds().await.map_err(WatchError::Store)?;
                // Cursors between the horizon and the end are fine (a
                // snapshot's marker, an event whose older neighbours are
                // still in flight): the stream waits for the horizon.
                let ahead = |p: EventPosition| p > bounds.next;
                if ahead(position.after)
                    || position
                        .shown
                        .as_ref()
                        .is_some_and(|shown| shown.xmax > bounds.next.txid)
                {
                    return Err(WatchError::InvalidCursor(
                        "is ahead of the event log: not a cursor of this service's database".into(),
                    ));
                }
                if position.after < bounds.pruned_through {
                    return Err(WatchError::CursorExpired {
                        oldest: cursor::encode_event(bounds.pruned_through),
                    });
                }
                subscriber::Start::At(position)
            }
            WatchStart::FromBeginning => {
                let bounds = store.log_bounds().await.map_err(WatchError::Store)?;
                subscriber::Start::At(StreamPosition::at(bounds.pruned_through))
            }
            WatchStart::WithSnapshot => subscriber::Start::Snapshot(None),
        };
        Ok(Prepared {
            slot,
            filter,
            start,
        })
    }

    /// A stream of a durable subscription's events from `position`, with
    /// the subscription's filters and the caller's `access`.
    pub fn prepare_resume(
        &self,
        slot: StreamSlot,
        access: &Access,
        case_id: Option<Uuid>,
        account_id: Option<String>,
        position: StreamPosition,
    ) -> Prepared {
        Prepared {
            slot,
            filter: EventFilter {
                case_id,
                account_id,
                accounts: access.accounts.clone(),
            },
            start: subscriber::Start::At(position),
        }
    }

    /// Where `prepared` starts: a snapshot start takes its snapshot now (the
    /// stream then reads its cases), so that its position is known before
    /// the stream runs.
    pub async fn fix_start(&self, prepared: &mut Prepared) -> Result<StreamPosition, WatchError> {
        if let subscriber::Start::Snapshot(None) = &prepared.start {
            let snapshot = self.shared.store.begin_snapshot().await.map_err(|e| {
                tracing::warn!(error = %e, "watch snapshot failed");
                WatchError::SnapshotFailed
            })?;
            prepared.start = subscriber::Start::Snapshot(Some(Box::new(snapshot)));
        }
        match &prepared.start {
            subscriber::Start::At(position) => Ok(position.clone()),
            subscriber::Start::Snapshot(Some(snapshot)) => Ok(snapshot.position().clone()),
            subscriber::Start::Snapshot(None) => Err(WatchError::SnapshotFailed),
        }
    }

    /// Makes `prepared` start at `position` instead (giving up a snapshot
    /// it took).
    pub async fn restart_at(&self, prepared: &mut Prepared, position: StreamPosition) {
        let earlier = std::mem::replace(&mut prepared.start, subscriber::Start::At(position));
        if let subscriber::Start::Snapshot(Some(snapshot)) = earlier {
            snapshot.abandon().await;
        }
    }

    /// Gives up a prepared stream (and a snapshot it took).
    pub async fn discard(&self, prepared: Prepared) {
        if let subscriber::Start::Snapshot(Some(snapshot)) = prepared.start {
            snapshot.abandon().await;
        }
    }

    /// Runs the stream `prepared` is, for a caller whose token is valid
    /// until `valid_until` (the stream ends then); the stream of the
    /// durable subscription `subscription` (its id and name) ends when the
    /// subscription is deleted.
    pub fn open(
        &self,
        prepared: Prepared,
        valid_until: SystemTime,
        subscription: Option<(Uuid, String)>,
    ) -> WatchEvents {
        let Prepared {
            slot,
            filter,
            start,
        } = prepared;
        let StreamSlot { guard, deletions } = slot;
        let settings = &self.shared.settings;
        let (outlet, stream) = response::channel(settings.subscriber_buffer);
        let shared = self.shared.clone();
        let expires = expiry(valid_until);
        let watched = subscription.map(|(id, name)| subscriber::Watched::new(id, name, deletions));
        tokio::spawn(async move {
            let _guard = guard;
            subscriber::run(shared, filter, start, expires, outlet, watched).await;
        });
        Box::pin(stream)
    }
}

/// A stream counted, not yet started (see [`WatchHub::reserve`]).
pub struct StreamSlot {
    guard: StreamGuard,
    deletions: broadcast::Receiver<Deletion>,
}

/// A stream whose filter and start are resolved (see
/// [`WatchHub::prepare`]).
pub struct Prepared {
    slot: StreamSlot,
    filter: EventFilter,
    start: subscriber::Start,
}

impl Prepared {
    /// The case the stream is limited to, if any.
    pub fn case_id(&self) -> Option<Uuid> {
        self.filter.case_id
    }

    /// The account the stream is limited to, if any (besides the caller's
    /// access).
    pub fn account_id(&self) -> Option<&str> {
        self.filter.account_id.as_deref()
    }
}

/// Counts a stream while it runs.
struct StreamGuard(Arc<Shared>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("invoice_cases_watch_streams").decrement(1.0);
    }
}

/// The one reader: reads every new event once, in stream order, and
/// publishes it with the horizon it was read below.
///
/// It reads when woken — by an action of this process, by another
/// replica's notification — and at least every poll interval. While no
/// stream listens it reads nothing but, once per poll interval, the
/// horizon, and moves there: a stream that starts later catches up from
/// the database by its own position, which is never behind the horizon the
/// reader moved to before the stream subscribed.
async fn read_log(shared: Arc<Shared>, wake: Arc<Notify>, start: EventPosition) {
    let settings = &shared.settings;
    let mut shutdown = shared.shutdown.clone();
    let mut backoff = Backoff::default();
    let mut position = start;
    let mut next_poll = tokio::time::Instant::now() + settings.poll_interval;
    loop {
        // Commits of this process matter only while a stream listens (a
        // stream that subscribes wakes the reader).
        let listening = shared.ring.receiver_count() > 0;
        let polled = tokio::select! {
            _ = wake.notified() => false,
            _ = shared.store.next_commit(), if listening => false,
            _ = tokio::time::sleep_until(next_poll) => true,
            _ = shut_down(&mut shutdown) => return,
        };
        if polled {
            next_poll = tokio::time::Instant::now() + settings.poll_interval;
        }
        if shared.ring.receiver_count() == 0 {
            if polled {
                match shared.store.log_bounds().await {
                    // Checked after the read: a stream that subscribes from
                    // here on reads a horizon at least as new.
                    Ok(bounds) if shared.ring.receiver_count() == 0 => {
                        position = position.max(bounds.horizon);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "watch reader cannot read the log horizon")
                    }
                }
            }
            continue;
        }
        loop {
            let page = match shared
                .store
                .read_log(
                    &StreamPosition::at(position),
                    &EventFilter::default(),
                    settings.read_batch,
                )
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "watch reader cannot read the log");
                    tokio::time::sleep(backoff.next()).await;
                    break;
                }
            };
            backoff = Backoff::default();
            let more = page.more;
            for event in page.events {
                position = event.position;
                let lag = (chrono::Utc::now() - event.occur_time)
                    .to_std()
                    .unwrap_or_default();
                metrics::histogram!("invoice_cases_event_delivery_lag_seconds")
                    .record(lag.as_secs_f64());
                let message = convert::event(event.clone(), cursor::encode_event(position));
                let encoded = Encoded::of(&pb::WatchStateChangesResponse {
                    kind: Some(Kind::Event(message.clone())),
                });
                let published = Published::Event {
                    position,
                    case_id: event.case_id,
                    account_id: event.account_id,
                    message,
                    encoded,
                };
                // No receivers is fine: nobody watches.
                let _ = shared.ring.send(Arc::new(published));
            }
            if !more {
                if page.horizon > position {
                    position = page.horizon;
                    let _ = shared.ring.send(Arc::new(Published::Horizon(position)));
                }
                break;
            }
        }
    }
}

/// The advisory lock a replica's listener holds, shared, while the
/// replica has watch streams: writers of other replicas then notify it.
const PRESENCE_LOCK: (i64, i64) = (470_441_474, 0);

/// Wakes the reader on every notification, on a connection of its own that
/// reconnects by itself (and wakes the reader to catch up when it does).
///
/// The same connection announces this replica's streams to the other
/// replicas (an advisory lock held while it has any), and learns whether
/// other replicas have streams — then this replica's actions notify them.
async fn listen(shared: Arc<Shared>, database_url: String, wake: Arc<Notify>) {
    let mut backoff = Backoff::default();
    let mut shutdown = shared.shutdown.clone();
    loop {
        match crate::store::connect(&database_url).await {
            Ok(mut conn) => {
                let listen = format!("LISTEN {CHANNEL}; LISTEN {SUBSCRIPTIONS_CHANNEL}");
                match diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, &listen).await {
                    Ok(()) => {
                        backoff = Backoff::default();
                        wake.notify_one();
                        // Deletions while it did not listen went unheard.
                        let _ = shared.deletions.send(Deletion::Recheck);
                        let mut present = false;
                        loop {
                            let lost = {
                                let mut notifications = std::pin::pin!(conn.notifications_stream());
                                let tick = tokio::time::sleep(shared.settings.poll_interval);
                                tokio::pin!(tick);
                                loop {
                                    tokio::select! {
                                        notification = notifications.next() => match notification {
                                            Some(Ok(n)) if n.channel == SUBSCRIPTIONS_CHANNEL => {
                                                if let Ok(id) = Uuid::parse_str(&n.payload) {
                                                    let _ = shared.deletions.send(Deletion::Of(id));
                                                }
                                            }
                                            Some(Ok(_)) => wake.notify_one(),
                                            Some(Err(e)) => {
                                                tracing::warn!(error = %e, "watch listener lost its connection");
                                                break true;
                                            }
                                            None => break true,
                                        },
                                        _ = &mut tick => break false,
                                        _ = shut_down(&mut shutdown) => return,
                                    }
                                }
                            };
                            if lost {
                                break;
                            }
                            match presence(&mut conn, &shared, &mut present).await {
                                Ok(others) => shared.store.set_notify_replicas(others),
                                Err(e) => {
                                    tracing::warn!(error = %e, "watch listener lost its connection");
                                    break;
                                }
                            }
                        }
                        // Unknown until the listener is back: notify.
                        shared.store.set_notify_replicas(true);
                    }
                    Err(e) => tracing::warn!(error = %e, "watch listener cannot LISTEN"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "watch listener cannot connect"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next()) => {}
            _ = shut_down(&mut shutdown) => return,
        }
    }
}

/// Announces (or withdraws) this replica's streams, and tells whether
/// another replica has streams.
async fn presence(
    conn: &mut AsyncPgConnection,
    shared: &Shared,
    present: &mut bool,
) -> Result<bool, diesel::result::Error> {
    use diesel::sql_types::{BigInt, Bool};
    use diesel_async::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Others {
        #[diesel(sql_type = Bool)]
        others: bool,
    }

    let (class, object) = PRESENCE_LOCK;
    let wanted = AtomicUsize::load(&shared.streams, Ordering::Relaxed) > 0;
    if wanted != *present {
        let call = if wanted {
            "SELECT pg_advisory_lock_shared($1::int, $2::int)"
        } else {
            "SELECT pg_advisory_unlock_shared($1::int, $2::int)"
        };
        diesel::sql_query(call)
            .bind::<BigInt, _>(class)
            .bind::<BigInt, _>(object)
            .execute(conn)
            .await?;
        *present = wanted;
    }
    let others: Others = diesel::sql_query(
        "SELECT count(*) > $3 AS others FROM pg_locks \
         WHERE locktype = 'advisory' AND granted \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 2",
    )
    .bind::<BigInt, _>(class)
    .bind::<BigInt, _>(object)
    .bind::<BigInt, _>(i64::from(*present))
    .get_result(conn)
    .await?;
    Ok(others.others)
}

/// The instant a token valid until `valid_until` expires, if the clock can
/// hold it.
fn expiry(valid_until: SystemTime) -> Option<tokio::time::Instant> {
    let left = valid_until
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::Instant::now().checked_add(left)
}
