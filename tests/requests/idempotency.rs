//! Request ids (SPEC §5): a retry returns the first response and changes
//! nothing more; a request id is bound to its request.

use std::sync::Arc;

use invoice_cases::pb::{self, invoice_case::State as C};
use tokio::sync::Barrier;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

fn request_id() -> String {
    Uuid::new_v4().to_string()
}

/// Every case the admin can see (at most 500 in these tests).
async fn all_cases(client: &mut Client) -> Vec<pb::InvoiceCase> {
    let page = ok(client
        .list_invoice_cases(pb::ListInvoiceCasesRequest {
            page_size: 500,
            ..Default::default()
        })
        .await);
    assert!(page.next_page_token.is_empty());
    page.invoice_cases
}

fn create_with(case: pb::InvoiceCase, request_id: &str) -> pb::CreateInvoiceCaseRequest {
    pb::CreateInvoiceCaseRequest {
        invoice_case: Some(case),
        request_id: request_id.to_owned(),
        comment: String::new(),
    }
}

#[tokio::test]
async fn a_repeated_create_returns_the_first_case_and_creates_no_second() {
    let app = spawn_app().await;
    let mut requester = app.client_for("rita", &["requester"]).await;
    let mut admin = app.admin().await;
    let rid = request_id();

    let first = ok(requester
        .create_invoice_case(create_with(new_case("ACME", 2), &rid))
        .await);
    let again = ok(requester
        .create_invoice_case(create_with(new_case("ACME", 2), &rid))
        .await);
    assert_eq!(again, first, "the retry returns the first response");

    let cases = all_cases(&mut admin).await;
    assert_eq!(cases.len(), 1, "no second case");
    assert_eq!(cases[0], first);
    assert_eq!(history(&mut admin, &first.id).await.len(), 1);

    // Still the first response after the case moved on.
    let submitted = ok(requester.submit_case(submit(&first.id)).await);
    let later = ok(requester
        .create_invoice_case(create_with(new_case("ACME", 2), &rid))
        .await);
    assert_eq!(later, first);
    assert_eq!(get(&mut admin, &first.id).await, submitted);
    assert_eq!(all_cases(&mut admin).await.len(), 1);
    assert_eq!(history(&mut admin, &first.id).await.len(), 2);
}

#[tokio::test]
async fn a_repeated_submit_returns_the_first_response_though_the_case_is_new() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let draft = create(&mut admin, "ACME", 2).await;
    let rid = request_id();
    let request = pb::SubmitCaseRequest {
        case_id: draft.id.clone(),
        request_id: rid.clone(),
        etag: draft.etag.clone(),
        comment: "please look".into(),
    };

    let first = ok(admin.submit_case(request.clone()).await);
    assert_eq!(first.state(), C::New);
    let events = history(&mut admin, &draft.id).await.len();
    assert_eq!(events, 2);

    // A plain second submit is refused: the case is NEW now.
    expect_invalid_transition(admin.submit_case(submit(&draft.id)).await, "SUBMIT", "NEW");

    // The retry (its etag is stale by now) returns the first response.
    let again = ok(admin.submit_case(request.clone()).await);
    assert_eq!(again, first);
    assert_eq!(again.etag, first.etag);
    assert_eq!(again.state(), C::New);
    assert_eq!(history(&mut admin, &draft.id).await.len(), events);
    assert_eq!(get(&mut admin, &draft.id).await, first);

    // And still after the case moved on, which the retry does not undo.
    let assigned = ok(admin.assign_to_me(assign(&draft.id)).await);
    let later = ok(admin.submit_case(request).await);
    assert_eq!(later, first);
    assert_eq!(get(&mut admin, &draft.id).await, assigned);
    assert_eq!(history(&mut admin, &draft.id).await.len(), events + 1);
    assert_replay_matches(&mut admin, &draft.id).await;
}

#[tokio::test]
async fn a_repeated_add_line_adds_no_second_line() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let draft = create(&mut admin, "ACME", 1).await;
    let request = pb::AddCaseLineRequest {
        case_id: draft.number.clone(),
        line: Some(line("added once")),
        etag: String::new(),
        request_id: request_id(),
        comment: String::new(),
    };

    let first = ok(admin.add_case_line(request.clone()).await);
    assert_eq!(first.lines.len(), 2);
    for _ in 0..3 {
        let again = ok(admin.add_case_line(request.clone()).await);
        assert_eq!(again, first);
    }
    let now = get(&mut admin, &draft.id).await;
    assert_eq!(now, first);
    assert_eq!(now.lines.len(), 2, "no second line");
    assert_eq!(history(&mut admin, &draft.id).await.len(), 2);
    assert_replay_matches(&mut admin, &draft.id).await;
}

#[tokio::test]
async fn a_request_id_reused_for_a_different_request_is_invalid() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;

    // Create, then a different create with the same id.
    let rid = request_id();
    let first = ok(admin
        .create_invoice_case(create_with(new_case("ACME", 1), &rid))
        .await);
    let status = expect_code(
        admin
            .create_invoice_case(create_with(new_case("GLOBEX", 1), &rid))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["request_id"]);
    assert_eq!(all_cases(&mut admin).await, std::slice::from_ref(&first));

    // The same id on another RPC of the same case.
    let status = expect_code(
        admin
            .submit_case(pb::SubmitCaseRequest {
                case_id: first.id.clone(),
                request_id: rid.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["request_id"]);
    assert_eq!(get(&mut admin, &first.id).await, first);

    // AddCaseLine with another line, and with another case.
    let other = create(&mut admin, "ACME", 1).await;
    let rid = request_id();
    let added = ok(admin
        .add_case_line(pb::AddCaseLineRequest {
            case_id: first.id.clone(),
            line: Some(line("one")),
            etag: String::new(),
            request_id: rid.clone(),
            comment: String::new(),
        })
        .await);
    for (case_id, description) in [(&first.id, "two"), (&other.id, "one")] {
        let status = expect_code(
            admin
                .add_case_line(pb::AddCaseLineRequest {
                    case_id: case_id.clone(),
                    line: Some(line(description)),
                    etag: String::new(),
                    request_id: rid.clone(),
                    comment: String::new(),
                })
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), ["request_id"], "{description}");
    }
    assert_eq!(get(&mut admin, &first.id).await, added);
    assert_eq!(get(&mut admin, &other.id).await, other);
    assert_eq!(history(&mut admin, &first.id).await.len(), 2);
    assert_eq!(history(&mut admin, &other.id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_creates_with_one_request_id_create_one_case() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let rid = request_id();
    let barrier = Arc::new(Barrier::new(10));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut client = app.client_for("rita", &["requester"]).await;
        let barrier = barrier.clone();
        let request = create_with(new_case("ACME", 3), &rid);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            client.create_invoice_case(request).await
        }));
    }
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(ok(task.await.expect("task")));
    }
    let first = &responses[0];
    for response in &responses {
        assert_eq!(response.id, first.id, "every caller gets the same case");
        assert_eq!(response, first);
    }
    let cases = all_cases(&mut admin).await;
    assert_eq!(cases.len(), 1, "exactly one case: {cases:?}");
    assert_eq!(&cases[0], first);
    assert_eq!(history(&mut admin, &first.id).await.len(), 1);
    assert_replay_matches(&mut admin, &first.id).await;
}

#[tokio::test]
async fn a_refused_action_does_not_consume_its_request_id() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let draft = create(&mut admin, "ACME", 2).await;
    let request = pb::AssignToMeRequest {
        case_id: draft.id.clone(),
        request_id: request_id(),
        ..Default::default()
    };

    // Refused in DRAFT: nothing is remembered.
    expect_invalid_transition(
        admin.assign_to_me(request.clone()).await,
        "ASSIGN_TO_ME",
        "DRAFT",
    );
    assert_eq!(history(&mut admin, &draft.id).await.len(), 1);

    // Once the case is NEW, the same request with the same id runs.
    ok(admin.submit_case(submit(&draft.id)).await);
    let assigned = ok(admin.assign_to_me(request.clone()).await);
    assert_eq!(assigned.state(), C::WorkInProgress);
    assert_eq!(ok(admin.assign_to_me(request).await), assigned);
    assert_eq!(history(&mut admin, &draft.id).await.len(), 3);

    // A create refused as malformed does not consume its id either; a
    // valid create may then use it.
    let rid = request_id();
    let mut bad = new_case("ACME", 1);
    bad.currency_code = "euro".into();
    expect_code(
        admin.create_invoice_case(create_with(bad, &rid)).await,
        Code::InvalidArgument,
    );
    let created = ok(admin
        .create_invoice_case(create_with(new_case("ACME", 1), &rid))
        .await);
    assert_eq!(
        ok(admin
            .create_invoice_case(create_with(new_case("ACME", 1), &rid))
            .await),
        created
    );

    // Nor does a request refused for a stale etag: the id stays free for
    // the request with the current etag.
    let rid = request_id();
    let stale = pb::RequestInformationRequest {
        case_id: draft.id.clone(),
        etag: draft.etag.clone(),
        request_id: rid.clone(),
        ..Default::default()
    };
    expect_code(admin.request_information(stale).await, Code::Aborted);
    let fresh = ok(admin
        .request_information(pb::RequestInformationRequest {
            case_id: draft.id.clone(),
            request_id: rid,
            ..Default::default()
        })
        .await);
    assert_eq!(fresh.state(), C::AwaitingInfo);
    assert_eq!(all_cases(&mut admin).await.len(), 2);
    assert_replay_matches(&mut admin, &draft.id).await;
}

#[tokio::test]
async fn request_ids_are_forgotten_after_their_retention_in_batches() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    use invoice_cases::store::{PoolSettings, Store};

    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let ids: Vec<String> = (0..5).map(|_| request_id()).collect();
    for id in &ids {
        ok(admin
            .create_invoice_case(create_with(new_case("ACME", 1), id))
            .await);
    }
    // Three of them are three days old.
    let mut conn = AsyncPgConnection::establish(&app.database_url)
        .await
        .expect("connect");
    let old = ids[..3]
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ");
    diesel::sql_query(format!(
        "UPDATE idempotency_records SET create_time = now() - interval '3 days' \
         WHERE request_id IN ({old})"
    ))
    .execute(&mut conn)
    .await
    .expect("age three records");
    let store = Store::new(&app.database_url, &PoolSettings::default()).expect("store");
    let forgotten = store
        .prune_idempotency_records(std::time::Duration::from_secs(48 * 3600), 2)
        .await
        .expect("prune");
    assert_eq!(forgotten, 3);
    // A forgotten id makes a new case; a remembered one still answers.
    let again = ok(admin
        .create_invoice_case(create_with(new_case("ACME", 1), &ids[0]))
        .await);
    let remembered = ok(admin
        .create_invoice_case(create_with(new_case("ACME", 1), &ids[4]))
        .await);
    assert_eq!(all_cases(&mut admin).await.len(), 6);
    assert!(all_cases(&mut admin).await.iter().any(|c| c.id == again.id));
    assert!(
        all_cases(&mut admin)
            .await
            .iter()
            .any(|c| c.id == remembered.id)
    );
}
