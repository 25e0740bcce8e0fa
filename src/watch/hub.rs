//! The per-process hub: the one log reader, its wake-up listener, the
//! broadcast ring, and starting subscriptions.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures::StreamExt;
use tokio::{
    sync::{Notify, broadcast, watch},
    task::JoinHandle,
};
use tonic::Status;
use uuid::Uuid;

use super::{WatchSettings, WatchStream, cursor, response, subscriber};
use crate::{
    api::{event_message, status},
    auth::Caller,
    domain::values::{MAX_IDENTIFIER, identifier},
    pb::{self, watch_state_changes_request::Start},
    store::{EventFilter, EventPosition, Store},
};

/// The notification channel the `case_events` trigger notifies.
const CHANNEL: &str = "invoice_case_events";

/// What the reader publishes, in stream order.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // published behind an Arc: never moved by value
pub(super) enum Published {
    /// A committed event, converted once for every subscriber.
    Event {
        position: EventPosition,
        case_id: Uuid,
        account_id: String,
        message: pb::StateChangeEvent,
    },
    /// Every event before this position has been published.
    Horizon(EventPosition),
}

pub(super) struct Shared {
    pub store: Store,
    pub settings: WatchSettings,
    pub ring: broadcast::Sender<Arc<Published>>,
    pub shutdown: watch::Receiver<bool>,
    pub streams: AtomicUsize,
}

/// Hands committed events to this process's subscribers.
#[derive(Clone)]
pub struct WatchHub {
    shared: Arc<Shared>,
    shutdown: Arc<watch::Sender<bool>>,
}

impl WatchHub {
    /// Starts the reader and its listener; returns the hub and their tasks.
    pub fn start(
        store: Store,
        database_url: String,
        settings: WatchSettings,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let (ring, _) = broadcast::channel(settings.ring_capacity.max(16));
        let (shutdown_tx, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            store,
            settings,
            ring,
            shutdown,
            streams: AtomicUsize::new(0),
        });
        let wake = Arc::new(Notify::new());
        let tasks = vec![
            tokio::spawn(read_log(shared.clone(), wake.clone())),
            tokio::spawn(listen(database_url, wake)),
        ];
        (
            WatchHub {
                shared,
                shutdown: Arc::new(shutdown_tx),
            },
            tasks,
        )
    }

    /// Ends every stream with UNAVAILABLE and the cursor to resume from.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Streams open in this process.
    pub fn active_streams(&self) -> usize {
        self.shared.streams.load(Ordering::Relaxed)
    }

    /// Checks a watch request and starts its stream.
    pub async fn subscribe(
        &self,
        caller: Caller,
        request: pb::WatchStateChangesRequest,
    ) -> Result<WatchStream, Status> {
        let store = &self.shared.store;
        let mut filter = EventFilter {
            case_id: None,
            account_id: None,
            accounts: caller.access.accounts.clone(),
        };
        if !request.case_id.is_empty() {
            let key = crate::api::case_key(&request.case_id)
                .map_err(|e| status::invalid_field("case_id", e))?;
            let (id, _) = store
                .find_case(&key, &caller.access)
                .await
                .map_err(|e| status::store(e, &request.case_id))?;
            filter.case_id = Some(id);
        }
        if !request.account_id.is_empty() {
            let account = identifier(&request.account_id, MAX_IDENTIFIER)
                .map_err(|e| status::invalid_field("account_id", e))?;
            filter.account_id = Some(account);
        }
        let db_error = |e| status::store(e, &request.case_id);
        let start = match request.start {
            None | Some(Start::FromBeginning(false) | Start::WithSnapshot(false)) => {
                subscriber::Start::At(store.log_now().await.map_err(db_error)?)
            }
            Some(Start::AfterCursor(text)) => {
                let position =
                    cursor::decode(&text).map_err(|e| status::invalid_field("after_cursor", e))?;
                let bounds = store.log_bounds().await.map_err(db_error)?;
                // Cursors between the horizon and the end are fine (a
                // snapshot's marker, an event whose older neighbours are
                // still in flight): the stream waits for the horizon.
                if position > bounds.next {
                    return Err(status::invalid_field(
                        "after_cursor",
                        "is ahead of the event log: not a cursor of this service's database",
                    ));
                }
                if position < bounds.pruned_through {
                    return Err(subscriber::cursor_expired(bounds.pruned_through));
                }
                subscriber::Start::At(position)
            }
            Some(Start::FromBeginning(true)) => {
                let bounds = store.log_bounds().await.map_err(db_error)?;
                subscriber::Start::At(bounds.pruned_through)
            }
            Some(Start::WithSnapshot(true)) => subscriber::Start::Snapshot,
        };
        let settings = &self.shared.settings;
        let open = self.shared.streams.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("invoice_cases_watch_streams").increment(1.0);
        let guard = StreamGuard(self.shared.clone());
        if open >= settings.max_streams {
            drop(guard);
            return Err(Status::resource_exhausted(
                "too many watch streams on this server; retry later or on another replica",
            ));
        }
        let (outlet, stream) = response::channel(settings.subscriber_buffer);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let _guard = guard;
            subscriber::run(shared, filter, start, outlet).await;
        });
        Ok(Box::pin(stream))
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
async fn read_log(shared: Arc<Shared>, wake: Arc<Notify>) {
    let settings = &shared.settings;
    let mut shutdown = shared.shutdown.clone();
    let mut backoff = Backoff::default();
    let mut position = loop {
        match shared.store.log_bounds().await {
            Ok(bounds) => break bounds.horizon,
            Err(e) => {
                tracing::warn!(error = %e, "watch reader cannot read the log horizon");
                tokio::time::sleep(backoff.next()).await;
            }
        }
    };
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(settings.poll_interval) => {}
            _ = shut_down(&mut shutdown) => return,
        }
        loop {
            let page = match shared
                .store
                .read_log(position, &EventFilter::default(), settings.read_batch)
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
                let published = Published::Event {
                    position,
                    case_id: event.case_id,
                    account_id: event.account_id.clone(),
                    message: event_message(event, cursor::encode(position)),
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

/// Wakes the reader on every notification, on a connection of its own that
/// reconnects by itself (and wakes the reader to catch up when it does).
async fn listen(database_url: String, wake: Arc<Notify>) {
    let mut backoff = Backoff::default();
    loop {
        match AsyncPgConnection::establish(&database_url).await {
            Ok(mut conn) => {
                let listen = diesel::sql_query(format!("LISTEN {CHANNEL}"));
                match diesel_async::RunQueryDsl::execute(listen, &mut conn).await {
                    Ok(_) => {
                        backoff = Backoff::default();
                        wake.notify_one();
                        let mut notifications = std::pin::pin!(conn.notifications_stream());
                        while let Some(notification) = notifications.next().await {
                            match notification {
                                Ok(_) => wake.notify_one(),
                                Err(e) => {
                                    tracing::warn!(error = %e, "watch listener lost its connection");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "watch listener cannot LISTEN"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "watch listener cannot connect"),
        }
        tokio::time::sleep(backoff.next()).await;
    }
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
