//! Protective limits (SPEC §8): message size, lines per case, string
//! lengths, page sizes, concurrent streams per connection, and a client
//! deadline that bounds the database work. Every limit hit changes
//! nothing (read back after each).

use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures::{StreamExt, stream};
use invoice_cases::pb::{self, watch_state_changes_request::Start};
use prost::Message;
use tonic::{Code, Status, codec::CompressionEncoding};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::{
    helpers::{
        OpenTransaction, TestApp, all_cases, cluster, count_rows, create, get, line, lock_table,
        new_case, ok, settings, spawn_app, spawn_app_with, submit, violated_fields,
    },
    support::{case_in, event_count},
};

fn create_request(case: pb::InvoiceCase) -> pb::CreateInvoiceCaseRequest {
    pb::CreateInvoiceCaseRequest {
        invoice_case: Some(case),
        request_id: String::new(),
        comment: String::new(),
    }
}

/// A valid case of `lines` lines with the longest short descriptions.
fn big_case(lines: usize) -> pb::InvoiceCase {
    let mut case = new_case("ACME", 0);
    case.lines = (0..lines)
        .map(|i| line(&format!("{i:05} {}", "d".repeat(150))))
        .collect();
    case
}

const SMALL_LIMIT: usize = 64 * 1024;

async fn app_with_small_messages() -> TestApp {
    let database = cluster().new_database();
    let secret = format!("limits-secret-{}", Uuid::new_v4().simple());
    let mut settings = settings(&database, &secret);
    settings.limits.max_message_bytes = SMALL_LIMIT;
    spawn_app_with(settings, secret).await.owning(database)
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_refused_and_changes_nothing() {
    let app = app_with_small_messages().await;
    let mut admin = app.admin().await;

    // Under the limit: served.
    let fits = create_request(big_case(100));
    assert!(fits.encoded_len() < SMALL_LIMIT, "{}", fits.encoded_len());
    let small = ok(admin.create_invoice_case(fits).await);

    // Over it: tonic refuses to decode it with OUT_OF_RANGE.
    let too_big = create_request(big_case(500));
    assert!(
        too_big.encoded_len() > SMALL_LIMIT,
        "{}",
        too_big.encoded_len()
    );
    let status = admin
        .create_invoice_case(too_big.clone())
        .await
        .expect_err("a message over the limit");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    // The same, gzip-compressed (small on the wire, large decoded): the
    // decoded size counts, tonic says RESOURCE_EXHAUSTED.
    let mut gzip = app
        .admin()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let status = gzip
        .create_invoice_case(too_big)
        .await
        .expect_err("a compressed message over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // A compressed message under the limit is served.
    ok(gzip.create_invoice_case(create_request(big_case(10))).await);

    // One huge field in a mutation of an existing case.
    let status = admin
        .add_case_line(pb::AddCaseLineRequest {
            case_id: small.id.clone(),
            line: Some(line(&"x".repeat(SMALL_LIMIT + 1))),
            ..Default::default()
        })
        .await
        .expect_err("a huge line");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let status = admin
        .get_invoice_case(pb::GetInvoiceCaseRequest {
            case_id: "c".repeat(2 * SMALL_LIMIT),
        })
        .await
        .expect_err("a huge case id");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    // Nothing changed: two cases, the first as it was.
    assert_eq!(all_cases(&mut admin).await.len(), 2);
    assert_eq!(get(&mut admin, &small.id).await, small);
    assert_eq!(event_count(&mut admin, &small.id).await, 1);
}

#[tokio::test]
async fn a_case_holds_at_most_1000_lines() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;

    let status = admin
        .create_invoice_case(create_request(big_case(1001)))
        .await
        .expect_err("1001 lines");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        violated_fields(&status).contains(&"invoice_case.lines".to_owned()),
        "{status:?}"
    );
    assert!(all_cases(&mut admin).await.is_empty());

    let full = ok(admin
        .create_invoice_case(create_request(big_case(1000)))
        .await);
    assert_eq!(full.lines.len(), 1000);
    let add = |case: &pb::InvoiceCase| pb::AddCaseLineRequest {
        case_id: case.id.clone(),
        line: Some(line("one too many")),
        ..Default::default()
    };
    for attempt in [add(&full), {
        let mut with_etag = add(&full);
        with_etag.etag = full.etag.clone();
        with_etag
    }] {
        let status = admin.add_case_line(attempt).await.expect_err("line 1001");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "LINE_LIMIT_REACHED", "{info:?}");
    }
    assert_eq!(get(&mut admin, &full.id).await, full);
    assert_eq!(event_count(&mut admin, &full.id).await, 1);

    // Also once submitted (a NEW case).
    let submitted = ok(admin.submit_case(submit(&full.id)).await);
    let status = admin
        .add_case_line(add(&submitted))
        .await
        .expect_err("line 1001 of a NEW case");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(get(&mut admin, &full.id).await, submitted);
    assert_eq!(event_count(&mut admin, &full.id).await, 2);

    // The limit is exactly 1000: a case of 999 takes one more, then none.
    let almost = ok(admin
        .create_invoice_case(create_request(big_case(999)))
        .await);
    let at_limit = ok(admin.add_case_line(add(&almost)).await);
    assert_eq!(at_limit.lines.len(), 1000);
    let status = admin
        .add_case_line(add(&at_limit))
        .await
        .expect_err("line 1001");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(get(&mut admin, &almost.id).await, at_limit);

    // ProposeSolution does not take more outcomes than a case has lines.
    let wip = case_in(&mut admin, "ACME", pb::invoice_case::State::WorkInProgress).await;
    let mut propose = crate::helpers::propose_all(&wip.id);
    propose.line_outcomes = (0..1001)
        .map(|_| pb::propose_solution_request::LineOutcome {
            line_id: Uuid::new_v4().to_string(),
            outcome: pb::case_line::State::ResolvedAccepted.into(),
            ..Default::default()
        })
        .collect();
    let status = admin
        .propose_solution(propose)
        .await
        .expect_err("1001 outcomes");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(get(&mut admin, &wip.id).await, wip);
    assert_eq!(all_cases(&mut admin).await.len(), 3);
}

/// Asserts INVALID_ARGUMENT naming `field`.
fn assert_field<T: std::fmt::Debug>(result: Result<tonic::Response<T>, Status>, field: &str) {
    let status = match result {
        Ok(response) => panic!("{field}: accepted: {:?}", response.into_inner()),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    assert!(
        violated_fields(&status).iter().any(|f| f == field),
        "{field}: {status:?}"
    );
}

#[tokio::test]
async fn strings_longer_than_their_limits_are_refused() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let wip = case_in(&mut admin, "ACME", pb::invoice_case::State::WorkInProgress).await;
    let draft = create(&mut admin, "ACME", 1).await;
    let events = event_count(&mut admin, &wip.id).await;

    // Create: each field one character over its limit (multi-byte
    // characters count as one).
    type Edit = Box<dyn Fn(&mut pb::InvoiceCase)>;
    let over: Vec<(&str, Edit)> = vec![
        (
            "invoice_case.short_description",
            Box::new(|c| c.short_description = "é".repeat(161)),
        ),
        (
            "invoice_case.description",
            Box::new(|c| c.description = "d".repeat(4001)),
        ),
        (
            "invoice_case.account_id",
            Box::new(|c| c.account_id = "A".repeat(65)),
        ),
        (
            "invoice_case.contact_id",
            Box::new(|c| c.contact_id = "C".repeat(65)),
        ),
        (
            "invoice_case.invoice_number",
            Box::new(|c| c.invoice_number = "I".repeat(65)),
        ),
        (
            "invoice_case.currency_code",
            Box::new(|c| c.currency_code = "EURO".into()),
        ),
        (
            "invoice_case.lines[0].short_description",
            Box::new(|c| c.lines[0].short_description = "字".repeat(161)),
        ),
        (
            "invoice_case.lines[0].invoice_line_ref",
            Box::new(|c| c.lines[0].invoice_line_ref = "R".repeat(65)),
        ),
        (
            "invoice_case.lines[0].invoiced_amount",
            Box::new(|c| c.lines[0].invoiced_amount = "1".repeat(16)),
        ),
        (
            "invoice_case.lines[0].disputed_amount",
            Box::new(|c| c.lines[0].disputed_amount = "1.00001".into()),
        ),
    ];
    for (field, edit) in &over {
        let mut case = new_case("ACME", 1);
        edit(&mut case);
        assert_field(admin.create_invoice_case(create_request(case)).await, field);
    }
    // Exactly at the limits: accepted.
    let mut longest = new_case(&"A".repeat(64), 1);
    longest.short_description = "é".repeat(160);
    longest.description = "d".repeat(4000);
    longest.contact_id = "C".repeat(64);
    longest.invoice_number = "I".repeat(64);
    longest.lines[0].short_description = "字".repeat(160);
    longest.lines[0].invoice_line_ref = "R".repeat(64);
    longest.lines[0].invoiced_amount = format!("{}.{}", "9".repeat(15), "9".repeat(4));
    let longest = ok(admin.create_invoice_case(create_request(longest)).await);

    // Mutations of existing cases.
    let long = "n".repeat(4001);
    assert_field(
        admin
            .submit_case(pb::SubmitCaseRequest {
                case_id: draft.id.clone(),
                comment: long.clone(),
                ..Default::default()
            })
            .await,
        "comment",
    );
    assert_field(
        admin
            .submit_case(pb::SubmitCaseRequest {
                case_id: draft.id.clone(),
                etag: "9".repeat(65),
                ..Default::default()
            })
            .await,
        "etag",
    );
    assert_field(
        admin
            .add_case_line(pb::AddCaseLineRequest {
                case_id: draft.id.clone(),
                line: Some(line(&"l".repeat(161))),
                ..Default::default()
            })
            .await,
        "line.short_description",
    );
    let mut propose = crate::helpers::propose_all(&wip.id);
    propose.resolution_notes = long.clone();
    assert_field(admin.propose_solution(propose).await, "resolution_notes");
    let mut propose = crate::helpers::propose_all(&wip.id);
    propose.comment = long.clone();
    assert_field(admin.propose_solution(propose).await, "comment");
    let mut set = crate::helpers::set_line(
        &wip.id,
        &wip.lines[0].id,
        pb::case_line::State::ResolvedAccepted,
    );
    set.resolution_notes = long.clone();
    assert_field(admin.set_line_state(set).await, "resolution_notes");
    assert_field(
        admin
            .get_invoice_case(pb::GetInvoiceCaseRequest {
                case_id: "x".repeat(10_000),
            })
            .await,
        "case_id",
    );
    assert_field(
        admin
            .list_invoice_cases(pb::ListInvoiceCasesRequest {
                filter: format!("account_id = \"{}\"", "a".repeat(100_000)),
                ..Default::default()
            })
            .await,
        "filter",
    );
    assert_field(
        admin
            .list_invoice_cases(pb::ListInvoiceCasesRequest {
                page_token: "A".repeat(10_000),
                ..Default::default()
            })
            .await,
        "page_token",
    );
    let status = admin
        .watch_state_changes(pb::WatchStateChangesRequest {
            start: Some(Start::AfterCursor("A".repeat(10_000))),
            ..Default::default()
        })
        .await
        .expect_err("a huge cursor");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Nothing changed.
    assert_eq!(get(&mut admin, &wip.id).await, wip);
    assert_eq!(event_count(&mut admin, &wip.id).await, events);
    assert_eq!(get(&mut admin, &draft.id).await, draft);
    assert_eq!(all_cases(&mut admin).await.len(), 3);
    assert_eq!(get(&mut admin, &longest.id).await, longest);
}

#[tokio::test]
async fn page_sizes_are_capped_and_negative_ones_refused() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    // 501 cases (no lines: the cheapest valid case).
    let created: Vec<pb::InvoiceCase> = stream::iter(0..501)
        .map(|_| {
            let mut client = admin.clone();
            async move { create(&mut client, "ACME", 0).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(created.len(), 501);

    let list = |page_size: i32| pb::ListInvoiceCasesRequest {
        page_size,
        ..Default::default()
    };
    for (asked, expected) in [
        (0, 50),
        (1, 1),
        (499, 499),
        (500, 500),
        (501, 500),
        (100_000, 500),
        (i32::MAX, 500),
    ] {
        let page = ok(admin.list_invoice_cases(list(asked)).await);
        assert_eq!(page.invoice_cases.len(), expected, "page_size {asked}");
        assert!(!page.next_page_token.is_empty(), "page_size {asked}");
    }
    for negative in [-1, -500, i32::MIN] {
        assert_field(admin.list_invoice_cases(list(negative)).await, "page_size");
    }

    // Events: a case with 1001 events.
    let case = create(&mut admin, "ACME", 1).await;
    for i in 0..500 {
        let added = ok(admin
            .add_case_line(pb::AddCaseLineRequest {
                case_id: case.id.clone(),
                line: Some(line(&format!("temporary {i}"))),
                ..Default::default()
            })
            .await);
        let new_line = added.lines.last().expect("the added line").id.clone();
        ok(admin
            .remove_case_line(pb::RemoveCaseLineRequest {
                case_id: case.id.clone(),
                line_id: new_line,
                ..Default::default()
            })
            .await);
    }
    let events = |page_size: i32| pb::ListStateChangesRequest {
        case_id: case.id.clone(),
        page_size,
        page_token: String::new(),
    };
    for (asked, expected) in [
        (0, 100),
        (7, 7),
        (1000, 1000),
        (1001, 1000),
        (i32::MAX, 1000),
    ] {
        let page = ok(admin.list_state_changes(events(asked)).await);
        assert_eq!(page.events.len(), expected, "page_size {asked}");
        assert!(!page.next_page_token.is_empty(), "page_size {asked}");
    }
    for negative in [-1, i32::MIN] {
        assert_field(
            admin.list_state_changes(events(negative)).await,
            "page_size",
        );
    }
    assert_eq!(event_count(&mut admin, &case.id).await, 1001);
    assert_eq!(all_cases(&mut admin).await.len(), 502);
}

#[tokio::test]
async fn a_connection_gets_at_most_its_concurrent_streams() {
    let database_url = cluster().new_database();
    let secret = format!("streams-secret-{}", Uuid::new_v4().simple());
    let mut settings = settings(&database_url, &secret);
    settings.limits.max_concurrent_streams = 2;
    let app = spawn_app_with(settings, secret).await;
    // One client: one channel, one HTTP/2 connection.
    let mut client = app.admin().await;
    // A first call: the server's SETTINGS (with its stream limit) are in.
    ok(client
        .list_invoice_cases(pb::ListInvoiceCasesRequest::default())
        .await);

    let watch = || pb::WatchStateChangesRequest::default();
    // Each open stream gets a progress message every 500 ms while idle.
    let mut first = ok(client.watch_state_changes(watch()).await);
    first
        .message()
        .await
        .expect("first stream")
        .expect("a message");
    let mut second = ok(client.clone().watch_state_changes(watch()).await);
    second
        .message()
        .await
        .expect("second stream")
        .expect("a message");

    let mut third_client = client.clone();
    let third = tokio::spawn(async move {
        let mut stream = third_client
            .watch_state_changes(watch())
            .await?
            .into_inner();
        stream.message().await.map(|message| (stream, message))
    });
    // While two streams are open the third is not served: it would get a
    // progress message within 500 ms if it were. The open streams go on
    // meanwhile: the first delivers its progress messages until two
    // intervals (1 s) passed since the third was asked for.
    let asked = tokio::time::Instant::now();
    let mut ticks = 0;
    while ticks < 2 || asked.elapsed() < Duration::from_secs(1) {
        first
            .message()
            .await
            .expect("first stream")
            .expect("a message");
        ticks += 1;
    }
    second
        .message()
        .await
        .expect("second stream")
        .expect("a message");
    assert!(
        !third.is_finished(),
        "a third concurrent stream was served on the connection: {:?}",
        third.await
    );
    assert_eq!(app.watch_streams(), 2, "the server serves two streams");
    // Another connection is served.
    let mut other = app.admin().await;
    ok(other
        .list_invoice_cases(pb::ListInvoiceCasesRequest::default())
        .await);

    // One stream closes: the third is served.
    drop(first);
    let (_third_stream, message) = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("the third stream is served once a slot is free")
        .expect("the task")
        .expect("the third stream");
    assert!(message.is_some(), "the third stream ended at once");
    second
        .message()
        .await
        .expect("second stream")
        .expect("a message");
}

/// Holds the row lock of a case on a connection of its own until dropped
/// (or [`RowLock::release`]d).
pub(crate) struct RowLock(OpenTransaction);

impl RowLock {
    pub(crate) async fn take(database_url: &str, case_id: &str) -> RowLock {
        let id = Uuid::parse_str(case_id).expect("a case UUID");
        let mut open = OpenTransaction::begin(database_url).await;
        open.run(&format!(
            "SELECT id FROM invoice_cases WHERE id = '{id}' FOR UPDATE"
        ))
        .await;
        RowLock(open)
    }

    pub(crate) async fn release(self) {
        self.0.end("ROLLBACK").await;
    }
}

/// A request with a client deadline (`grpc-timeout`).
pub(crate) fn with_deadline<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

#[tokio::test]
async fn a_client_deadline_bounds_the_database_work() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let draft = create(&mut admin, "ACME", 2).await;
    let wip = case_in(&mut admin, "ACME", pb::invoice_case::State::WorkInProgress).await;
    let draft_events = event_count(&mut admin, &draft.id).await;
    let wip_events = event_count(&mut admin, &wip.id).await;

    let lock = RowLock::take(&app.database_url, &draft.id).await;
    let started = Instant::now();
    let status = admin
        .submit_case(with_deadline(submit(&draft.id), Duration::from_millis(500)))
        .await
        .expect_err("the case row is locked past the deadline");
    let took = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    // The lock is still held for a while after the deadline: the work was
    // abandoned, not just the answer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.release().await;
    assert_eq!(get(&mut admin, &draft.id).await, draft, "right after");
    assert_eq!(event_count(&mut admin, &draft.id).await, draft_events);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(get(&mut admin, &draft.id).await, draft, "a second later");
    assert_eq!(event_count(&mut admin, &draft.id).await, draft_events);

    // The same with a transition that cascades to lines.
    let lock = RowLock::take(&app.database_url, &wip.id).await;
    let status = admin
        .propose_solution(with_deadline(
            crate::helpers::propose_all(&wip.id),
            Duration::from_millis(300),
        ))
        .await
        .expect_err("locked");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.release().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(get(&mut admin, &wip.id).await, wip);
    assert_eq!(event_count(&mut admin, &wip.id).await, wip_events);

    // The pooled connections are not left with the short timeout: a call
    // without a deadline that waits longer than the earlier deadlines
    // still succeeds.
    let lock = RowLock::take(&app.database_url, &draft.id).await;
    let mut waiting = admin.clone();
    let id = draft.id.clone();
    let submit_later = tokio::spawn(async move { waiting.submit_case(submit(&id)).await });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    lock.release().await;
    let submitted = submit_later
        .await
        .expect("the task")
        .expect("a submit without a deadline waits for the lock");
    assert_eq!(submitted.into_inner().state(), pb::invoice_case::State::New);
    // A generous deadline is not a problem either.
    let case = create(&mut admin, "ACME", 1).await;
    ok(admin
        .submit_case(with_deadline(submit(&case.id), Duration::from_secs(30)))
        .await);
}

/// Service statements of this database still waiting for a lock (the
/// event reader's own reads left out).
async fn blocked_service_statements(database_url: &str) -> i64 {
    let mut conn = AsyncPgConnection::establish(database_url)
        .await
        .expect("a raw connection");
    count_rows(
        &mut conn,
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'invoice-cases' \
           AND wait_event_type = 'Lock' AND query NOT LIKE '%pg_current_snapshot%'",
    )
    .await
}

#[tokio::test]
async fn a_client_deadline_bounds_reads_too() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let case = create(&mut admin, "ACME", 1).await;
    let deadline = Duration::from_millis(400);
    let history_request = |deadline| {
        with_deadline(
            pb::ListStateChangesRequest {
                case_id: case.id.clone(),
                ..Default::default()
            },
            deadline,
        )
    };

    let lock = lock_table(&app.database_url, "invoice_cases").await;
    let got = admin
        .get_invoice_case(with_deadline(
            pb::GetInvoiceCaseRequest {
                case_id: case.id.clone(),
            },
            deadline,
        ))
        .await
        .expect_err("the table is locked past the deadline");
    assert_eq!(got.code(), Code::DeadlineExceeded, "{got:?}");
    let list = admin
        .list_invoice_cases(with_deadline(
            pb::ListInvoiceCasesRequest::default(),
            deadline,
        ))
        .await
        .expect_err("the table is locked past the deadline");
    assert_eq!(list.code(), Code::DeadlineExceeded, "{list:?}");
    // The database gave up too: nothing of the service still waits.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(blocked_service_statements(&app.database_url).await, 0);
    lock.end("ROLLBACK").await;

    let lock = lock_table(&app.database_url, "case_events").await;
    let history = admin
        .list_state_changes(history_request(deadline))
        .await
        .expect_err("the table is locked past the deadline");
    assert_eq!(history.code(), Code::DeadlineExceeded, "{history:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(blocked_service_statements(&app.database_url).await, 0);
    lock.end("ROLLBACK").await;

    // Without the lock the same reads answer, and the pooled connections
    // kept no short timeout.
    assert_eq!(get(&mut admin, &case.id).await, case);
    let events = ok(admin
        .list_state_changes(history_request(Duration::from_secs(30)))
        .await);
    assert_eq!(events.events.len(), 1);
}
