//! WatchStateChanges: order, filters, resumption, snapshots, progress,
//! retention — against the real server and PostgreSQL.

use std::{collections::HashMap, time::Duration};

use invoice_cases::{
    pb::{
        self,
        invoice_case::State as C,
        watch_state_changes_request::{FromBeginning, Start, WithSnapshot},
    },
    store::{PoolSettings, Store},
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{helpers::*, watch_helpers::*};

/// Every event of every case, in the order ListStateChanges gives.
async fn all_history(client: &mut Client, cases: &[pb::InvoiceCase]) -> Vec<pb::StateChangeEvent> {
    let mut events = Vec::new();
    for case in cases {
        events.extend(history(client, &case.id).await);
    }
    events
}

#[tokio::test]
async fn streams_deliver_committed_events_in_order_with_filters() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut everything = open(&mut admin, watch("", "", None)).await;
    let first = create(&mut admin, "ACME", 1).await;
    let mut by_case = open(&mut admin, watch(&first.number, "", None)).await;
    let mut by_account = open(&mut admin, watch("", "GLOBEX", None)).await;
    // The streams start now: the case created before them is not replayed,
    // its later changes are.
    let second = create(&mut admin, "GLOBEX", 2).await;
    ok(admin.submit_case(submit(&first.id)).await);
    ok(admin.submit_case(submit(&second.id)).await);
    ok(admin.assign_to_me(assign(&second.id)).await);
    ok(admin.assign_to_me(assign(&first.id)).await);

    let all = read_events(&mut everything, 6).await;
    let history = all_history(&mut admin, &[first.clone(), second.clone()]).await;
    let by_cursor: HashMap<&str, &pb::StateChangeEvent> =
        history.iter().map(|e| (e.cursor.as_str(), e)).collect();
    for event in &all {
        assert_eq!(
            by_cursor.get(event.cursor.as_str()).copied(),
            Some(event),
            "a streamed event equals the stored one"
        );
    }
    let actions: Vec<_> = all
        .iter()
        .map(|e| (e.case_number.clone(), e.action()))
        .collect();
    use pb::state_change_event::Action as A;
    assert_eq!(
        actions,
        [
            (first.number.clone(), A::Create),
            (second.number.clone(), A::Create),
            (first.number.clone(), A::Submit),
            (second.number.clone(), A::Submit),
            (second.number.clone(), A::AssignToMe),
            (first.number.clone(), A::AssignToMe),
        ]
    );
    let case_events = read_events(&mut by_case, 2).await;
    assert!(case_events.iter().all(|e| e.case_id == first.id));
    assert_eq!(
        case_events.iter().map(|e| e.action()).collect::<Vec<_>>(),
        [A::Submit, A::AssignToMe]
    );
    let account_events = read_events(&mut by_account, 3).await;
    assert!(account_events.iter().all(|e| e.account_id == "GLOBEX"));
    assert_eq!(
        account_events
            .iter()
            .map(|e| e.action())
            .collect::<Vec<_>>(),
        [A::Create, A::Submit, A::AssignToMe]
    );
    // Nothing else arrives: the next message on the filtered streams is a
    // progress message.
    let rest = read_until_progress(&mut by_case, 1).await;
    assert!(rest.events.is_empty(), "{:?}", rest.events);
}

#[tokio::test]
async fn resuming_from_every_cursor_yields_exactly_the_rest() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    for account in ["A", "B", "C"] {
        let case = case_in_state(&mut admin, C::AwaitingInfo).await;
        let _ = case;
        let _ = create(&mut admin, account, 1).await;
    }
    let mut stream = open(
        &mut admin,
        watch("", "", Some(Start::FromBeginning(FromBeginning {}))),
    )
    .await;
    let recorded = read_events(&mut stream, 15).await;
    assert_eq!(recorded.len(), 15);
    let quiet = read_until_progress(&mut stream, 1).await;
    assert!(quiet.events.is_empty(), "more events than written");

    for (i, event) in recorded.iter().enumerate() {
        let mut resumed = open(
            &mut admin,
            watch("", "", Some(Start::AfterCursor(event.cursor.clone()))),
        )
        .await;
        let rest = &recorded[i + 1..];
        let got = read_events(&mut resumed, rest.len()).await;
        assert_eq!(got, rest, "resuming after event {i}");
        let after = read_until_progress(&mut resumed, 1).await;
        assert!(
            after.events.is_empty(),
            "resuming after event {i} repeated events"
        );
    }
}

/// "From now" is after every event committed before the stream opened, even
/// while an older transaction (here one of the test's, holding a transaction
/// id) keeps the horizon below those events.
#[tokio::test]
async fn a_stream_from_now_skips_events_committed_before_it_opened_behind_an_older_transaction() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut older = OpenTransaction::begin(&app.database_url).await;
    older.run("SELECT pg_current_xact_id()").await;
    let case = create(&mut admin, "ACME", 1).await;
    let mut stream = open(&mut admin, watch("", "", None)).await;
    ok(admin.submit_case(submit(&case.id)).await);
    older.end("ROLLBACK").await;

    let received = read_until_progress(&mut stream, 1).await;
    let actions: Vec<_> = received.events.iter().map(|e| e.action()).collect();
    assert_eq!(
        actions,
        [pb::state_change_event::Action::Submit],
        "{:?}",
        received.events
    );
}

#[tokio::test]
async fn a_progress_cursor_resumes_after_everything_before_it() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let case = create(&mut admin, "ACME", 1).await;
    let mut stream = open(&mut admin, watch("", "", None)).await;
    let idle = read_until_progress(&mut stream, 2).await;
    assert!(idle.events.is_empty());
    let cursor = idle.progress.last().cloned().expect("a progress cursor");
    ok(admin.submit_case(submit(&case.id)).await);
    let mut resumed = open(&mut admin, watch("", "", Some(Start::AfterCursor(cursor)))).await;
    let events = read_events(&mut resumed, 1).await;
    assert_eq!(events[0].action(), pb::state_change_event::Action::Submit);
    let quiet = read_until_progress(&mut resumed, 1).await;
    assert!(quiet.events.is_empty());
}

#[tokio::test]
async fn a_snapshot_then_live_events_lose_and_repeat_nothing() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut cases = Vec::new();
    for i in 0..12 {
        cases.push(create(&mut admin, if i % 2 == 0 { "ACME" } else { "GLOBEX" }, 1).await);
    }
    // Writers change the cases while the snapshot is taken.
    let writer_app_client = app.admin().await;
    let ids: Vec<String> = cases.iter().map(|c| c.id.clone()).collect();
    let writer = tokio::spawn(async move {
        let mut client = writer_app_client;
        for id in &ids {
            ok(client.submit_case(submit(id)).await);
            ok(client.assign_to_me(assign(id)).await);
        }
    });
    let mut stream = open(
        &mut admin,
        watch("", "", Some(Start::WithSnapshot(WithSnapshot {}))),
    )
    .await;
    let mut received = Received::default();
    read_until(&mut stream, &mut received, Duration::from_secs(30), |r| {
        r.snapshot_cursor.is_some()
    })
    .await;
    writer.await.expect("writer");
    // The live part ends when every case is at its final revision.
    let mut finals = HashMap::new();
    for case in &cases {
        let now = get(&mut admin, &case.id).await;
        finals.insert(
            now.id.clone(),
            now.etag.parse::<u64>().expect("numeric etag"),
        );
    }
    let mut revisions: HashMap<String, u64> = received
        .snapshot
        .iter()
        .map(|case| (case.id.clone(), case.etag.parse().expect("numeric etag")))
        .collect();
    assert_eq!(revisions.len(), 12, "every case is in the snapshot");
    let done = |r: &Received| {
        let mut revisions = revisions.clone();
        for event in &r.events {
            revisions.insert(event.case_id.clone(), event.etag.parse().unwrap_or(0));
        }
        revisions == finals
    };
    read_until(&mut stream, &mut received, Duration::from_secs(30), done).await;
    // Each case's events continue its snapshot revision by revision.
    for event in &received.events {
        let revision: u64 = event.etag.parse().expect("numeric etag");
        let last = revisions.get_mut(&event.case_id).expect("a snapshot case");
        assert_eq!(
            revision,
            *last + 1,
            "event after revision {last}: {event:?}"
        );
        *last = revision;
    }
    // And the marker's cursor resumes exactly there.
    let mut resumed = open(
        &mut admin,
        watch(
            "",
            "",
            Some(Start::AfterCursor(
                received.snapshot_cursor.clone().expect("marker"),
            )),
        ),
    )
    .await;
    let again = read_events(&mut resumed, received.events.len()).await;
    assert_eq!(again, received.events);
}

#[tokio::test]
async fn accounts_limit_snapshots_and_replays() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mine = create(&mut admin, "MINE", 1).await;
    let theirs = create(&mut admin, "THEIRS", 1).await;
    ok(admin.submit_case(submit(&theirs.id)).await);
    ok(admin.submit_case(submit(&mine.id)).await);
    let token = app.token("vera", &["viewer"], Some(&["MINE"]));
    let mut viewer = app.client_with(Some(&token)).await;

    let mut replay = open(
        &mut viewer,
        watch("", "", Some(Start::FromBeginning(FromBeginning {}))),
    )
    .await;
    let events = read_events(&mut replay, 2).await;
    assert!(events.iter().all(|e| e.account_id == "MINE"), "{events:?}");
    let quiet = read_until_progress(&mut replay, 1).await;
    assert!(quiet.events.is_empty(), "{:?}", quiet.events);

    let mut snapshot = open(
        &mut viewer,
        watch("", "", Some(Start::WithSnapshot(WithSnapshot {}))),
    )
    .await;
    let mut received = Received::default();
    read_until(&mut snapshot, &mut received, Duration::from_secs(10), |r| {
        r.snapshot_cursor.is_some()
    })
    .await;
    assert_eq!(
        received
            .snapshot
            .iter()
            .map(|c| c.id.clone())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&mine.id)
    );

    let status = viewer
        .watch_state_changes(watch(&theirs.id, "", None))
        .await
        .expect_err("another account's case");
    assert_eq!(status.code(), Code::NotFound);
}

/// A snapshot's marker (and a progress cursor right after it) can lie
/// above the horizon while an older transaction is still open: resuming
/// from it is accepted, and the stream delivers what follows once that
/// transaction ends.
#[tokio::test]
async fn a_marker_above_the_horizon_resumes() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let case = create(&mut admin, "ACME", 1).await;
    // A transaction with an id, open across the snapshot: it holds the
    // horizon below the snapshot's end.
    let mut other = OpenTransaction::begin(&app.database_url).await;
    other.run("SELECT pg_current_xact_id()").await;
    // A later transaction commits, so the snapshot's end moves past the
    // open one.
    create(&mut admin, "ACME", 1).await;

    let mut stream = open(
        &mut admin,
        watch("", "", Some(Start::WithSnapshot(WithSnapshot {}))),
    )
    .await;
    let mut received = Received::default();
    read_until(&mut stream, &mut received, Duration::from_secs(30), |r| {
        r.snapshot_cursor.is_some()
    })
    .await;
    assert_eq!(received.snapshot.len(), 2);
    let marker = received.snapshot_cursor.clone().expect("marker");
    let mut resumed = open(
        &mut admin,
        watch("", "", Some(Start::AfterCursor(marker.clone()))),
    )
    .await;
    let mut by_case = open(
        &mut admin,
        watch(&case.id, "", Some(Start::AfterCursor(marker))),
    )
    .await;

    ok(admin.submit_case(submit(&case.id)).await);
    other.end("COMMIT").await;
    for stream in [&mut stream, &mut resumed, &mut by_case] {
        let events = read_events(stream, 1).await;
        assert_eq!(events[0].action(), pb::state_change_event::Action::Submit);
        assert_eq!(events[0].case_id, case.id);
        let quiet = read_until_progress(stream, 1).await;
        assert!(quiet.events.is_empty(), "{:?}", quiet.events);
    }
}

#[tokio::test]
async fn bad_and_expired_cursors_are_refused() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let status = admin
        .watch_state_changes(watch("", "", Some(Start::AfterCursor("nope".into()))))
        .await
        .expect_err("a bad cursor");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["after_cursor"]);
    // Well formed, but past every transaction this database has started.
    let ahead = invoice_cases::watch::cursor::encode_event(invoice_cases::store::EventPosition {
        txid: 1 << 40,
        id: 1,
    });
    let status = admin
        .watch_state_changes(watch("", "", Some(Start::AfterCursor(ahead))))
        .await
        .expect_err("a cursor from the future");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["after_cursor"]);

    let case = create(&mut admin, "ACME", 1).await;
    ok(admin.submit_case(submit(&case.id)).await);
    let events = history(&mut admin, &case.id).await;
    let store = Store::new(&app.database_url, &PoolSettings::default()).expect("store");
    // Pruning stops at the horizon, which a transaction of another test's
    // database (one PostgreSQL server) may hold below these events for a
    // moment: prune until both are gone.
    let cutoff = chrono::Utc::now() + chrono::Duration::minutes(1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut pruned = 0;
    while pruned < 2 && tokio::time::Instant::now() < deadline {
        pruned += store.prune_events(cutoff, 1000).await.expect("prune");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pruned, 2);
    let status = admin
        .watch_state_changes(watch(
            "",
            "",
            Some(Start::AfterCursor(events[0].cursor.clone())),
        ))
        .await
        .expect_err("an expired cursor");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .expect("ErrorInfo");
    assert_eq!(info.reason, "CURSOR_EXPIRED");
    assert_eq!(
        info.metadata.get("resumeWith").map(String::as_str),
        Some("with_snapshot")
    );
    // The last pruned event's cursor is still good: nothing after it is lost.
    let mut stream = open(
        &mut admin,
        watch("", "", Some(Start::AfterCursor(events[1].cursor.clone()))),
    )
    .await;
    ok(admin.assign_to_me(assign(&case.id)).await);
    let live = read_events(&mut stream, 1).await;
    assert_eq!(live[0].action(), pb::state_change_event::Action::AssignToMe);
}

#[tokio::test]
async fn a_client_that_leaves_frees_its_stream_within_seconds() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(open(&mut admin, watch("", "", None)).await);
    }
    let mut reading = open(
        &mut admin,
        watch("", "", Some(Start::WithSnapshot(WithSnapshot {}))),
    )
    .await;
    let _ = read_until_progress(&mut reading, 1).await;
    assert_eq!(app.watch_streams(), 6);
    // Dropping a stream cancels it (RST_STREAM); the server must notice.
    drop(streams);
    drop(reading);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.watch_streams() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} streams still open 5 s after their clients left",
            app.watch_streams()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A whole connection going away frees its streams too.
    let mut other = app.admin().await;
    let held = open(&mut other, watch("", "", None)).await;
    assert_eq!(app.watch_streams(), 1);
    drop(held);
    drop(other);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.watch_streams() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream outlived its connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The longest any transaction of the service that prunes events has been
/// open, sampled until `done`.
async fn longest_prune_transaction(
    database_url: String,
    done: tokio::sync::watch::Receiver<bool>,
) -> Duration {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

    #[derive(diesel::QueryableByName)]
    struct Age {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Double>)]
        seconds: Option<f64>,
    }
    let mut conn = AsyncPgConnection::establish(&database_url)
        .await
        .expect("a raw connection");
    let mut longest = Duration::ZERO;
    while !*done.borrow() {
        let age: Age = diesel::sql_query(
            "SELECT max(extract(epoch FROM clock_timestamp() - xact_start))::float8 AS seconds \
             FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE '%DELETE FROM case_events%' \
               AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
        )
        .get_result(&mut conn)
        .await
        .expect("read pg_stat_activity");
        if let Some(seconds) = age.seconds {
            longest = longest.max(Duration::from_secs_f64(seconds.max(0.0)));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    longest
}

/// Pruning a long history (one DELETE of 300 000 events holds every
/// stream's horizon for most of a second here) goes in batches, each its
/// own short transaction, and streams keep delivering meanwhile.
#[tokio::test]
async fn pruning_a_long_history_runs_in_short_transactions_while_streams_go_on() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

    const OLD_EVENTS: i64 = 300_000;
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    // A month-old history, first in the stream order (events outlive their
    // cases: no reference to check).
    {
        let mut conn = AsyncPgConnection::establish(&app.database_url)
            .await
            .expect("a raw connection");
        diesel::sql_query(format!(
            "INSERT INTO case_events \
                 (case_id, case_number, account_id, action, actor, occur_time, etag, changes) \
             SELECT gen_random_uuid(), 'INVCS0000001', 'OLD', 'CREATE', 'someone', \
                    now() - interval '30 days', 'e', \
                    '[{{\"entity\": \"CASE\", \"from\": \"\", \"to\": \"DRAFT\"}}]' \
             FROM generate_series(1, {OLD_EVENTS})"
        ))
        .execute(&mut conn)
        .await
        .expect("insert an old history");
    }
    let mut stream = open(&mut admin, watch("", "", None)).await;
    let _ = read_until_progress(&mut stream, 1).await;

    let store = Store::new(&app.database_url, &PoolSettings::default()).expect("store");
    let (done_tx, done) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(longest_prune_transaction(app.database_url.clone(), done));
    let pruning = tokio::spawn(async move {
        let cutoff = chrono::Utc::now() - chrono::Duration::days(1);
        let started = tokio::time::Instant::now();
        let mut pruned = 0;
        // Another test's transaction on the same server may hold the
        // horizon below the history for a moment.
        while pruned < OLD_EVENTS as usize && started.elapsed() < Duration::from_secs(120) {
            pruned += store.prune_events(cutoff, 1000).await.expect("prune");
        }
        (pruned, started.elapsed())
    });
    // The stream keeps delivering while the history goes.
    let mut delivered = 0;
    while !pruning.is_finished() {
        let case = create(&mut admin, "ACME", 1).await;
        let events = tokio::time::timeout(Duration::from_secs(20), read_events(&mut stream, 1))
            .await
            .expect("an event while pruning");
        assert_eq!(events[0].case_id, case.id);
        delivered += 1;
    }
    let (pruned, took) = pruning.await.expect("the pruning task");
    done_tx.send_replace(true);
    let longest = sampler.await.expect("the sampler");
    eprintln!(
        "pruned {pruned} events in {took:?}; longest pruning transaction {longest:?}; \
         {delivered} events delivered meanwhile"
    );
    assert_eq!(pruned, OLD_EVENTS as usize);
    assert!(
        longest < Duration::from_millis(300),
        "a pruning transaction stayed open {longest:?} (holding every stream's horizon)"
    );
    assert!(delivered >= 1);
}
