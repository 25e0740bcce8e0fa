//! Watch streams against what a client can do to them: a stream ends when
//! its token expires, and opening one neither waits for writers nor does
//! database work before the stream limit refuses it.

use std::{collections::HashMap, time::Duration};

use invoice_cases::{
    auth::{KeySet, KeySettings, mint_token},
    pb::{
        self,
        watch_state_changes_request::{FromBeginning, Start, WithSnapshot},
        watch_state_changes_response::Kind,
    },
};
use tokio::time::Instant;
use tonic::{Code, Status, Streaming};
use tonic_types::StatusExt;

use crate::{
    helpers::{
        TestApp, authorized, cluster, count_rows, create, lock_table, settings, spawn_app,
        spawn_app_with, submit,
    },
    limits::RowLock,
};

type Stream = Streaming<pb::WatchStateChangesResponse>;

fn watch(case_id: &str, start: Option<Start>) -> pb::WatchStateChangesRequest {
    pb::WatchStateChangesRequest {
        case_id: case_id.to_owned(),
        account_id: String::new(),
        start,
        subscription: String::new(),
    }
}

/// The next message or end of `stream`, within `limit`.
async fn next(
    stream: &mut Stream,
    limit: Duration,
) -> Result<Option<pb::WatchStateChangesResponse>, Status> {
    tokio::time::timeout(limit, stream.message())
        .await
        .unwrap_or_else(|_| panic!("nothing on the stream within {limit:?}"))
}

/// The reason and metadata of a status's ErrorInfo.
fn error_info(status: &Status) -> (String, HashMap<String, String>) {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    (info.reason, info.metadata)
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires_with_the_cursor_to_resume_from() {
    let database_url = cluster().new_database();
    let secret = format!("expiry-secret-{}", uuid::Uuid::new_v4().simple());
    let mut settings = settings(&database_url, &secret);
    settings.keys = KeySet::hs256(
        secret.as_bytes(),
        KeySettings {
            leeway_seconds: 0,
            ..KeySettings::default()
        },
    );
    let app = spawn_app_with(settings, secret.clone()).await;
    let mut admin = app.admin().await;
    let short =
        mint_token(&secret, "viewer", &["viewer".into()], None, 3, None, None).expect("a token");
    let opened = Instant::now();
    let mut viewer = app.client_with(Some(&short)).await;
    let mut stream = viewer
        .watch_state_changes(watch("", None))
        .await
        .expect("a watch with a valid token")
        .into_inner();
    let first = create(&mut admin, "ACME", 1).await;

    // Events flow while the token is valid; then the stream ends.
    let mut events = Vec::new();
    let end = loop {
        match next(&mut stream, Duration::from_secs(10)).await {
            Ok(Some(message)) => {
                if let Some(Kind::Event(event)) = message.kind {
                    events.push(event);
                }
            }
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    let lived = opened.elapsed();
    assert_eq!(end.code(), Code::Unauthenticated, "{end:?}");
    assert!(
        lived >= Duration::from_secs(1) && lived < Duration::from_secs(8),
        "the stream ended {lived:?} after opening with a 3 s token"
    );
    let (reason, metadata) = error_info(&end);
    assert_eq!(reason, "TOKEN_EXPIRED");
    let cursor = metadata
        .get("cursor")
        .expect("a cursor to resume from")
        .clone();
    assert!(end.message().contains(&cursor), "{end:?}");
    assert!(
        events.iter().any(|e| e.case_id == first.id),
        "the event of the case created while the token was valid: {events:?}"
    );
    assert!(app.watch_streams() <= 1);

    // A fresh token resumes from the cursor: what committed meanwhile
    // comes first, nothing twice.
    let second = create(&mut admin, "ACME", 1).await;
    let mut resumed = admin
        .watch_state_changes(watch("", Some(Start::AfterCursor(cursor))))
        .await
        .expect("resume with a fresh token")
        .into_inner();
    let event = loop {
        match next(&mut resumed, Duration::from_secs(10)).await {
            Ok(Some(pb::WatchStateChangesResponse {
                kind: Some(Kind::Event(event)),
            })) => break event,
            Ok(Some(_)) => {}
            other => panic!("the resumed stream: {other:?}"),
        }
    };
    assert_eq!(event.case_id, second.id, "{event:?}");

    // An expired token cannot open a stream at all.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = viewer
        .watch_state_changes(watch("", None))
        .await
        .expect_err("an expired token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}

/// Opens a watch and waits for its first message.
async fn open_and_read(app: &TestApp, request: pb::WatchStateChangesRequest) -> Duration {
    let started = Instant::now();
    let mut client = app.admin().await;
    let mut stream = client
        .watch_state_changes(request)
        .await
        .expect("a watch")
        .into_inner();
    let first = next(&mut stream, Duration::from_secs(10)).await;
    assert!(matches!(first, Ok(Some(_))), "{first:?}");
    started.elapsed()
}

#[tokio::test]
async fn opening_a_watch_does_not_wait_for_writers_nor_hold_them_up() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let locked = create(&mut admin, "ACME", 1).await;
    let other = create(&mut admin, "ACME", 1).await;

    // A writer that cannot finish: its case's row is locked.
    let lock = RowLock::take(&app.database_url, &locked.id).await;
    let mut writer = admin.clone();
    let id = locked.id.clone();
    let stuck = tokio::spawn(async move { writer.submit_case(submit(&id)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    for start in [
        None,
        Some(Start::FromBeginning(FromBeginning {})),
        Some(Start::WithSnapshot(WithSnapshot {})),
    ] {
        // A watch opens while another writer creates a case: neither
        // waits for the stuck writer or for the other.
        let mut client = app.admin().await;
        let (opened, wrote) = tokio::join!(open_and_read(&app, watch("", start.clone())), async {
            let started = Instant::now();
            let _ = create(&mut client, "ACME", 1).await;
            started.elapsed()
        });
        assert!(
            opened < Duration::from_secs(2),
            "a watch {start:?} opened in {opened:?} behind a writer"
        );
        assert!(
            wrote < Duration::from_secs(2),
            "a write next to an opening watch {start:?} took {wrote:?}"
        );
    }
    let submitted = admin
        .submit_case(submit(&other.id))
        .await
        .expect("a writer on another case")
        .into_inner();
    assert_eq!(submitted.state(), pb::invoice_case::State::New);
    assert!(!stuck.is_finished(), "the stuck writer finished early");
    lock.release().await;
    let done = stuck.await.expect("the task").expect("the stuck writer");
    assert_eq!(done.into_inner().state(), pb::invoice_case::State::New);
}

#[tokio::test]
async fn the_stream_limit_refuses_before_any_database_work() {
    let database_url = cluster().new_database();
    let secret = format!("limit-secret-{}", uuid::Uuid::new_v4().simple());
    let mut settings = settings(&database_url, &secret);
    settings.watch.max_streams = 2;
    let app = spawn_app_with(settings, secret).await;
    let mut admin = app.admin().await;
    let case = create(&mut admin, "ACME", 1).await;
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut stream = admin
            .watch_state_changes(watch("", None))
            .await
            .expect("a watch within the limit")
            .into_inner();
        assert!(matches!(
            next(&mut stream, Duration::from_secs(10)).await,
            Ok(Some(_))
        ));
        streams.push(stream);
    }
    // Every table a watch could read is locked: a stream that did any
    // database work before the limit would wait here.
    let cases_lock = lock_table(&app.database_url, "invoice_cases").await;
    let started = Instant::now();
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        admin.watch_state_changes(watch(
            &case.id,
            Some(Start::FromBeginning(FromBeginning {})),
        )),
    )
    .await
    .expect("the refusal does not wait for the database")
    .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused after {:?}",
        started.elapsed()
    );
    cases_lock.end("ROLLBACK").await;
    drop(streams);
}

/// Service connections of this database inside a transaction that waits
/// for its client (a snapshot whose stream is not read).
async fn idle_in_transaction(database_url: &str) -> i64 {
    use diesel_async::{AsyncConnection, AsyncPgConnection};

    let mut conn = AsyncPgConnection::establish(database_url)
        .await
        .expect("a raw connection");
    count_rows(
        &mut conn,
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'invoice-cases' \
           AND state = 'idle in transaction'",
    )
    .await
}

#[tokio::test]
async fn unread_snapshot_streams_cannot_take_the_connections_calls_need() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    // Snapshots far larger than a stream's buffer and HTTP/2 window.
    let mut cases = Vec::new();
    for _ in 0..60 {
        cases.push(create(&mut admin, "ACME", 50).await);
    }
    let viewer = app.token("viewer", &["viewer"], None);
    let mut unread = Vec::new();
    for _ in 0..16 {
        // HTTP/2's own small windows (hyper's client default is 2 MiB per
        // stream), so that the server cannot send more than a few messages
        // ahead of a client that does not read.
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
            .expect("uri")
            .initial_stream_window_size(Some(65_535))
            .initial_connection_window_size(Some(65_535))
            .connect()
            .await
            .expect("connect");
        let mut client = authorized(channel, &viewer);
        let stream = client
            .watch_state_changes(watch("", Some(Start::WithSnapshot(WithSnapshot {}))))
            .await
            .expect("a snapshot watch")
            .into_inner();
        unread.push((client, stream));
    }
    // The streams' own connections are all taken by snapshots nobody reads.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held = 0;
    while Instant::now() < deadline {
        held = idle_in_transaction(&app.database_url).await;
        if held >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(held >= 4, "only {held} snapshots hold a connection");

    // Calls are served as usual meanwhile.
    for case in cases.iter().take(20) {
        let started = Instant::now();
        let got = admin
            .get_invoice_case(pb::GetInvoiceCaseRequest {
                case_id: case.id.clone(),
            })
            .await
            .expect("a read while snapshots are unread")
            .into_inner();
        assert_eq!(got.id, case.id);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a read took {:?}",
            started.elapsed()
        );
    }
    let listed = admin
        .list_invoice_cases(pb::ListInvoiceCasesRequest::default())
        .await
        .expect("a list while snapshots are unread")
        .into_inner();
    assert!(!listed.invoice_cases.is_empty());
    let created = create(&mut admin, "ACME", 1).await;
    let submitted = admin
        .submit_case(submit(&created.id))
        .await
        .expect("a write while snapshots are unread")
        .into_inner();
    assert_eq!(submitted.state(), pb::invoice_case::State::New);
    drop(unread);
}
