//! Durable named subscriptions: created by the first watch naming them,
//! resumed after the acknowledged cursor — across restarts and replicas —
//! with acknowledgements that only move forward, fixed filters, one owner,
//! the caller's account access, admin listing and deletion, limits and
//! retention; against the real server and PostgreSQL.

use std::{collections::HashSet, time::Duration};

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use invoice_cases::{
    pb::{
        self,
        watch_state_changes_request::{FromBeginning, FromNow, Start, WithSnapshot},
    },
    store::{EventPosition, PoolSettings, Store, StreamPosition},
    watch::cursor,
};
use tonic::{Code, Status, Streaming};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::{helpers::*, process::*, watch_helpers::*};

type Stream = Streaming<pb::WatchStateChangesResponse>;

/// A watch of the subscription `name` with these filters and start.
fn named(
    name: &str,
    case_id: &str,
    account_id: &str,
    start: Option<Start>,
) -> pb::WatchStateChangesRequest {
    pb::WatchStateChangesRequest {
        subscription: name.to_owned(),
        ..watch(case_id, account_id, start)
    }
}

/// A watch of the existing subscription `name` (its name alone).
fn resume(name: &str) -> pb::WatchStateChangesRequest {
    named(name, "", "", None)
}

fn from_beginning() -> Option<Start> {
    Some(Start::FromBeginning(FromBeginning {}))
}

async fn ack(client: &mut Client, name: &str, cursor: &str) -> Result<pb::Subscription, Status> {
    client
        .acknowledge_state_changes(pb::AcknowledgeStateChangesRequest {
            subscription: name.to_owned(),
            cursor: cursor.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Every subscription, all pages of `page_size`.
async fn all_subscriptions(admin: &mut Client, page_size: i32) -> Vec<pb::Subscription> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ok(admin
            .list_subscriptions(pb::ListSubscriptionsRequest {
                page_size,
                page_token: page_token.clone(),
            })
            .await);
        assert!(page.subscriptions.len() <= page_size.max(1) as usize);
        all.extend(page.subscriptions);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// The subscription `name`, as an admin lists it.
async fn listed(admin: &mut Client, name: &str) -> Option<pb::Subscription> {
    all_subscriptions(admin, 500)
        .await
        .into_iter()
        .find(|s| s.name == name)
}

/// Creates a case of `account`, submits it and takes it: three events.
async fn three_events(client: &mut Client, account: &str) -> pb::InvoiceCase {
    let case = create(client, account, 1).await;
    ok(client.submit_case(submit(&case.id)).await);
    ok(client.assign_to_me(assign(&case.id)).await)
}

/// Reads `n` events, then checks that nothing else comes before the next
/// progress message.
async fn exactly(stream: &mut Stream, n: usize) -> Vec<pb::StateChangeEvent> {
    let events = read_events(stream, n).await;
    let quiet = read_until_progress(stream, 1).await;
    assert!(
        quiet.events.is_empty(),
        "more events than expected: {:?}",
        quiet.events
    );
    events
}

/// The ErrorInfo reason and metadata of a status.
fn reason(status: &Status) -> (String, std::collections::HashMap<String, String>) {
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    (info.reason, info.metadata)
}

/// The status a stream ends with, within `limit`.
async fn end_of(stream: &mut Stream, limit: Duration) -> Status {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => panic!("the stream did not end within {limit:?}"),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => return status,
        }
    }
}

#[tokio::test]
async fn the_first_watch_creates_a_subscription_and_a_later_one_resumes_from_its_start() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut svc = app.client_for("billing", &["viewer"]).await;
    let before = create(&mut admin, "ACME", 1).await;

    let mut first = open(
        &mut svc,
        named("billing-acme", "", "ACME", Some(Start::FromNow(FromNow {}))),
    )
    .await;
    let created = listed(&mut admin, "billing-acme")
        .await
        .expect("the first watch created it");
    assert_eq!(created.owner, "billing");
    assert_eq!(created.account_id, "ACME");
    assert_eq!(created.case_id, "");
    assert_eq!(created.acknowledged_cursor, "");
    assert!(created.create_time.is_some());
    assert_eq!(created.acknowledge_time, None);

    ok(admin.submit_case(submit(&before.id)).await);
    create(&mut admin, "GLOBEX", 1).await;
    let later = create(&mut admin, "ACME", 1).await;
    let events = exactly(&mut first, 2).await;
    assert_eq!(
        events
            .iter()
            .map(|e| (e.case_id.clone(), e.action()))
            .collect::<Vec<_>>(),
        [
            (before.id.clone(), pb::state_change_event::Action::Submit),
            (later.id.clone(), pb::state_change_event::Action::Create),
        ]
    );
    drop(first);

    // Nothing acknowledged: a later watch starts where the first did —
    // replay, then live.
    let mut again = open(&mut svc, resume("billing-acme")).await;
    let replayed = read_events(&mut again, 2).await;
    assert_eq!(replayed, events);
    ok(admin.submit_case(submit(&later.id)).await);
    let live = exactly(&mut again, 1).await;
    assert_eq!(live[0].case_id, later.id);
    assert_eq!(all_subscriptions(&mut admin, 50).await.len(), 1);
}

#[tokio::test]
async fn a_watch_resumes_exactly_after_the_acknowledged_cursor() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut svc = app.client_for("ledger", &["viewer"]).await;
    for account in ["A", "B", "C"] {
        three_events(&mut admin, account).await;
    }
    let mut stream = open(&mut svc, named("ledger", "", "", from_beginning())).await;
    let events = exactly(&mut stream, 9).await;
    drop(stream);

    for (i, event) in events.iter().enumerate() {
        let acked = ok_status(ack(&mut svc, "ledger", &event.cursor).await);
        assert_eq!(acked.acknowledged_cursor, event.cursor, "after event {i}");
        assert!(acked.acknowledge_time.is_some());
        let mut resumed = open(&mut svc, resume("ledger")).await;
        let rest = &events[i + 1..];
        let got = exactly(&mut resumed, rest.len()).await;
        assert_eq!(got, rest, "resumed after event {i}");
    }
    // Live events follow the replay on the same stream.
    let mut resumed = open(&mut svc, resume("ledger")).await;
    let case = three_events(&mut admin, "D").await;
    let live = exactly(&mut resumed, 3).await;
    assert!(live.iter().all(|e| e.case_id == case.id));
}

fn ok_status<T>(result: Result<T, Status>) -> T {
    result.unwrap_or_else(|status| panic!("call failed: {status:?}"))
}

#[tokio::test]
async fn acknowledging_only_moves_forward_also_concurrently_through_replicas() {
    let database = cluster().new_database();
    let secret = format!("subs-{}", Uuid::new_v4().simple());
    let a = spawn_app_with(settings(&database, &secret), secret.clone()).await;
    let b = spawn_app_with(settings(&database, &secret), secret.clone()).await;
    let mut admin = a.admin().await;
    let mut on_a = a.client_for("svc", &["viewer"]).await;
    let mut on_b = b.client_for("svc", &["viewer"]).await;
    for account in ["A", "B", "C", "D"] {
        three_events(&mut admin, account).await;
    }
    let mut stream = open(&mut on_a, named("mono", "", "", from_beginning())).await;
    let events = exactly(&mut stream, 12).await;
    drop(stream);

    let at_5 = ok_status(ack(&mut on_a, "mono", &events[5].cursor).await);
    // Older and equal cursors change nothing, and answer the subscription
    // as it is.
    for older in [&events[0], &events[4], &events[5]] {
        let same = ok_status(ack(&mut on_b, "mono", &older.cursor).await);
        assert_eq!(same, at_5);
    }
    let mut resumed = open(&mut on_b, resume("mono")).await;
    assert_eq!(exactly(&mut resumed, 6).await, events[6..]);
    drop(resumed);

    // Many acknowledgements at once, through both replicas, in every
    // order: the furthest one wins.
    let mut tasks = Vec::new();
    for round in 0..3 {
        for (i, event) in events.iter().enumerate().skip(6) {
            let mut client = if (i + round) % 2 == 0 {
                on_a.clone()
            } else {
                on_b.clone()
            };
            let cursor = event.cursor.clone();
            tasks.push(tokio::spawn(async move {
                ok_status(ack(&mut client, "mono", &cursor).await)
            }));
        }
    }
    for task in tasks {
        task.await.expect("an acknowledgement");
    }
    let last = listed(&mut admin, "mono").await.expect("listed");
    assert_eq!(last.acknowledged_cursor, events[11].cursor);
    let mut resumed = open(&mut on_a, resume("mono")).await;
    let quiet = read_until_progress(&mut resumed, 1).await;
    assert!(quiet.events.is_empty(), "{:?}", quiet.events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_resumes_on_another_replica_and_across_a_restart() {
    let deployment = Deployment::new();
    let (url, secret) = (
        deployment.database_url.url.clone(),
        deployment.secret.clone(),
    );
    let port_a = free_port();
    let a = start_server(&url, &secret, Some(port_a), &[]).await;
    let b = start_server(&url, &secret, None, &[]).await;
    let token = invoice_cases_test_support::token(&secret, "svc", &["viewer"], None, 3600);
    let mut writer = client(b.addr, &deployment.admin_token).await;
    let mut on_a = client(a.addr, &token).await;
    let mut on_b = client(b.addr, &token).await;

    let mut stream = open(&mut on_a, named("replicated", "", "", None)).await;
    for account in ["A", "B", "C", "D"] {
        three_events(&mut writer, account).await;
    }
    let events = exactly(&mut stream, 12).await;
    drop(stream);
    // Acknowledged on A, resumed on B.
    ok_status(ack(&mut on_a, "replicated", &events[4].cursor).await);
    let mut on_b_stream = open(&mut on_b, resume("replicated")).await;
    assert_eq!(exactly(&mut on_b_stream, 7).await, events[5..]);
    drop(on_b_stream);
    // Acknowledged on B; A restarts (killed: nothing of it survives but the
    // database), and resumes there.
    ok_status(ack(&mut on_b, "replicated", &events[8].cursor).await);
    a.kill().await.expect("kill A");
    let a = start_server(&url, &secret, Some(port_a), &[]).await;
    let mut on_a = client(a.addr, &token).await;
    let mut after_restart = open(&mut on_a, resume("replicated")).await;
    let more = three_events(&mut writer, "E").await;
    let got = exactly(&mut after_restart, 6).await;
    assert_eq!(got[..3], events[9..]);
    assert!(got[3..].iter().all(|e| e.case_id == more.id), "{got:?}");
    drop(after_restart);
    drop(a);
    drop(b);
}

/// A raw event written in a transaction of the test's own, left open: its
/// transaction is in progress while a snapshot is taken.
async fn open_event_transaction(database_url: &str, case: &pb::InvoiceCase) -> OpenTransaction {
    let mut open = OpenTransaction::begin(database_url).await;
    open.run(&format!("SELECT lock_for_event('{}')", case.id))
        .await;
    open.run(&format!(
        "INSERT INTO case_events (case_id, case_number, account_id, action, actor, occur_time, \
         etag, changes) VALUES ('{}', '{}', '{}', 'ADD_COMMENT', 'raw-writer', now(), 'raw', '[]')",
        case.id, case.number, case.account_id
    ))
    .await;
    open
}

#[tokio::test]
async fn snapshot_cursors_of_a_subscription_compare_by_position() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut svc = app.client_for("svc", &["viewer"]).await;
    let case = create(&mut admin, "ACME", 1).await;
    // A transaction in progress across the snapshot (it writes an event),
    // and a later one that commits: the snapshot's cursors carry the list.
    let in_flight = open_event_transaction(&app.database_url, &case).await;
    create(&mut admin, "ACME", 1).await;

    let mut stream = open(
        &mut svc,
        named("snap", "", "", Some(Start::WithSnapshot(WithSnapshot {}))),
    )
    .await;
    let mut received = Received::default();
    read_until(&mut stream, &mut received, Duration::from_secs(30), |r| {
        r.snapshot_cursor.is_some()
    })
    .await;
    assert_eq!(received.snapshot.len(), 2);
    let marker = received.snapshot_cursor.clone().expect("marker");
    let position = cursor::decode(&marker).expect("a cursor");
    let shown = position
        .shown
        .clone()
        .expect("the marker carries its snapshot");
    assert!(!shown.in_progress.is_empty(), "{shown:?}");

    in_flight.end("COMMIT").await;
    ok(admin.submit_case(submit(&case.id)).await);
    let events = exactly(&mut stream, 2).await;
    let (raw, submit) = (&events[0], &events[1]);
    assert_eq!(raw.action(), pb::state_change_event::Action::AddComment);
    let raw_position = cursor::decode(&raw.cursor).expect("a cursor");
    assert!(
        raw_position.shown.is_some(),
        "inside the snapshot: the cursor still carries it"
    );
    assert_eq!(
        cursor::decode(&submit.cursor).expect("a cursor").shown,
        None
    );
    drop(stream);

    // The marker is the start: acknowledging it changes nothing.
    let unchanged = ok_status(ack(&mut svc, "snap", &marker).await);
    assert_eq!(unchanged.acknowledged_cursor, "");
    // A plain cursor of the raw event's position counts as the start moved
    // there: the subscription's cursor keeps its snapshot.
    let plain = cursor::encode_event(raw_position.after);
    let moved = ok_status(ack(&mut svc, "snap", &plain).await);
    assert_eq!(moved.acknowledged_cursor, raw.cursor);
    // The same position with its snapshot, and the marker, are not later.
    assert_eq!(ok_status(ack(&mut svc, "snap", &raw.cursor).await), moved);
    assert_eq!(ok_status(ack(&mut svc, "snap", &marker).await), moved);
    let mut resumed = open(&mut svc, resume("snap")).await;
    assert_eq!(exactly(&mut resumed, 1).await, std::slice::from_ref(submit));
    drop(resumed);

    // Cursors carrying another snapshot (another stream's) are refused,
    // whatever their position.
    let other_list = StreamPosition {
        after: raw_position.after,
        shown: Some(invoice_cases::store::Shown {
            xmax: shown.xmax,
            in_progress: Vec::new(),
        }),
    };
    let other_xmax = StreamPosition {
        after: raw_position.after,
        shown: Some(invoice_cases::store::Shown {
            xmax: shown.xmax + 1,
            in_progress: raw_position.shown.clone().expect("shown").in_progress,
        }),
    };
    for foreign in [other_list, other_xmax] {
        let status = ack(&mut svc, "snap", &cursor::encode(&foreign))
            .await
            .expect_err("another stream's cursor");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(violated_fields(&status), ["cursor"]);
    }
    // Past the snapshot, cursors are plain and compare as usual.
    let last = ok_status(ack(&mut svc, "snap", &submit.cursor).await);
    assert_eq!(last.acknowledged_cursor, submit.cursor);
    let mut resumed = open(&mut svc, resume("snap")).await;
    assert!(read_until_progress(&mut resumed, 1).await.events.is_empty());
}

#[tokio::test]
async fn filters_and_start_are_fixed_at_creation() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut svc = app.client_for("svc", &["viewer"]).await;
    let case = create(&mut admin, "ACME", 1).await;
    let stream = open(
        &mut svc,
        named("one-case", &case.number, "", from_beginning()),
    )
    .await;
    drop(stream);
    let listed_case = listed(&mut admin, "one-case").await.expect("listed");
    assert_eq!(listed_case.case_id, case.id, "stored as the case UUID");

    let refusals: [(pb::WatchStateChangesRequest, &[&str]); 4] = [
        (
            named("one-case", "", "", Some(Start::FromNow(FromNow {}))),
            &["from_now"],
        ),
        (named("one-case", &case.id, "", None), &["case_id"]),
        (
            named(
                "one-case",
                "",
                "ACME",
                Some(Start::AfterCursor("AQAAAAAAAAABAAAAAAAAAAE".into())),
            ),
            &["account_id", "after_cursor"],
        ),
        (
            named("one-case", "", "", from_beginning()),
            &["from_beginning"],
        ),
    ];
    for (request, fields) in refusals {
        let status = svc
            .watch_state_changes(request)
            .await
            .expect_err("filters are fixed");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(violated_fields(&status), fields);
        assert!(status.message().contains("fixed"), "{status:?}");
    }
    // The name alone works, and delivers only the case's events.
    ok(admin.submit_case(submit(&case.id)).await);
    create(&mut admin, "ACME", 1).await;
    let mut stream = open(&mut svc, resume("one-case")).await;
    let events = exactly(&mut stream, 2).await;
    assert!(events.iter().all(|e| e.case_id == case.id));
    assert_eq!(app.watch_streams(), 1, "refused watches hold no stream");
}

/// Watches waiting to create a subscription of `owner`'s (on the lock of
/// creating that owner's subscriptions).
async fn waiting_creations(conn: &mut AsyncPgConnection) -> i64 {
    count_rows(
        conn,
        "SELECT count(*) AS n FROM pg_locks \
         WHERE locktype = 'advisory' AND NOT granted AND classid = 470441475::oid \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_first_watches_at_once_share_one_subscription() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let svc = app.client_for("svc", &["viewer"]).await;
    let mut conn = AsyncPgConnection::establish(&app.database_url)
        .await
        .expect("a raw connection");
    for round in 0..4 {
        let name = format!("race-{round}");
        let (start, watchers) = if round % 2 == 0 {
            (from_beginning(), 3)
        } else {
            // Each holds a snapshot (a stream connection) while it waits.
            (Some(Start::WithSnapshot(WithSnapshot {})), 2)
        };
        // Every first watch reads that there is no such subscription, then
        // waits to create it: they create it at once when the lock goes.
        let mut lock = OpenTransaction::begin(&app.database_url).await;
        lock.run("SELECT pg_advisory_xact_lock(470441475, hashtext('svc'))")
            .await;
        let spawn = |request: pb::WatchStateChangesRequest| {
            let mut client = svc.clone();
            tokio::spawn(async move { client.watch_state_changes(request).await })
        };
        let same: Vec<_> = (0..watchers)
            .map(|_| spawn(named(&name, "", "ACME", start.clone())))
            .collect();
        // One with other filters, in the rounds without snapshots.
        let other = (round % 2 == 0).then(|| spawn(named(&name, "", "GLOBEX", start.clone())));
        let expected = watchers + i64::from(other.is_some());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while waiting_creations(&mut conn).await < expected {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the watches did not get to create"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        lock.end("COMMIT").await;
        let mut same_results = Vec::new();
        for watcher in same {
            same_results.push(watcher.await.expect("a first watch"));
        }
        let other_result = match other {
            Some(other) => Some(other.await.expect("a first watch")),
            None => None,
        };
        let found: Vec<_> = all_subscriptions(&mut admin, 500)
            .await
            .into_iter()
            .filter(|s| s.name == name)
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        // Whichever first watch took the lock first created it; every other
        // one with the same filters shares it, one with other filters is
        // refused.
        let winner = found[0].account_id.clone();
        let (winners, losers) = if winner == "ACME" {
            (same_results, other_result.into_iter().collect::<Vec<_>>())
        } else {
            assert_eq!(winner, "GLOBEX", "{found:?}");
            (other_result.into_iter().collect(), same_results)
        };
        let mut streams = Vec::new();
        for result in winners {
            let stream = result.unwrap_or_else(|status| panic!("round {round}: {status:?}"));
            streams.push(stream.into_inner());
        }
        for result in losers {
            let status = result.expect_err("other filters than the subscription's");
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert_eq!(violated_fields(&status), ["account_id", "from_beginning"]);
        }
        // Every stream is the subscription's: each gets the next event.
        let case = create(&mut admin, &winner, 1).await;
        for stream in &mut streams {
            let mut received = Received::default();
            read_until(stream, &mut received, Duration::from_secs(30), |r| {
                r.events.iter().any(|e| e.case_id == case.id)
            })
            .await;
        }
    }
}

#[tokio::test]
async fn only_the_owner_may_watch_and_acknowledge_a_subscription() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut owner = app.client_for("owner", &["viewer"]).await;
    let mut other = app.client_for("other", &["viewer", "agent"]).await;
    let case = create(&mut admin, "ACME", 1).await;
    let mut stream = open(&mut owner, named("private", "", "", from_beginning())).await;
    let events = read_events(&mut stream, 1).await;
    drop(stream);

    let unknown = |status: Status, name: &str| {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(!status.message().contains("owner"), "{status:?}");
        let info = status.get_error_details();
        let resource = info.resource_info().expect("ResourceInfo");
        assert_eq!(resource.resource_name, name);
        assert_eq!(resource.owner, "");
    };
    // Another caller — an admin too — cannot watch it, acknowledge it, or
    // create one of that name, and is told the same as for no
    // subscription at all.
    for client in [&mut other, &mut admin] {
        for request in [
            resume("private"),
            named("private", &case.id, "", from_beginning()),
        ] {
            let status = client
                .watch_state_changes(request)
                .await
                .expect_err("not the owner");
            unknown(status, "private");
        }
        unknown(
            ack(client, "private", &events[0].cursor)
                .await
                .expect_err("not the owner"),
            "private",
        );
        unknown(
            ack(client, "nothing-here", &events[0].cursor)
                .await
                .expect_err("no such subscription"),
            "nothing-here",
        );
    }
    let still = listed(&mut admin, "private").await.expect("listed");
    assert_eq!(still.acknowledged_cursor, "", "nothing was acknowledged");
    assert_eq!(app.watch_streams(), 0);
    // The owner still can.
    ok_status(ack(&mut owner, "private", &events[0].cursor).await);
}

#[tokio::test]
async fn every_stream_of_a_subscription_applies_the_callers_account_access() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut wide = app.client_for("svc", &["viewer"]).await;
    let limited_token = app.token("svc", &["viewer"], Some(&["MINE"]));
    let mut limited = app.client_with(Some(&limited_token)).await;
    let mut stream = open(&mut wide, named("mixed", "", "", from_beginning())).await;
    let mine = create(&mut admin, "MINE", 1).await;
    create(&mut admin, "THEIRS", 1).await;
    ok(admin.submit_case(submit(&mine.id)).await);
    assert_eq!(exactly(&mut stream, 3).await.len(), 3);
    drop(stream);

    let mut narrow = open(&mut limited, resume("mixed")).await;
    let events = exactly(&mut narrow, 2).await;
    assert!(events.iter().all(|e| e.account_id == "MINE"), "{events:?}");
    // A limited token creates one like any watch: its snapshot too is
    // limited.
    let mut snapshot = open(
        &mut limited,
        named(
            "mine-only",
            "",
            "",
            Some(Start::WithSnapshot(WithSnapshot {})),
        ),
    )
    .await;
    let mut received = Received::default();
    read_until(&mut snapshot, &mut received, Duration::from_secs(30), |r| {
        r.snapshot_cursor.is_some()
    })
    .await;
    assert_eq!(
        received.snapshot.iter().map(|c| &c.id).collect::<Vec<_>>(),
        [&mine.id]
    );
}

#[tokio::test]
async fn admins_list_and_delete_subscriptions() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut names = Vec::new();
    for i in 0..7 {
        let owner = format!("owner-{}", i % 3);
        let mut client = app.client_for(&owner, &["viewer"]).await;
        let name = format!("sub.{i}_{}", ["x", "y", "z"][i % 3]);
        drop(open(&mut client, named(&name, "", "", None)).await);
        names.push((name, owner));
    }
    let listed = all_subscriptions(&mut admin, 3).await;
    let mut got: Vec<_> = listed
        .iter()
        .map(|s| (s.name.clone(), s.owner.clone()))
        .collect();
    let sorted = {
        let mut sorted = got.clone();
        sorted.sort();
        sorted
    };
    assert_eq!(got, sorted, "listed by name");
    got.sort();
    names.sort();
    assert_eq!(got, names);

    for (size, token) in [(-1, String::new()), (0, "garbage".to_owned())] {
        let status = admin
            .list_subscriptions(pb::ListSubscriptionsRequest {
                page_size: size,
                page_token: token,
            })
            .await
            .expect_err("a bad page request");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }

    let (gone, _) = names[0].clone();
    ok(admin
        .delete_subscription(pb::DeleteSubscriptionRequest { name: gone.clone() })
        .await);
    assert!(
        all_subscriptions(&mut admin, 50)
            .await
            .iter()
            .all(|s| s.name != gone)
    );
    let status = admin
        .delete_subscription(pb::DeleteSubscriptionRequest { name: gone.clone() })
        .await
        .expect_err("deleted already");
    assert_eq!(status.code(), Code::NotFound);
    let status = admin
        .delete_subscription(pb::DeleteSubscriptionRequest {
            name: "no spaces".into(),
        })
        .await
        .expect_err("a bad name");
    assert_eq!(violated_fields(&status), ["name"]);

    // Nobody else may list or delete.
    for roles in [&["viewer"][..], &["requester", "agent"]] {
        let mut client = app.client_for(&names[1].1, roles).await;
        let status = client
            .list_subscriptions(pb::ListSubscriptionsRequest::default())
            .await
            .expect_err("not an admin");
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = client
            .delete_subscription(pb::DeleteSubscriptionRequest {
                name: names[1].0.clone(),
            })
            .await
            .expect_err("not an admin, not even the owner");
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(reason(&status).0, "MISSING_ROLE");
    }
    assert_eq!(all_subscriptions(&mut admin, 50).await.len(), 6);
}

#[tokio::test]
async fn deleting_a_subscription_ends_its_streams_on_every_replica() {
    let database = cluster().new_database();
    let secret = format!("subs-{}", Uuid::new_v4().simple());
    let a = spawn_app_with(settings(&database, &secret), secret.clone()).await;
    let b = spawn_app_with(settings(&database, &secret), secret.clone()).await;
    let mut admin = a.admin().await;
    let mut on_a = a.client_for("svc", &["viewer"]).await;
    let mut on_b = b.client_for("svc", &["viewer"]).await;
    let mut first = open(&mut on_a, named("doomed", "", "", None)).await;
    let mut second = open(&mut on_b, resume("doomed")).await;
    let mut plain = open(&mut on_b, watch("", "", None)).await;
    let mut bystander = open(&mut on_b, named("bystander", "", "", None)).await;
    let case = create(&mut admin, "ACME", 1).await;
    for stream in [&mut first, &mut second, &mut plain, &mut bystander] {
        assert_eq!(read_events(stream, 1).await[0].case_id, case.id);
    }

    let deleted = tokio::time::Instant::now();
    ok(admin
        .delete_subscription(pb::DeleteSubscriptionRequest {
            name: "doomed".into(),
        })
        .await);
    for stream in [&mut first, &mut second] {
        let status = end_of(stream, Duration::from_secs(5)).await;
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        let (why, metadata) = reason(&status);
        assert_eq!(why, "SUBSCRIPTION_DELETED");
        assert_eq!(
            metadata.get("subscription").map(String::as_str),
            Some("doomed")
        );
        assert!(metadata.contains_key("cursor"));
    }
    eprintln!("streams ended {:?} after the delete", deleted.elapsed());
    // Other streams go on.
    ok(admin.submit_case(submit(&case.id)).await);
    for stream in [&mut plain, &mut bystander] {
        assert_eq!(
            read_events(stream, 1).await[0].action(),
            pb::state_change_event::Action::Submit
        );
    }
    // The name is free again: a watch naming it creates a new one.
    let mut renewed = open(&mut on_b, named("doomed", "", "", None)).await;
    ok(admin.assign_to_me(assign(&case.id)).await);
    assert_eq!(exactly(&mut renewed, 1).await.len(), 1);
}

/// A deletion whose notification no listener heard (here: the row deleted
/// by hand, then the listeners' connections ended) is found when the
/// listener reconnects: the subscription's streams check it.
#[tokio::test]
async fn a_deletion_no_listener_heard_ends_the_stream_once_the_listener_reconnects() {
    let app = spawn_app().await;
    let mut svc = app.client_for("svc", &["viewer"]).await;
    let mut stream = open(&mut svc, named("unheard", "", "", None)).await;
    let _ = read_until_progress(&mut stream, 1).await;
    let mut conn = AsyncPgConnection::establish(&app.database_url)
        .await
        .expect("a raw connection");
    diesel::sql_query("DELETE FROM subscriptions WHERE name = 'unheard'")
        .execute(&mut conn)
        .await
        .expect("delete by hand");
    // Still open: no one was told.
    let quiet = read_until_progress(&mut stream, 1).await;
    assert!(quiet.end.is_none());
    // The listener's connection: its LISTEN, then its presence checks.
    let ended = count_rows(
        &mut conn,
        "SELECT count(pg_terminate_backend(pid))::bigint AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND (query LIKE 'LISTEN%' OR query LIKE '%AS others FROM pg_locks%' \
                OR query LIKE '%pg_advisory_lock_shared%')",
    )
    .await;
    assert!(ended >= 1, "no listener connection to end");
    let status = end_of(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status).0, "SUBSCRIPTION_DELETED");
}

#[tokio::test]
async fn bad_names_and_cursors_are_refused_without_being_echoed() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut svc = app.client_for("svc", &["viewer"]).await;
    let long = "n".repeat(65);
    for bad in ["has space", "slash/name", "ünï", long.as_str()] {
        let status = svc
            .watch_state_changes(named(bad, "", "", None))
            .await
            .expect_err("a bad name");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(violated_fields(&status), ["subscription"]);
        let status = ack(&mut svc, bad, "AQAAAAAAAAABAAAAAAAAAAE")
            .await
            .expect_err("a bad name");
        assert_eq!(violated_fields(&status), ["subscription"]);
    }
    // Every problem at once.
    let status = svc
        .watch_state_changes(named("bad name", "not-a-case", "", None))
        .await
        .expect_err("two bad fields");
    assert_eq!(violated_fields(&status), ["subscription", "case_id"]);
    let status = ack(&mut svc, "", "").await.expect_err("nothing given");
    assert_eq!(violated_fields(&status), ["subscription", "cursor"]);

    let case = create(&mut admin, "ACME", 1).await;
    ok(admin.submit_case(submit(&case.id)).await);
    let before = history(&mut admin, &case.id).await;
    let start = Some(Start::AfterCursor(before[1].cursor.clone()));
    drop(open(&mut svc, named("checked", "", "", start)).await);
    let garbage = format!("{}!not-a-cursor", "Q".repeat(20_000));
    let ahead = cursor::encode_event(EventPosition {
        txid: 1 << 40,
        id: 1,
    });
    // The last one is before its start.
    for bad in [
        garbage.as_str(),
        "AQ",
        ahead.as_str(),
        before[0].cursor.as_str(),
    ] {
        let status = ack(&mut svc, "checked", bad)
            .await
            .expect_err("a bad cursor");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(violated_fields(&status), ["cursor"]);
        assert!(status.message().len() < 300, "{}", status.message());
    }
    assert_eq!(
        listed(&mut admin, "checked")
            .await
            .expect("listed")
            .acknowledged_cursor,
        ""
    );
    assert_eq!(app.watch_streams(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_has_at_most_a_hundred_subscriptions() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let svc = app.client_for("greedy", &["viewer"]).await;
    for i in 0..95 {
        let mut client = svc.clone();
        drop(open(&mut client, named(&format!("s{i:03}"), "", "", None)).await);
    }
    // The last ones at once: exactly five more fit.
    let racing: Vec<_> = (95..110)
        .map(|i| {
            let mut client = svc.clone();
            tokio::spawn(async move {
                client
                    .watch_state_changes(named(&format!("s{i:03}"), "", "", None))
                    .await
                    .map(drop)
            })
        })
        .collect();
    let mut created = 0;
    for task in racing {
        match task.await.expect("a watch") {
            Ok(()) => created += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let (why, metadata) = reason(&status);
                assert_eq!(why, "SUBSCRIPTION_LIMIT_REACHED");
                assert_eq!(metadata.get("limit").map(String::as_str), Some("100"));
            }
        }
    }
    assert_eq!(created, 5);
    let owned = all_subscriptions(&mut admin, 500).await;
    assert_eq!(owned.iter().filter(|s| s.owner == "greedy").count(), 100);
    // Existing ones are still watched; another owner is not limited by it.
    let mut client = svc.clone();
    drop(open(&mut client, resume("s000")).await);
    let mut other = app.client_for("modest", &["viewer"]).await;
    drop(open(&mut other, named("mine", "", "", None)).await);
    // Deleting one makes room.
    ok(admin
        .delete_subscription(pb::DeleteSubscriptionRequest {
            name: "s050".into(),
        })
        .await);
    drop(open(&mut client, named("s200", "", "", None)).await);
    let status = client
        .watch_state_changes(named("s201", "", "", None))
        .await
        .expect_err("at the limit again");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(app.watch_streams(), 0);
}

#[tokio::test]
async fn an_acknowledged_cursor_that_retention_pruned_past_is_expired() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut svc = app.client_for("svc", &["viewer"]).await;
    let mut stream = open(&mut svc, named("slow", "", "", from_beginning())).await;
    three_events(&mut admin, "ACME").await;
    let events = exactly(&mut stream, 3).await;
    drop(stream);
    ok_status(ack(&mut svc, "slow", &events[0].cursor).await);

    let store = Store::new(&app.database_url, &PoolSettings::default()).expect("store");
    // Another test's transaction on the same server may hold the horizon
    // below these events for a moment: prune until they are gone.
    let cutoff = chrono::Utc::now() + chrono::Duration::minutes(1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut pruned = 0;
    while pruned < 3 && tokio::time::Instant::now() < deadline {
        pruned += store.prune_events(cutoff, 1000).await.expect("prune");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pruned, 3);
    let status = svc
        .watch_state_changes(resume("slow"))
        .await
        .expect_err("pruned past");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let (why, metadata) = reason(&status);
    assert_eq!(why, "CURSOR_EXPIRED");
    assert_eq!(
        metadata.get("resumeWith").map(String::as_str),
        Some("with_snapshot")
    );
    // Acknowledging the last pruned event (nothing after it is lost)
    // makes it resumable again.
    ok_status(ack(&mut svc, "slow", &events[2].cursor).await);
    let mut stream = open(&mut svc, resume("slow")).await;
    let case = create(&mut admin, "ACME", 1).await;
    assert_eq!(exactly(&mut stream, 1).await[0].case_id, case.id);
}

#[tokio::test]
async fn the_database_refuses_subscription_rows_that_break_its_rules() {
    let app = spawn_app().await;
    let mut svc = app.client_for("svc", &["viewer"]).await;
    drop(open(&mut svc, named("ruled", "", "", from_beginning())).await);
    let mut conn = AsyncPgConnection::establish(&app.database_url)
        .await
        .expect("a raw connection");
    let cases = [
        ("UPDATE subscriptions SET name = 'a b'", "subscription_name"),
        ("UPDATE subscriptions SET start_id = -1", "log_position"),
        (
            "UPDATE subscriptions SET position_txid = 0, position_id = 0, start_txid = 5",
            "subscription_is_consistent",
        ),
        (
            "UPDATE subscriptions SET snapshot_in_progress = '{1}'",
            "subscription_is_consistent",
        ),
        (
            "UPDATE subscriptions SET snapshot_xmax = start_txid",
            "subscription_is_consistent",
        ),
    ];
    for (sql, rule) in cases {
        let error = diesel::sql_query(sql)
            .execute(&mut conn)
            .await
            .err()
            .unwrap_or_else(|| panic!("the database accepted: {sql}"))
            .to_string();
        assert!(
            error.contains(rule),
            "{sql}: refused by something else: {error}"
        );
    }
    // Names are one namespace.
    let error = diesel::sql_query(
        "INSERT INTO subscriptions SELECT gen_random_uuid(), name, 'someone', case_id, \
         account_id, start_txid, start_id, snapshot_xmax, snapshot_in_progress, position_txid, \
         position_id, create_time, acknowledge_time FROM subscriptions",
    )
    .execute(&mut conn)
    .await
    .expect_err("a second subscription of one name")
    .to_string();
    assert!(error.contains("subscriptions_name_key"), "{error}");
    let names: HashSet<String> = all_subscriptions(&mut app.admin().await, 50)
        .await
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, HashSet::from(["ruled".to_owned()]));
}
