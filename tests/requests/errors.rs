//! Errors through the API (SPEC §5, §8): malformed input, unknown ids,
//! authentication, roles and stale etags — each with its code and details,
//! and nothing changed.

use std::time::{SystemTime, UNIX_EPOCH};

use invoice_cases::{
    auth::mint_token,
    pb::{self, case_line::State as L, invoice_case::State as C},
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

/// Asserts INVALID_ARGUMENT whose BadRequest names exactly `fields`.
fn expect_fields<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    fields: &[&str],
) {
    let status = expect_code(result, Code::InvalidArgument);
    let mut violated = violated_fields(&status);
    violated.sort();
    violated.dedup();
    let mut expected: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
    expected.sort();
    assert_eq!(violated, expected, "{status:?}");
}

fn create_request(case: Option<pb::InvoiceCase>) -> pb::CreateInvoiceCaseRequest {
    pb::CreateInvoiceCaseRequest {
        invoice_case: case,
        request_id: String::new(),
        comment: String::new(),
    }
}

/// `new_case("ACME", 2)` changed by `edit`.
fn case_with(edit: impl FnOnce(&mut pb::InvoiceCase)) -> Option<pb::InvoiceCase> {
    let mut case = new_case("ACME", 2);
    edit(&mut case);
    Some(case)
}

#[tokio::test]
async fn malformed_cases_are_refused_naming_the_fields_and_nothing_is_created() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;

    let bad: Vec<(&str, Option<pb::InvoiceCase>, Vec<&str>)> = vec![
        ("missing invoice_case", None, vec!["invoice_case"]),
        (
            "empty account_id",
            case_with(|c| c.account_id.clear()),
            vec!["invoice_case.account_id"],
        ),
        (
            "blank account_id",
            case_with(|c| c.account_id = "   ".into()),
            vec!["invoice_case.account_id"],
        ),
        (
            "short_description of 161 characters",
            case_with(|c| c.short_description = "x".repeat(161)),
            vec!["invoice_case.short_description"],
        ),
        (
            "empty short_description",
            case_with(|c| c.short_description.clear()),
            vec!["invoice_case.short_description"],
        ),
        (
            "lower-case currency",
            case_with(|c| c.currency_code = "eur".into()),
            vec!["invoice_case.currency_code"],
        ),
        (
            "four-letter currency",
            case_with(|c| c.currency_code = "EURO".into()),
            vec!["invoice_case.currency_code"],
        ),
        (
            "missing currency",
            case_with(|c| c.currency_code.clear()),
            vec!["invoice_case.currency_code"],
        ),
        (
            "SINGLE_INVOICE without invoice_number",
            case_with(|c| c.invoice_number.clear()),
            vec!["invoice_case.invoice_number"],
        ),
        (
            "missing request_source",
            case_with(|c| c.request_source = 0),
            vec!["invoice_case.request_source"],
        ),
        (
            "MULTIPLE_INVOICES line without invoice_number",
            case_with(|c| {
                c.request_source = pb::invoice_case::RequestSource::MultipleInvoices.into();
                c.lines[0].invoice_number = "ARINV1".into();
            }),
            vec!["invoice_case.lines[1].invoice_number"],
        ),
        (
            "line without dispute_code",
            case_with(|c| c.lines[1].dispute_code = 0),
            vec!["invoice_case.lines[1].dispute_code"],
        ),
        (
            "line with an unknown dispute_code",
            case_with(|c| c.lines[0].dispute_code = 99),
            vec!["invoice_case.lines[0].dispute_code"],
        ),
        (
            "line without short_description",
            case_with(|c| c.lines[0].short_description.clear()),
            vec!["invoice_case.lines[0].short_description"],
        ),
        (
            "negative amount",
            case_with(|c| c.lines[0].invoiced_amount = "-1".into()),
            vec!["invoice_case.lines[0].invoiced_amount"],
        ),
        (
            "exponent amount",
            case_with(|c| c.lines[0].disputed_amount = "1e3".into()),
            vec!["invoice_case.lines[0].disputed_amount"],
        ),
        (
            "five fraction digits",
            case_with(|c| c.lines[1].invoiced_amount = "1.00001".into()),
            vec!["invoice_case.lines[1].invoiced_amount"],
        ),
        (
            "missing amount",
            case_with(|c| c.lines[0].invoiced_amount.clear()),
            vec!["invoice_case.lines[0].invoiced_amount"],
        ),
        (
            "bad quantity",
            case_with(|c| c.lines[0].invoiced_quantity = Some("-2".into())),
            vec!["invoice_case.lines[0].invoiced_quantity"],
        ),
        (
            "disputed more than invoiced",
            case_with(|c| {
                c.lines[0].invoiced_amount = "100.00".into();
                c.lines[0].disputed_amount = "100.01".into();
            }),
            vec!["invoice_case.lines[0].disputed_amount"],
        ),
        (
            "1001 lines",
            case_with(|c| {
                c.lines = (0..1001).map(|i| line(&format!("line {i}"))).collect();
            }),
            vec!["invoice_case.lines"],
        ),
        (
            "several problems at once",
            case_with(|c| {
                c.account_id.clear();
                c.currency_code = "xx".into();
                c.lines[1].disputed_amount = "abc".into();
            }),
            vec![
                "invoice_case.account_id",
                "invoice_case.currency_code",
                "invoice_case.lines[1].disputed_amount",
            ],
        ),
    ];
    for (what, case, fields) in bad {
        let result = admin.create_invoice_case(create_request(case)).await;
        let status = expect_code(result, Code::InvalidArgument);
        let mut violated = violated_fields(&status);
        violated.sort();
        let mut expected: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        expected.sort();
        assert_eq!(violated, expected, "{what}: {status:?}");
    }

    // A bad request_id on an otherwise valid case.
    expect_fields(
        admin
            .create_invoice_case(pb::CreateInvoiceCaseRequest {
                invoice_case: Some(new_case("ACME", 1)),
                request_id: "x".into(),
                comment: String::new(),
            })
            .await,
        &["request_id"],
    );

    assert!(
        all_cases(&mut admin).await.is_empty(),
        "a refused create left a case behind"
    );
}

#[tokio::test]
async fn the_limits_themselves_are_accepted() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut case = new_case("ACME", 0);
    case.short_description = "é".repeat(160);
    case.lines = (0..1000).map(|i| line(&format!("line {i}"))).collect();
    case.lines[0].invoiced_amount = "999999999999999.9999".into();
    case.lines[0].disputed_amount = "999999999999999.9999".into();
    let created = ok(admin.create_invoice_case(create_request(Some(case))).await);
    assert_eq!(created.lines.len(), 1000);
    assert_eq!(created.short_description.chars().count(), 160);
    assert_eq!(created.lines[0].disputed_amount, "999999999999999.9999");
    assert_invariants(&created);
}

#[tokio::test]
async fn malformed_requests_on_a_case_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let draft = create(&mut admin, "ACME", 2).await;
    let id = draft.id.clone();
    let line_id = draft.lines[0].id.clone();

    expect_fields(
        admin
            .get_invoice_case(pb::GetInvoiceCaseRequest {
                case_id: "nope".into(),
            })
            .await,
        &["case_id"],
    );
    expect_fields(
        admin
            .get_invoice_case(pb::GetInvoiceCaseRequest {
                case_id: String::new(),
            })
            .await,
        &["case_id"],
    );
    expect_fields(admin.submit_case(submit("nope")).await, &["case_id"]);
    expect_fields(
        admin
            .submit_case(pb::SubmitCaseRequest {
                case_id: id.clone(),
                request_id: "x".into(),
                ..Default::default()
            })
            .await,
        &["request_id"],
    );
    expect_fields(
        admin
            .submit_case(pb::SubmitCaseRequest {
                case_id: "nope".into(),
                request_id: "x".into(),
                ..Default::default()
            })
            .await,
        &["case_id", "request_id"],
    );
    expect_fields(
        admin
            .cancel_case(pb::CancelCaseRequest {
                case_id: id.clone(),
                etag: "e".repeat(65),
                ..Default::default()
            })
            .await,
        &["etag"],
    );
    expect_fields(
        admin
            .list_state_changes(pb::ListStateChangesRequest {
                case_id: "nope".into(),
                ..Default::default()
            })
            .await,
        &["case_id"],
    );
    expect_fields(
        admin
            .list_state_changes(pb::ListStateChangesRequest {
                case_id: id.clone(),
                page_size: -1,
                ..Default::default()
            })
            .await,
        &["page_size"],
    );
    expect_fields(
        admin
            .list_state_changes(pb::ListStateChangesRequest {
                case_id: id.clone(),
                page_token: "garbage".into(),
                ..Default::default()
            })
            .await,
        &["page_token"],
    );
    expect_fields(
        admin
            .set_line_state(set_line(&id, "nope", L::Canceled))
            .await,
        &["line_id"],
    );
    expect_fields(
        admin
            .set_line_state(set_line(&id, &line_id, L::Draft))
            .await,
        &["state"],
    );
    expect_fields(
        admin
            .remove_case_line(pb::RemoveCaseLineRequest {
                case_id: id.clone(),
                line_id: String::new(),
                ..Default::default()
            })
            .await,
        &["line_id"],
    );
    expect_fields(
        admin
            .add_case_line(pb::AddCaseLineRequest {
                case_id: id.clone(),
                line: None,
                ..Default::default()
            })
            .await,
        &["line"],
    );
    let mut bad_line = line("bad amount");
    bad_line.invoiced_amount = "1e3".into();
    expect_fields(
        admin
            .add_case_line(pb::AddCaseLineRequest {
                case_id: id.clone(),
                line: Some(bad_line),
                ..Default::default()
            })
            .await,
        &["line.invoiced_amount"],
    );

    for page_size in [-1, i32::MIN] {
        expect_fields(
            admin
                .list_invoice_cases(pb::ListInvoiceCasesRequest {
                    page_size,
                    ..Default::default()
                })
                .await,
            &["page_size"],
        );
    }
    for filter in [
        "state = BOGUS",
        "state",
        "number = INVCS0001001",
        "state = NEW OR state = DRAFT",
        "priority = 5",
        "state < NEW",
        "account_id = \"open",
        "state = NEW AND",
    ] {
        let result = admin
            .list_invoice_cases(pb::ListInvoiceCasesRequest {
                filter: filter.into(),
                ..Default::default()
            })
            .await;
        let status = expect_code(result, Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["filter"], "{filter:?}");
    }
    for page_token in ["garbage", "AAAA", &"A".repeat(500)] {
        expect_fields(
            admin
                .list_invoice_cases(pb::ListInvoiceCasesRequest {
                    page_token: page_token.to_owned(),
                    ..Default::default()
                })
                .await,
            &["page_token"],
        );
    }

    // Nothing changed.
    let after = get(&mut admin, &id).await;
    assert_eq!(after, draft);
    assert_eq!(history(&mut admin, &id).await.len(), 1);
    assert_eq!(all_cases(&mut admin).await.len(), 1);
}

#[tokio::test]
async fn unknown_cases_and_lines_are_not_found() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let draft = create(&mut admin, "ACME", 2).await;
    let wip = case_in_state(&mut admin, C::WorkInProgress).await;

    for unknown in [Uuid::new_v4().to_string(), "INVCS9999999".to_owned()] {
        expect_code(
            admin
                .get_invoice_case(pb::GetInvoiceCaseRequest {
                    case_id: unknown.clone(),
                })
                .await,
            Code::NotFound,
        );
        expect_code(admin.submit_case(submit(&unknown)).await, Code::NotFound);
        expect_code(
            admin
                .list_state_changes(pb::ListStateChangesRequest {
                    case_id: unknown.clone(),
                    ..Default::default()
                })
                .await,
            Code::NotFound,
        );
    }

    // Unknown lines, and a line of another case.
    let other_line = draft.lines[0].id.clone();
    for unknown in [
        Uuid::new_v4().to_string(),
        "INVCSL9999999".to_owned(),
        other_line.clone(),
    ] {
        expect_code(
            admin
                .set_line_state(set_line(&wip.id, &unknown, L::ResolvedAccepted))
                .await,
            Code::NotFound,
        );
    }
    let wip_line = wip.lines[0].id.clone();
    for unknown in [
        Uuid::new_v4().to_string(),
        "INVCSL9999999".to_owned(),
        wip_line,
    ] {
        expect_code(
            admin
                .remove_case_line(pb::RemoveCaseLineRequest {
                    case_id: draft.id.clone(),
                    line_id: unknown,
                    ..Default::default()
                })
                .await,
            Code::NotFound,
        );
    }

    assert_eq!(get(&mut admin, &draft.id).await, draft);
    assert_eq!(get(&mut admin, &wip.id).await, wip);
    assert_replay_matches(&mut admin, &draft.id).await;
    assert_replay_matches(&mut admin, &wip.id).await;
}

/// ProposeSolution's outcomes are line states, RESOLVED_ACCEPTED or
/// RESOLVED_DENIED: any other state, as the default or for one line, is
/// INVALID_ARGUMENT on that field, and changes nothing.
#[tokio::test]
async fn propose_solution_outcomes_other_than_the_resolved_line_states_are_invalid() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let wip = case_in_state(&mut admin, C::WorkInProgress).await;
    let events = history(&mut admin, &wip.id).await.len();
    let outcome = |line: &pb::CaseLine, state: L| pb::propose_solution_request::LineOutcome {
        line_id: line.id.clone(),
        outcome: state.into(),
        ..Default::default()
    };

    for state in [
        L::Draft,
        L::New,
        L::WorkInProgress,
        L::AwaitingInfo,
        L::Canceled,
    ] {
        let mut request = propose_all(&wip.id);
        request.default_outcome = state.into();
        expect_fields(admin.propose_solution(request).await, &["default_outcome"]);

        let mut request = propose_all(&wip.id);
        request.line_outcomes = vec![
            outcome(&wip.lines[0], L::ResolvedDenied),
            outcome(&wip.lines[1], state),
        ];
        expect_fields(
            admin.propose_solution(request).await,
            &["line_outcomes[1].outcome"],
        );
    }
    // A line outcome without an outcome, and values no state has.
    let mut request = propose_all(&wip.id);
    request.line_outcomes = vec![outcome(&wip.lines[0], L::Unspecified)];
    expect_fields(
        admin.propose_solution(request).await,
        &["line_outcomes[0].outcome"],
    );
    for value in [8, -1] {
        let mut request = propose_all(&wip.id);
        request.default_outcome = value;
        expect_fields(admin.propose_solution(request).await, &["default_outcome"]);
    }

    assert_eq!(get(&mut admin, &wip.id).await, wip);
    assert_eq!(history(&mut admin, &wip.id).await.len(), events);

    // The resolved states themselves are accepted.
    let mut request = propose_all(&wip.id);
    request.default_outcome = L::ResolvedDenied.into();
    request.line_outcomes = vec![outcome(&wip.lines[0], L::ResolvedAccepted)];
    let resolved = ok(admin.propose_solution(request).await);
    assert_eq!(resolved.state(), C::Resolved);
    let states: Vec<L> = resolved.lines.iter().map(|l| l.state()).collect();
    assert_eq!(states, [L::ResolvedAccepted, L::ResolvedDenied]);
}

/// An HS256 token with the given `exp`, signed with `secret`.
fn token_expiring_at(secret: &str, exp: u64) -> String {
    let claims = serde_json::json!({
        "sub": "eve",
        "roles": ["admin"],
        "exp": exp,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode a token")
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let case = create(&mut admin, "ACME", 1).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();

    let other_secret = mint_token(
        "another-secret-another-secret-another",
        "eve",
        &["admin".to_owned()],
        None,
        3600,
        None,
        None,
    )
    .expect("mint");
    let tokens: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("garbage", Some("garbage".into())),
        ("empty", Some(String::new())),
        ("another secret", Some(other_secret)),
        (
            "expired an hour ago",
            Some(token_expiring_at(&app.secret, now - 3600)),
        ),
        (
            "expired beyond the leeway",
            Some(token_expiring_at(&app.secret, now - 120)),
        ),
    ];
    for (what, token) in tokens {
        let mut client = app.client_with(token.as_deref()).await;
        let status = expect_code(
            client
                .create_invoice_case(create_request(Some(new_case("ACME", 1))))
                .await,
            Code::Unauthenticated,
        );
        assert!(!status.message().contains("secret"), "{what}: {status:?}");
        expect_code(
            client
                .get_invoice_case(pb::GetInvoiceCaseRequest {
                    case_id: case.id.clone(),
                })
                .await,
            Code::Unauthenticated,
        );
        expect_code(
            client
                .list_invoice_cases(pb::ListInvoiceCasesRequest::default())
                .await,
            Code::Unauthenticated,
        );
        expect_code(
            client.submit_case(submit(&case.id)).await,
            Code::Unauthenticated,
        );
        expect_code(
            client
                .list_state_changes(pb::ListStateChangesRequest {
                    case_id: case.id.clone(),
                    ..Default::default()
                })
                .await,
            Code::Unauthenticated,
        );
    }

    // A token still valid works (the control of the experiment).
    let mut fresh = app
        .client_with(Some(&token_expiring_at(&app.secret, now + 600)))
        .await;
    get(&mut fresh, &case.id).await;

    assert_eq!(get(&mut admin, &case.id).await, case);
    assert_eq!(all_cases(&mut admin).await.len(), 1);
}

#[tokio::test]
async fn roles_that_do_not_allow_a_call_are_permission_denied() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut viewer = app.client_for("vera", &["viewer"]).await;
    let mut requester = app.client_for("rita", &["requester"]).await;

    expect_code(
        viewer
            .create_invoice_case(create_request(Some(new_case("ACME", 1))))
            .await,
        Code::PermissionDenied,
    );
    assert!(all_cases(&mut admin).await.is_empty());

    let new = case_in_state(&mut admin, C::New).await;
    expect_code(
        requester.assign_to_me(assign(&new.id)).await,
        Code::PermissionDenied,
    );
    expect_code(
        viewer.submit_case(submit(&new.id)).await,
        Code::PermissionDenied,
    );
    // Both may still read.
    assert_eq!(get(&mut viewer, &new.id).await, new);
    assert_eq!(get(&mut requester, &new.id).await, new);
    assert_eq!(history(&mut admin, &new.id).await.len(), 2);
}

#[tokio::test]
async fn a_stale_etag_is_aborted_and_changes_nothing() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let first = create(&mut admin, "ACME", 1).await;
    let id = first.id.clone();
    let stale = first.etag.clone();

    // Another change after the read.
    let current = ok(admin
        .add_case_line(pb::AddCaseLineRequest {
            case_id: id.clone(),
            line: Some(line("added")),
            ..Default::default()
        })
        .await);
    assert_ne!(current.etag, stale);
    let events = history(&mut admin, &id).await.len();

    let status = expect_code(
        admin
            .submit_case(pb::SubmitCaseRequest {
                case_id: id.clone(),
                etag: stale.clone(),
                ..Default::default()
            })
            .await,
        Code::Aborted,
    );
    assert!(status.message().contains("etag"), "{status:?}");
    expect_code(
        admin
            .add_case_line(pb::AddCaseLineRequest {
                case_id: id.clone(),
                line: Some(line("another")),
                etag: stale.clone(),
                ..Default::default()
            })
            .await,
        Code::Aborted,
    );
    expect_code(
        admin
            .remove_case_line(pb::RemoveCaseLineRequest {
                case_id: id.clone(),
                line_id: current.lines[0].id.clone(),
                etag: stale.clone(),
                ..Default::default()
            })
            .await,
        Code::Aborted,
    );
    expect_code(
        admin
            .cancel_case(pb::CancelCaseRequest {
                case_id: first.number.clone(),
                etag: "not-an-etag".into(),
                ..Default::default()
            })
            .await,
        Code::Aborted,
    );
    assert_eq!(get(&mut admin, &id).await, current, "nothing changed");
    assert_eq!(history(&mut admin, &id).await.len(), events);

    // The current etag succeeds.
    let submitted = ok(admin
        .submit_case(pb::SubmitCaseRequest {
            case_id: id.clone(),
            etag: current.etag.clone(),
            ..Default::default()
        })
        .await);
    assert_eq!(submitted.state(), C::New);
    assert_ne!(submitted.etag, current.etag);

    // Stale on a line action of an open case too.
    let assigned = ok(admin.assign_to_me(assign(&id)).await);
    let line_id = assigned.lines[0].id.clone();
    expect_code(
        admin
            .set_line_state(pb::SetLineStateRequest {
                etag: submitted.etag.clone(),
                ..set_line(&id, &line_id, L::ResolvedAccepted)
            })
            .await,
        Code::Aborted,
    );
    assert_eq!(get(&mut admin, &id).await, assigned);
    let resolved_one = ok(admin
        .set_line_state(pb::SetLineStateRequest {
            etag: assigned.etag.clone(),
            ..set_line(&id, &line_id, L::ResolvedAccepted)
        })
        .await);
    assert_eq!(resolved_one.lines[0].state(), L::ResolvedAccepted);
    assert_invariants(&resolved_one);
    assert_replay_matches(&mut admin, &id).await;
}
