//! Reading watch streams in tests.

use std::time::Duration;

use invoice_cases::pb::{
    self, StateChangeEvent, WatchStateChangesRequest, watch_state_changes_request::Start,
    watch_state_changes_response::Kind,
};
use tonic::{Status, Streaming};

use crate::helpers::Client;

/// A watch request.
pub fn watch(case_id: &str, account_id: &str, start: Option<Start>) -> WatchStateChangesRequest {
    WatchStateChangesRequest {
        case_id: case_id.to_owned(),
        account_id: account_id.to_owned(),
        start,
        subscription: String::new(),
    }
}

/// Opens a stream.
pub async fn open(
    client: &mut Client,
    request: WatchStateChangesRequest,
) -> Streaming<pb::WatchStateChangesResponse> {
    client
        .watch_state_changes(request)
        .await
        .expect("open a watch stream")
        .into_inner()
}

/// What a stream said, in order.
#[derive(Debug, Default)]
pub struct Received {
    pub events: Vec<StateChangeEvent>,
    pub snapshot: Vec<pb::InvoiceCase>,
    pub snapshot_cursor: Option<String>,
    pub progress: Vec<String>,
    /// The status the stream ended with, if it ended.
    pub end: Option<Status>,
}

/// Reads until `done` says so, or fails the test after `limit`.
pub async fn read_until(
    stream: &mut Streaming<pb::WatchStateChangesResponse>,
    received: &mut Received,
    limit: Duration,
    mut done: impl FnMut(&Received) -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done(received) {
        let next = tokio::time::timeout_at(deadline, stream.message()).await;
        match next {
            Err(_) => panic!(
                "the stream did not deliver in {limit:?}: {} events, {} snapshot cases so far",
                received.events.len(),
                received.snapshot.len()
            ),
            Ok(Ok(Some(message))) => match message.kind {
                Some(Kind::Event(event)) => received.events.push(event),
                Some(Kind::Progress(progress)) => received.progress.push(progress.cursor),
                Some(Kind::SnapshotCase(case)) => received.snapshot.push(case),
                Some(Kind::SnapshotComplete(marker)) => {
                    received.snapshot_cursor = Some(marker.cursor)
                }
                None => panic!("an empty watch message"),
            },
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => {
                received.end = Some(status);
                if !done(received) {
                    panic!(
                        "the stream ended with {:?} after {} events",
                        received.end,
                        received.events.len()
                    );
                }
                return;
            }
        }
    }
}

/// Reads `n` events.
pub async fn read_events(
    stream: &mut Streaming<pb::WatchStateChangesResponse>,
    n: usize,
) -> Vec<StateChangeEvent> {
    let mut received = Received::default();
    read_until(stream, &mut received, Duration::from_secs(30), |r| {
        r.events.len() >= n
    })
    .await;
    received.events
}

/// Reads until `progress` messages came, and returns the events seen.
pub async fn read_until_progress(
    stream: &mut Streaming<pb::WatchStateChangesResponse>,
    progress: usize,
) -> Received {
    let mut received = Received::default();
    read_until(stream, &mut received, Duration::from_secs(30), |r| {
        r.progress.len() >= progress
    })
    .await;
    received
}

/// A short key naming an event (case id and etag, unique per event).
pub fn key(event: &StateChangeEvent) -> (String, String) {
    (event.case_id.clone(), event.etag.clone())
}
