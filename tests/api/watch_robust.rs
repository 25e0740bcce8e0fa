//! WatchStateChanges under stress: concurrent and rolled-back writers,
//! several replicas, server and PostgreSQL restarts, clients that never
//! read. Each test compares what streams delivered with what the database
//! committed.

use std::{collections::HashMap, time::Duration};

use diesel::{
    QueryableByName,
    sql_types::{BigInt, Text},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use invoice_cases::{
    embedded::EmbeddedPostgres,
    pb::{
        self,
        watch_state_changes_request::{FromBeginning, Start},
    },
};
use rand::Rng;
use tonic::Code;
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::{helpers::*, process::*, watch_helpers::*};

#[derive(QueryableByName, Debug, Clone, PartialEq, Eq)]
struct CommittedEvent {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    case_id: String,
    #[diesel(sql_type = Text)]
    etag: String,
}

/// Every committed event, by id.
async fn committed(database_url: &str) -> Vec<CommittedEvent> {
    let mut conn = AsyncPgConnection::establish(database_url)
        .await
        .expect("connect");
    diesel::sql_query("SELECT id, case_id::text AS case_id, etag FROM case_events ORDER BY id")
        .load(&mut conn)
        .await
        .expect("read the events")
}

/// The size of every stored event's changes, in bytes.
async fn committed_bytes(database_url: &str) -> usize {
    #[derive(QueryableByName)]
    struct Size {
        #[diesel(sql_type = BigInt)]
        bytes: i64,
    }
    let mut conn = AsyncPgConnection::establish(database_url)
        .await
        .expect("connect");
    let size: Size = diesel::sql_query(
        "SELECT coalesce(sum(length(changes::text)), 0)::bigint AS bytes FROM case_events",
    )
    .get_result(&mut conn)
    .await
    .expect("sum the events");
    usize::try_from(size.bytes).unwrap_or(0)
}

/// Checks that `streamed` holds every committed event exactly once, and
/// each case's events in commit order.
fn assert_exactly_committed(streamed: &[pb::StateChangeEvent], committed: &[CommittedEvent]) {
    let mut seen = HashMap::new();
    for event in streamed {
        *seen.entry(key(event)).or_insert(0) += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "events delivered more than once: {repeated:?}"
    );
    assert_eq!(
        streamed.len(),
        committed.len(),
        "delivered {} events, {} committed",
        streamed.len(),
        committed.len()
    );
    for event in committed {
        assert!(
            seen.contains_key(&(event.case_id.clone(), event.etag.clone())),
            "committed event {event:?} was not delivered"
        );
    }
    // Per case, the stream order is the commit order (ids of one case are
    // taken under its lock, so they follow commit order).
    let mut expected: HashMap<&str, Vec<&str>> = HashMap::new();
    for event in committed {
        expected
            .entry(&event.case_id)
            .or_default()
            .push(&event.etag);
    }
    let mut delivered: HashMap<&str, Vec<&str>> = HashMap::new();
    for event in streamed {
        delivered
            .entry(&event.case_id)
            .or_default()
            .push(&event.etag);
    }
    assert_eq!(delivered, expected, "per-case order");
}

/// Drives `cases` cases of `account` through a whole lifecycle (7 events
/// each), retrying calls the server could not answer (with request ids, so
/// retries are safe).
async fn churn(client: &mut Client, account: &str, cases: usize) {
    for _ in 0..cases {
        let create = pb::CreateInvoiceCaseRequest {
            invoice_case: Some(new_case(account, 2)),
            request_id: Uuid::new_v4().to_string(),
            comment: String::new(),
        };
        let case = loop {
            match client.create_invoice_case(create.clone()).await {
                Ok(response) => break response.into_inner(),
                Err(s)
                    if matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Internal) =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(s) => panic!("create failed: {s:?}"),
            }
        };
        let id = case.id.clone();
        macro_rules! step {
            ($method:ident, $request:expr) => {{
                let mut request = $request;
                request.request_id = Uuid::new_v4().to_string();
                loop {
                    match client.$method(request.clone()).await {
                        Ok(_) => break,
                        Err(s)
                            if matches!(
                                s.code(),
                                Code::Unavailable | Code::Unknown | Code::Internal
                            ) =>
                        {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(s) => panic!("{} failed: {s:?}", stringify!($method)),
                    }
                }
            }};
        }
        step!(submit_case, submit(&id));
        step!(assign_to_me, assign(&id));
        step!(request_information, request_info(&id));
        step!(information_received, info_received(&id));
        step!(propose_solution, propose_all(&id));
        step!(close_case, close(&id));
    }
}

/// Inserts one event for `case` in a transaction that stays open for
/// `hold` and then commits or rolls back — an honest event writer (it takes
/// the event locks) that commits out of id order.
async fn slow_raw_event(
    database_url: &str,
    case: &pb::InvoiceCase,
    etag: &str,
    hold: Duration,
    commit: bool,
) {
    let mut conn = AsyncPgConnection::establish(database_url)
        .await
        .expect("connect");
    let case_id = case.id.clone();
    let number = case.number.clone();
    let account = case.account_id.clone();
    let etag = etag.to_owned();
    let result: Result<(), diesel::result::Error> = conn
        .transaction(async |conn| {
            diesel::sql_query(format!("SELECT lock_for_event('{case_id}')"))
                .execute(conn)
                .await?;
            let changes = format!(
                r#"[{{"entity":"CASE","id":"{case_id}","number":"{number}","cause":"DIRECT","from":"DRAFT","to":"DRAFT"}}]"#
            );
            diesel::sql_query(
                "INSERT INTO case_events (case_id, case_number, account_id, action, actor, \
                 occur_time, etag, changes) \
                 VALUES ($1::uuid, $2, $3, 'SET_LINE_STATE', 'raw-writer', now(), $4, $5::jsonb)",
            )
            .bind::<Text, _>(&case_id)
            .bind::<Text, _>(&number)
            .bind::<Text, _>(&account)
            .bind::<Text, _>(&etag)
            .bind::<Text, _>(&changes)
            .execute(conn)
            .await?;
            tokio::time::sleep(hold).await;
            if commit {
                Ok(())
            } else {
                Err(diesel::result::Error::RollbackTransaction)
            }
        })
        .await;
    match result {
        Ok(()) | Err(diesel::result::Error::RollbackTransaction) => {}
        Err(e) => panic!("raw writer failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_with_rollbacks_deliver_exactly_the_committed_events() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut stream = open(&mut admin, watch("", "", None)).await;
    // Cases that only the raw writers touch.
    let mut raw_cases = Vec::new();
    for _ in 0..3 {
        raw_cases.push(create(&mut admin, "RAW", 1).await);
    }

    let mut writers = Vec::new();
    for w in 0..5 {
        let mut client = app.admin().await;
        writers.push(tokio::spawn(async move {
            churn(&mut client, &format!("ACCOUNT-{w}"), 4).await;
        }));
    }
    for (w, case) in raw_cases.iter().enumerate() {
        let url = app.database_url.clone();
        let case = case.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..12 {
                let (hold, commit) = {
                    let mut rng = rand::rng();
                    (
                        Duration::from_millis(rng.random_range(0..250)),
                        rng.random_bool(0.6),
                    )
                };
                slow_raw_event(&url, &case, &format!("raw-{w}-{i}"), hold, commit).await;
            }
        }));
    }
    // Some refused actions roll back too.
    for case in &raw_cases {
        expect_code(
            admin.close_case(close(&case.id)).await,
            Code::FailedPrecondition,
        );
    }
    for writer in writers {
        writer.await.expect("writer");
    }

    let committed = committed(&app.database_url).await;
    let mut received = Received::default();
    let expected = committed.len();
    read_until(&mut stream, &mut received, Duration::from_secs(60), |r| {
        r.events.len() >= expected
    })
    .await;
    let quiet = read_until_progress(&mut stream, 1).await;
    received.events.extend(quiet.events);
    assert_exactly_committed(&received.events, &committed);
    let rolled_back = 36
        - committed
            .iter()
            .filter(|e| e.etag.starts_with("raw-"))
            .count();
    assert!(rolled_back > 0, "some raw transactions were rolled back");
}

#[tokio::test]
async fn a_subscriber_on_one_replica_sees_changes_made_through_another() {
    let Deployment {
        database_url,
        secret,
        admin_token: token,
    } = Deployment::new();
    let a = start_server(&database_url, &secret, None, &[]).await;
    let b = start_server(&database_url, &secret, None, &[]).await;
    let mut on_a = client(a.addr, &token).await;
    let mut on_b = client(b.addr, &token).await;

    let mut stream = open(&mut on_a, watch("", "", None)).await;
    churn(&mut on_b, "ACME", 2).await;
    let events = read_events(&mut stream, 14).await;
    let quiet = read_until_progress(&mut stream, 1).await;
    assert!(quiet.events.is_empty());
    assert_exactly_committed(&events, &committed(&database_url).await);
}

/// A client of `addr`, waiting while the server is down.
async fn connect(addr: std::net::SocketAddr, token: &str) -> Client {
    loop {
        match tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
        {
            Ok(channel) => return authorized(channel, token),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Follows a stream across interruptions: on an error or end, reconnects
/// (to whatever `connect` gives) and resumes after the last cursor — the one
/// in the status when it carries one, else the last event's.
async fn follow_until(
    addr: std::net::SocketAddr,
    token: &str,
    start: Option<Start>,
    mut done: impl FnMut(&[pb::StateChangeEvent]) -> bool,
    limit: Duration,
) -> (Vec<pb::StateChangeEvent>, usize) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut events: Vec<pb::StateChangeEvent> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut interruptions = 0;
    while !done(&events) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up after {} events",
            events.len()
        );
        let mut client = connect(addr, token).await;
        let request = watch(
            "",
            "",
            match &cursor {
                Some(cursor) => Some(Start::AfterCursor(cursor.clone())),
                None => start.clone(),
            },
        );
        let mut stream = match client.watch_state_changes(request).await {
            Ok(stream) => stream.into_inner(),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        loop {
            if done(&events) {
                break;
            }
            match tokio::time::timeout_at(deadline, stream.message()).await {
                Err(_) => panic!("stalled after {} events", events.len()),
                Ok(Ok(Some(message))) => match message.kind {
                    Some(pb::watch_state_changes_response::Kind::Event(event)) => {
                        cursor = Some(event.cursor.clone());
                        events.push(event);
                    }
                    Some(pb::watch_state_changes_response::Kind::Progress(progress)) => {
                        cursor = Some(progress.cursor);
                    }
                    _ => {}
                },
                Ok(Ok(None)) => panic!("a stream ended without a status"),
                Ok(Err(status)) => {
                    interruptions += 1;
                    if let Some(resume) = status
                        .get_error_details()
                        .error_info()
                        .and_then(|info| info.metadata.get("cursor").cloned())
                    {
                        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                        cursor = Some(resume);
                    }
                    break;
                }
            }
        }
    }
    (events, interruptions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_restarts_mid_stream_and_the_client_resumes() {
    let Deployment {
        database_url,
        secret,
        admin_token: token,
    } = Deployment::new();
    let port = free_port();
    let watched = std::sync::Arc::new(tokio::sync::Mutex::new(Some(
        start_server(&database_url, &secret, Some(port), &[]).await,
    )));
    let writer_server = start_server(&database_url, &secret, None, &[]).await;
    let mut writer_client = client(writer_server.addr, &token).await;
    // The writer keeps writing across both restarts (about 8 s).
    let cases = 30;
    let writer = tokio::spawn(async move {
        for _ in 0..cases {
            churn(&mut writer_client, "ACME", 1).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });

    // Restart the watched server twice while the writer runs: gracefully
    // (SIGTERM: streams end with UNAVAILABLE and a cursor), then abruptly
    // (SIGKILL: the client resumes from the last event it processed).
    let restarter = {
        let watched = watched.clone();
        let database_url = database_url.url.clone();
        let secret = secret.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let server = watched.lock().await.take().expect("server");
            let status = server.terminate().await.expect("SIGTERM the server");
            assert!(status.success(), "SIGTERM exit: {status:?}");
            *watched.lock().await =
                Some(start_server(&database_url, &secret, Some(port), &[]).await);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let server = watched.lock().await.take().expect("server");
            server.kill().await.expect("kill the server");
            *watched.lock().await =
                Some(start_server(&database_url, &secret, Some(port), &[]).await);
        })
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let total = cases * 7;
    let (events, interruptions) = follow_until(
        addr,
        &token,
        Some(Start::FromBeginning(FromBeginning {})),
        |events| events.len() >= total,
        Duration::from_secs(120),
    )
    .await;
    writer.await.expect("writer");
    restarter.await.expect("restarter");
    assert!(
        interruptions >= 2,
        "the stream was interrupted {interruptions} times"
    );
    assert_exactly_committed(&events, &committed(&database_url).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarts_mid_stream_and_nothing_is_lost() {
    // A cluster of this test's own: it is stopped and started.
    let dir = std::env::temp_dir().join(format!(
        "invoice-cases-pg-restart-{}",
        Uuid::new_v4().simple()
    ));
    let mut postgres = EmbeddedPostgres::start(&dir, None)
        .await
        .expect("start PostgreSQL");
    let app = spawn_app_on(&postgres.database_url()).await;
    let mut admin = app.admin().await;
    let mut writer_client = app.admin().await;
    let writer = tokio::spawn(async move {
        churn(&mut writer_client, "ACME", 8).await;
    });
    let total = 8 * 7;
    let follower = {
        let app_addr = app.addr;
        let token = app.token("admin", &["admin"], None);
        tokio::spawn(async move {
            follow_until(
                app_addr,
                &token,
                Some(Start::FromBeginning(FromBeginning {})),
                |events| events.len() >= total,
                Duration::from_secs(120),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    postgres.kill().await.expect("stop PostgreSQL");
    // While it is down, calls fail fast with UNAVAILABLE.
    let status = admin
        .get_invoice_case(pb::GetInvoiceCaseRequest {
            case_id: "INVCS0001001".into(),
        })
        .await
        .expect_err("the database is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    postgres.restart().await.expect("restart PostgreSQL");
    writer.await.expect("writer");
    let (events, _) = follower.await.expect("follower");
    assert_exactly_committed(&events, &committed(&postgres.database_url()).await);
    postgres.stop().await.expect("stop PostgreSQL");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_that_never_reads_costs_bounded_memory_and_delays_no_one() {
    let Deployment {
        database_url,
        secret,
        admin_token: token,
    } = Deployment::new();
    let server = start_server(
        &database_url,
        &secret,
        None,
        &[
            "--watch-ring-capacity",
            "64",
            "--watch-subscriber-buffer",
            "8",
        ],
    )
    .await;
    let mut admin = client(server.addr, &token).await;
    let mut stuck_client = client(server.addr, &token).await;
    let _stuck = open(&mut stuck_client, watch("", "", None)).await; // never read
    let mut reader_client = client(server.addr, &token).await;
    let mut reader = open(&mut reader_client, watch("", "", None)).await;

    // Big events: creating and canceling a case of 1000 lines each record
    // 1001 changes (about 150 KB of event). A first phase brings the
    // server's allocations to their working size; during the second,
    // memory must not follow the volume streamed past the stuck client.
    let (warmup, measured) = (40, 80);
    let reading = tokio::spawn(async move {
        let mut received = Received::default();
        read_until(&mut reader, &mut received, Duration::from_secs(300), |r| {
            r.events.len() >= (warmup + measured) * 2
        })
        .await;
        received.events
    });
    async fn big_rounds(admin: &mut Client, rounds: usize) {
        for _ in 0..rounds {
            let case = create(admin, "BIG", 1000).await;
            ok(admin.cancel_case(cancel(&case.id)).await);
        }
    }
    big_rounds(&mut admin, warmup).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib().expect("VmRSS");
    let bytes_before = committed_bytes(&database_url).await;
    big_rounds(&mut admin, measured).await;
    let events = reading.await.expect("reader");
    let after = server.rss_kib().expect("VmRSS");
    let streamed_kib = (committed_bytes(&database_url).await - bytes_before) / 1024;
    let growth_kib = after.saturating_sub(before) as usize;
    eprintln!(
        "server RSS {before} KiB -> {after} KiB (+{growth_kib} KiB) while {streamed_kib} KiB of \
         events streamed past a client that never reads"
    );
    assert_eq!(
        events.len(),
        (warmup + measured) * 2,
        "the reading client got every event"
    );
    assert!(
        growth_kib < streamed_kib / 4,
        "server memory grew by {growth_kib} KiB for {streamed_kib} KiB of events"
    );
}

/// A catch-up read that runs out of time (here: the events table is locked
/// for longer than the statement timeout) is retried, not the end of the
/// stream: the events arrive once the lock is gone.
#[tokio::test]
async fn a_catch_up_read_that_times_out_is_retried() {
    let database_url = cluster().new_database();
    let secret = format!("test-secret-{}", uuid::Uuid::new_v4().simple());
    let mut settings = settings(&database_url, &secret);
    settings.pool.statement_timeout = Duration::from_millis(150);
    let app = spawn_app_with(settings, secret).await;
    let mut admin = app.admin().await;
    let case = create(&mut admin, "ACME", 1).await;
    ok(admin.submit_case(submit(&case.id)).await);

    let lock = lock_table(&database_url, "case_events").await;
    let mut stream = open(
        &mut admin,
        watch(&case.id, "", Some(Start::FromBeginning(FromBeginning {}))),
    )
    .await;
    // Several reads time out meanwhile.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    lock.end("ROLLBACK").await;
    let events = read_events(&mut stream, 2).await;
    assert_eq!(events, history(&mut admin, &case.id).await);
}
