//! Graceful shutdown on SIGTERM and SIGINT: health, refused calls, calls
//! in flight, watch streams and their cursors, and the hard deadline.

use std::{collections::HashSet, time::Duration};

use diesel::{QueryableByName, sql_types::Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use invoice_cases::pb::{self, StateChangeEvent, watch_state_changes_request::Start};
use tokio::time::Instant;
use tonic::{Code, Status, Streaming};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt;

use crate::{
    binary::{Binary, Options, channel},
    helpers::*,
    watch_helpers::{key, open, read_events, watch},
};

type Watch = Streaming<pb::WatchStateChangesResponse>;

/// A health Watch stream, after its first (SERVING) message.
async fn health_watch(server: &Binary) -> Streaming<tonic_health::pb::HealthCheckResponse> {
    let mut stream = HealthClient::new(channel(server.addr).await)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let first = stream.message().await.expect("health").expect("a status");
    assert_eq!(first.status(), ServingStatus::Serving);
    stream
}

/// Reads the next health status within `limit`.
async fn next_health(
    stream: &mut Streaming<tonic_health::pb::HealthCheckResponse>,
    limit: Duration,
) -> Result<ServingStatus, String> {
    match tokio::time::timeout(limit, stream.message()).await {
        Err(_) => Err(format!("no health change within {limit:?}")),
        Ok(Ok(Some(message))) => Ok(message.status()),
        Ok(Ok(None)) => Err("the health stream ended".into()),
        Ok(Err(status)) => Err(format!("the health stream failed: {status:?}")),
    }
}

/// How a watch stream ended.
#[derive(Debug)]
enum End {
    Status(Status),
    /// The stream ended without an error status (grpc-status OK).
    Clean,
    /// Nothing came within the limit.
    Silent,
}

/// Reads a stream to its end: its events and how it ended.
async fn read_to_end(stream: &mut Watch, limit: Duration) -> (Vec<StateChangeEvent>, End) {
    use pb::watch_state_changes_response::Kind;
    let deadline = Instant::now() + limit;
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => return (events, End::Silent),
            Ok(Ok(None)) => return (events, End::Clean),
            Ok(Err(status)) => return (events, End::Status(status)),
            Ok(Ok(Some(message))) => {
                if let Some(Kind::Event(event)) = message.kind {
                    events.push(event);
                }
            }
        }
    }
}

/// The resume cursor of an interrupted stream's status, or why there is
/// none.
fn resume_cursor(end: &End) -> Result<String, String> {
    match end {
        End::Status(status) => {
            if status.code() != Code::Unavailable {
                return Err(format!("ended with {status:?}, not UNAVAILABLE"));
            }
            let details = status.get_error_details();
            let info = details
                .error_info()
                .ok_or_else(|| format!("UNAVAILABLE without ErrorInfo: {status:?}"))?;
            info.metadata
                .get("cursor")
                .cloned()
                .ok_or_else(|| format!("ErrorInfo without a cursor: {info:?}"))
        }
        other => Err(format!(
            "the stream ended {other:?} instead of UNAVAILABLE with a cursor"
        )),
    }
}

#[derive(QueryableByName, Debug)]
struct Committed {
    #[diesel(sql_type = Text)]
    case_id: String,
    #[diesel(sql_type = Text)]
    etag: String,
}

/// Every committed event, as (case id, etag).
async fn committed(database_url: &str) -> Vec<(String, String)> {
    let mut conn = AsyncPgConnection::establish(database_url)
        .await
        .expect("connect");
    diesel::sql_query("SELECT case_id::text AS case_id, etag FROM case_events ORDER BY id")
        .load::<Committed>(&mut conn)
        .await
        .expect("read the events")
        .into_iter()
        .map(|c| (c.case_id, c.etag))
        .collect()
}

/// Checks that `before` then `after` hold every committed event once.
fn assert_exactly_once(
    before: &[StateChangeEvent],
    after: &[StateChangeEvent],
    committed: &[(String, String)],
) {
    let mut seen = HashSet::new();
    let repeated: Vec<_> = before
        .iter()
        .chain(after)
        .map(key)
        .filter(|k| !seen.insert(k.clone()))
        .collect();
    assert!(
        repeated.is_empty(),
        "events delivered again after resuming: {repeated:?}"
    );
    let expected: HashSet<_> = committed.iter().cloned().collect();
    let missing: Vec<_> = expected.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "committed events never delivered (the cursor skipped them): {missing:?}"
    );
    assert_eq!(
        seen.len(),
        expected.len(),
        "delivered only committed events"
    );
}

/// Resumes from `cursor` on `server` and reads until every committed event
/// not in `before` came.
async fn resume(
    server: &Binary,
    cursor: &str,
    before: &[StateChangeEvent],
    database_url: &str,
) -> Vec<StateChangeEvent> {
    let mut client = server.admin().await;
    let mut stream = open(
        &mut client,
        watch("", "", Some(Start::AfterCursor(cursor.to_owned()))),
    )
    .await;
    let expected = committed(database_url).await.len() - before.len();
    let mut events = Vec::new();
    if expected > 0 {
        events = read_events(&mut stream, expected).await;
    }
    // Nothing more comes (a duplicate would).
    let extra = read_to_end(&mut stream, Duration::from_millis(1500)).await;
    events.extend(extra.0);
    events
}

/// Creates `n` cases of `lines` lines, one event each.
async fn create_cases(client: &mut Client, n: usize, lines: usize) {
    for _ in 0..n {
        create(client, "ACME", lines).await;
    }
}

/// Events enough to fill what a client that stops reading can hold back:
/// its 64 KiB window, the server's HTTP/2 send buffer (about 400 KiB) and
/// the stream's buffer of messages. Returns the bytes of events made.
async fn fill_a_stuck_stream(client: &mut Client) -> usize {
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..40 {
        let case = create(client, "ACME", 300).await;
        bytes += prost::Message::encoded_len(&case);
    }
    eprintln!(
        "made 40 events of 300 lines (about {} KiB) in {:?}",
        bytes / 1024,
        started.elapsed()
    );
    bytes
}

#[derive(QueryableByName)]
struct State {
    #[diesel(sql_type = Text)]
    state: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_call_in_flight_and_refuses_new_ones() {
    let database_url = cluster().new_database();
    let mut server = Binary::start(Options::new(&database_url).args(&[
        "--drain-timeout-seconds",
        "10",
        "--shutdown-deadline-seconds",
        "20",
    ]))
    .await;
    let mut admin = server.admin().await;
    let case = create(&mut admin, "ACME", 2).await;
    let mut health = health_watch(&server).await;

    // Hold the case's row lock: the SubmitCase below waits for it.
    let mut lock = AsyncPgConnection::establish(&database_url)
        .await
        .expect("connect");
    lock.batch_execute(&format!(
        "BEGIN; SELECT id FROM invoice_cases WHERE id = '{}' FOR UPDATE",
        case.id
    ))
    .await
    .expect("lock the case");
    let mut submitter = server.admin().await;
    let id = case.id.clone();
    let in_flight = tokio::spawn(async move {
        let started = Instant::now();
        let result = submitter.submit_case(submit(&id)).await;
        (result, started.elapsed())
    });
    // Until the call waits on the lock in the database.
    let mut observer = AsyncPgConnection::establish(&database_url)
        .await
        .expect("connect");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = crate::helpers::count_rows(
            &mut observer,
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'invoice-cases' AND wait_event_type = 'Lock'",
        )
        .await;
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SubmitCase never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let signalled = Instant::now();
    server.signal(libc::SIGTERM);

    // Health goes NOT_SERVING at once.
    let status = next_health(&mut health, Duration::from_secs(1)).await;
    let health_after = signalled.elapsed();
    drop(health);
    assert_eq!(
        status,
        Ok(ServingStatus::NotServing),
        "health right after SIGTERM"
    );
    eprintln!("NOT_SERVING {health_after:?} after SIGTERM");

    // New calls are refused, on a new connection and on an open one.
    let started = Instant::now();
    let fresh = tokio::time::timeout(Duration::from_secs(3), async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
            .expect("uri")
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // No token: served, it would be UNAUTHENTICATED.
        pb::invoice_case_service_client::InvoiceCaseServiceClient::new(channel)
            .get_invoice_case(pb::GetInvoiceCaseRequest {
                case_id: case.id.clone(),
            })
            .await
            .map(|_| ())
            .map_err(|status| {
                if status.code() == Code::Unavailable {
                    format!("call: {status:?}")
                } else {
                    format!("served: {status:?}")
                }
            })
    })
    .await;
    eprintln!(
        "a new connection after SIGTERM: {:?} in {:?}",
        fresh,
        started.elapsed()
    );
    assert!(
        matches!(&fresh, Ok(Err(e)) if !e.starts_with("served")),
        "a new connection after SIGTERM is refused at once (or its call with UNAVAILABLE), \
         not served or left hanging: {fresh:?}"
    );
    let started = Instant::now();
    let reused = tokio::time::timeout(
        Duration::from_secs(3),
        admin.get_invoice_case(pb::GetInvoiceCaseRequest {
            case_id: case.id.clone(),
        }),
    )
    .await;
    eprintln!(
        "a new call on an open connection after SIGTERM: {:?} in {:?}",
        reused.as_ref().map(|r| r.as_ref().err().map(Status::code)),
        started.elapsed()
    );
    // UNAVAILABLE, which clients retry elsewhere: SERVER_SHUTTING_DOWN from
    // the server, or a refused reconnect once the connection has gone.
    assert!(
        matches!(&reused, Ok(Err(status)) if status.code() == Code::Unavailable),
        "a new call on an open connection after SIGTERM is refused with UNAVAILABLE: {reused:?}"
    );
    assert!(!in_flight.is_finished(), "the call is still in flight");

    // The lock goes: the call in flight finishes and commits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    lock.batch_execute("COMMIT")
        .await
        .expect("release the lock");
    let (result, took) = in_flight.await.expect("the call's task");
    let submitted = match result {
        Ok(response) => response.into_inner(),
        Err(status) => panic!(
            "the call in flight at SIGTERM failed after {took:?}: {status:?}\n{}",
            server.logs().join("\n")
        ),
    };
    assert_eq!(submitted.state(), pb::invoice_case::State::New);
    let stored: State = diesel::sql_query(format!(
        "SELECT state FROM invoice_cases WHERE id = '{}'",
        case.id
    ))
    .get_result(&mut observer)
    .await
    .expect("read the case");
    assert_eq!(stored.state, "NEW", "the call's change is committed");

    let status = server.wait_exit(Duration::from_secs(25)).await;
    let exited = signalled.elapsed();
    eprintln!(
        "exit {status:?} {exited:?} after SIGTERM; the call took {took:?}; logs:\n{}",
        server.logs_since(0)
    );
    let status = status.expect("the server exits");
    assert!(status.success(), "exit status {status}");
    assert!(
        exited < Duration::from_secs(10),
        "exited {exited:?} after SIGTERM: later than the drain timeout although every call ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_watch_streams_with_a_cursor_that_resumes_after_the_last_event() {
    let database_url = cluster().new_database();
    let mut server = Binary::start(Options::new(&database_url)).await;
    let mut admin = server.admin().await;
    let mut watcher = server.admin().await;
    let mut stream = open(&mut watcher, watch("", "", None)).await;
    create_cases(&mut admin, 4, 2).await;
    let mut delivered = read_events(&mut stream, 4).await;

    server.signal(libc::SIGTERM);
    let (rest, end) = read_to_end(&mut stream, Duration::from_secs(5)).await;
    delivered.extend(rest);
    eprintln!("the stream ended with {end:?}");
    let cursor = resume_cursor(&end).unwrap_or_else(|e| panic!("{e}"));
    let last = delivered.last().expect("events").cursor.clone();
    eprintln!("resume cursor {cursor}; the last delivered event's cursor {last}");
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert!(status.is_some_and(|s| s.success()), "exit {status:?}");

    // More events while no server runs this stream, then a new server.
    let next = Binary::start(Options::new(&database_url)).await;
    let mut admin = next.admin().await;
    create_cases(&mut admin, 3, 2).await;
    let resumed = resume(&next, &cursor, &delivered, &database_url).await;
    assert_eq!(resumed.len(), 3, "exactly the events after the last one");
    assert_exactly_once(&delivered, &resumed, &committed(&database_url).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_stream_behind_its_client_at_sigterm_still_ends_with_a_resumable_cursor() {
    let database_url = cluster().new_database();
    let mut server = Binary::start(Options::new(&database_url)).await;
    let mut admin = server.admin().await;
    let mut watcher =
        crate::binary::small_window_client(server.addr, &server.token("admin", &["admin"])).await;
    let mut stream = open(&mut watcher, watch("", "", None)).await;
    create_cases(&mut admin, 2, 2).await;
    let mut delivered = read_events(&mut stream, 2).await;
    // The client stops reading while big events fill its HTTP/2 window
    // and the buffers on the server: the stream waits for the client.
    fill_a_stuck_stream(&mut admin).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;

    server.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The client reads again: what was sent, then the end.
    let (rest, end) = read_to_end(&mut stream, Duration::from_secs(8)).await;
    delivered.extend(rest);
    eprintln!(
        "a client behind by 40 events at SIGTERM got {} events in all, then {end:?}",
        delivered.len()
    );
    let status = server.wait_exit(Duration::from_secs(15)).await;
    eprintln!("exit {status:?}");
    let cursor = match resume_cursor(&end) {
        Ok(cursor) => cursor,
        Err(e) => panic!(
            "a stream whose client was behind at SIGTERM: {e}; the client cannot resume \
             (delivered {} of {} events)",
            delivered.len(),
            committed(&database_url).await.len()
        ),
    };
    let next = Binary::start(Options::new(&database_url)).await;
    let mut admin = next.admin().await;
    create_cases(&mut admin, 2, 2).await;
    let resumed = resume(&next, &cursor, &delivered, &database_url).await;
    assert_exactly_once(&delivered, &resumed, &committed(&database_url).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_exits_by_the_hard_deadline_with_a_client_that_never_reads() {
    let database_url = cluster().new_database();
    let deadline = 3;
    let mut server = Binary::start(Options::new(&database_url).args(&[
        "--drain-timeout-seconds",
        "30",
        "--shutdown-deadline-seconds",
        &deadline.to_string(),
    ]))
    .await;
    let mut admin = server.admin().await;
    let mut stuck_client =
        crate::binary::small_window_client(server.addr, &server.token("admin", &["admin"])).await;
    let _stuck = open(&mut stuck_client, watch("", "", None)).await; // never read
    fill_a_stuck_stream(&mut admin).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mark = server.log_mark();

    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    let limit = Duration::from_secs(deadline + 2);
    let status = server.wait_exit(Duration::from_secs(deadline + 30)).await;
    let exited = signalled.elapsed();
    eprintln!(
        "SIGTERM with a watch client that never reads (--drain-timeout-seconds 30 \
         --shutdown-deadline-seconds {deadline}):\n{}\nexit status {status:?} after {exited:?}",
        server.logs_since(mark)
    );
    let status = status.expect("the server exits");
    assert!(
        exited >= Duration::from_secs(deadline) - Duration::from_millis(500),
        "the server exited {exited:?} after SIGTERM, before the deadline: the stuck client \
         did not hold the shutdown, so this test no longer tests the deadline"
    );
    assert!(
        exited <= limit,
        "exited {exited:?} after SIGTERM; the hard deadline is {deadline} s"
    );
    assert!(
        status.code().is_some(),
        "the process exits by itself, not by a signal: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_shuts_down_gracefully_too() {
    let database_url = cluster().new_database();
    let mut server = Binary::start(Options::new(&database_url)).await;
    let mut admin = server.admin().await;
    let mut watcher = server.admin().await;
    let mut stream = open(&mut watcher, watch("", "", None)).await;
    create_cases(&mut admin, 1, 1).await;
    let delivered = read_events(&mut stream, 1).await;
    let mut health = health_watch(&server).await;

    let signalled = Instant::now();
    server.signal(libc::SIGINT);
    assert_eq!(
        next_health(&mut health, Duration::from_secs(1)).await,
        Ok(ServingStatus::NotServing)
    );
    drop(health);
    let (_, end) = read_to_end(&mut stream, Duration::from_secs(5)).await;
    let cursor = resume_cursor(&end).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "SIGINT: stream ended with cursor {cursor} (last event's: {})",
        delivered[0].cursor
    );
    let status = server.wait_exit(Duration::from_secs(15)).await;
    eprintln!("SIGINT: exit {status:?} after {:?}", signalled.elapsed());
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
