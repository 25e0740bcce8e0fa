//! UpdateInvoiceCase and UpdateCaseLine request semantics through the real
//! API: the update mask, every field violation at once, the checks of
//! create on the edited record, clearing optional fields, edits that change
//! nothing, etags and request ids.

use invoice_cases::pb::{self, invoice_case::Priority};
use prost_types::FieldMask;
use tonic::Code;
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::helpers::*;

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

fn update_case(
    case: &pb::InvoiceCase,
    paths: &[&str],
    edit: impl FnOnce(&mut pb::InvoiceCase),
) -> pb::UpdateInvoiceCaseRequest {
    let mut values = pb::InvoiceCase::default();
    edit(&mut values);
    pb::UpdateInvoiceCaseRequest {
        case_id: case.id.clone(),
        invoice_case: Some(values),
        update_mask: mask(paths),
        ..Default::default()
    }
}

fn update_line(
    case: &pb::InvoiceCase,
    line: usize,
    paths: &[&str],
    edit: impl FnOnce(&mut pb::CaseLine),
) -> pb::UpdateCaseLineRequest {
    let mut values = pb::CaseLine::default();
    edit(&mut values);
    pb::UpdateCaseLineRequest {
        case_id: case.id.clone(),
        line_id: case.lines[line].id.clone(),
        line: Some(values),
        update_mask: mask(paths),
        ..Default::default()
    }
}

/// The field violations of an INVALID_ARGUMENT, as (field, description).
fn bad_request<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
) -> Vec<(String, String)> {
    let status = expect_code(result, Code::InvalidArgument);
    status
        .get_error_details()
        .bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn fields_of(violations: &[(String, String)]) -> Vec<&str> {
    violations.iter().map(|(f, _)| f.as_str()).collect()
}

/// Asserts that the case and its history are as they were.
async fn assert_unchanged(client: &mut Client, case: &pb::InvoiceCase, events: usize) {
    assert_eq!(&get(client, &case.id).await, case);
    assert_eq!(history(client, &case.id).await.len(), events);
}

#[tokio::test]
async fn a_bad_update_mask_is_invalid_with_every_problem_named() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let case = create(&mut client, "ACME", 1).await;

    for (paths, expected) in [
        (
            None,
            vec!["is required: name the fields of InvoiceCase to change"],
        ),
        (
            Some(vec![]),
            vec!["is required: name the fields of InvoiceCase to change"],
        ),
        (
            Some(vec!["*"]),
            vec!["`*` (every field) is not accepted: name the fields to change"],
        ),
        (
            Some(vec![
                "priority",
                "Priority",
                "lines",
                "state",
                "account_id",
                "priority",
                "lines.disputed_amount",
                "",
            ]),
            vec![
                "\"Priority\" is not a field of InvoiceCase",
                "lines is changed with AddCaseLine, RemoveCaseLine and UpdateCaseLine",
                "state is output only",
                "account_id never changes",
                "priority is named more than once",
                "\"lines.disputed_amount\" is not a field of InvoiceCase",
                "\"\" is not a field of InvoiceCase",
            ],
        ),
    ] {
        let request = pb::UpdateInvoiceCaseRequest {
            case_id: case.id.clone(),
            invoice_case: Some(pb::InvoiceCase {
                priority: Priority::High.into(),
                ..Default::default()
            }),
            update_mask: paths.map(|paths: Vec<&str>| FieldMask {
                paths: paths.into_iter().map(String::from).collect(),
            }),
            ..Default::default()
        };
        let violations = bad_request(client.update_invoice_case(request).await);
        let descriptions: Vec<&str> = violations.iter().map(|(_, d)| d.as_str()).collect();
        assert_eq!(descriptions, expected);
        assert!(violations.iter().all(|(f, _)| f == "update_mask"));
    }

    // A long path is quoted short; more than 32 paths are refused unread.
    let long = "x".repeat(100_000);
    let violations = bad_request(
        client
            .update_invoice_case(update_case(&case, &[&long], |_| {}))
            .await,
    );
    assert!(violations[0].1.len() < 100, "{violations:?}");
    let many: Vec<String> = (0..33).map(|i| format!("field{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let violations = bad_request(
        client
            .update_invoice_case(update_case(&case, &many, |_| {}))
            .await,
    );
    assert_eq!(
        violations,
        [(
            "update_mask".to_owned(),
            "names 33 paths; at most 32 are allowed".to_owned()
        )]
    );

    // Lines: their own fields.
    let violations = bad_request(
        client
            .update_case_line(update_line(
                &case,
                0,
                &["approved_amount", "case_id", "disputed_amount"],
                |l| l.disputed_amount = "1".into(),
            ))
            .await,
    );
    assert_eq!(
        violations,
        [
            (
                "update_mask".to_owned(),
                "approved_amount is output only".to_owned()
            ),
            (
                "update_mask".to_owned(),
                "\"case_id\" is not a field of CaseLine".to_owned()
            ),
        ]
    );
    assert_unchanged(&mut client, &case, 1).await;
}

#[tokio::test]
async fn every_bad_value_is_named_at_once_and_nothing_changes() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let case = create(&mut client, "ACME", 1).await;

    let violations = bad_request(
        client
            .update_invoice_case(pb::UpdateInvoiceCaseRequest {
                case_id: case.id.clone(),
                etag: "x".repeat(65),
                request_id: "not-a-uuid".into(),
                invoice_case: Some(pb::InvoiceCase {
                    short_description: "   ".into(),
                    description: "d".repeat(4001),
                    currency_code: "euro".into(),
                    contact_id: "c".repeat(65),
                    request_source: 0,
                    ..Default::default()
                }),
                update_mask: mask(&[
                    "short_description",
                    "description",
                    "currency_code",
                    "contact_id",
                    "priority",
                    "request_source",
                    "etag",
                ]),
                ..Default::default()
            })
            .await,
    );
    let mut fields = fields_of(&violations);
    fields.sort();
    assert_eq!(
        fields,
        [
            "etag",
            "invoice_case.contact_id",
            "invoice_case.currency_code",
            "invoice_case.description",
            "invoice_case.priority",
            "invoice_case.request_source",
            "invoice_case.short_description",
            "request_id",
            "update_mask",
        ]
    );
    let priority = violations
        .iter()
        .find(|(f, _)| f == "invoice_case.priority")
        .map(|(_, d)| d.as_str());
    assert_eq!(
        priority,
        Some("is required when named: CRITICAL, HIGH, MODERATE or LOW")
    );

    // The message itself is required, and so is the line's.
    let violations = bad_request(
        client
            .update_invoice_case(pb::UpdateInvoiceCaseRequest {
                case_id: case.id.clone(),
                update_mask: mask(&["priority"]),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(fields_of(&violations), ["invoice_case"]);

    let violations = bad_request(
        client
            .update_case_line(pb::UpdateCaseLineRequest {
                case_id: "INVCS1".into(),
                line_id: "line one".into(),
                line: Some(pb::CaseLine {
                    dispute_code: 0,
                    short_description: String::new(),
                    invoiced_amount: "1e3".into(),
                    disputed_amount: "-1".into(),
                    invoiced_quantity: Some("1.00001".into()),
                    disputed_quantity: Some(String::new()),
                    invoice_number: "\u{0}".into(),
                    ..Default::default()
                }),
                update_mask: mask(&[
                    "dispute_code",
                    "short_description",
                    "invoiced_amount",
                    "disputed_amount",
                    "invoiced_quantity",
                    "disputed_quantity",
                    "invoice_number",
                ]),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(
        fields_of(&violations),
        [
            "case_id",
            "line_id",
            "line.dispute_code",
            "line.short_description",
            "line.invoiced_amount",
            "line.disputed_amount",
            "line.invoiced_quantity",
            "line.disputed_quantity",
            "line.invoice_number",
        ]
    );
    let violations = bad_request(
        client
            .update_case_line(pb::UpdateCaseLineRequest {
                case_id: case.id.clone(),
                line_id: case.lines[0].id.clone(),
                update_mask: None,
                ..Default::default()
            })
            .await,
    );
    assert_eq!(fields_of(&violations), ["update_mask", "line"]);
    assert_unchanged(&mut client, &case, 1).await;
}

#[tokio::test]
async fn the_checks_of_create_hold_for_the_edited_case() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let case = create(&mut client, "ACME", 2).await;

    // Disputed more than invoiced, whichever side the edit moves.
    let violations = bad_request(
        client
            .update_case_line(update_line(&case, 0, &["disputed_amount"], |l| {
                l.disputed_amount = "100.01".into()
            }))
            .await,
    );
    assert_eq!(fields_of(&violations), ["line.disputed_amount"]);
    let violations = bad_request(
        client
            .update_case_line(update_line(&case, 0, &["invoiced_amount"], |l| {
                l.invoiced_amount = "39.99".into()
            }))
            .await,
    );
    assert_eq!(
        violations,
        [(
            "line.invoiced_amount".to_owned(),
            "the disputed amount 40.00 would be more than the invoiced amount 39.99".to_owned()
        )]
    );
    // A SINGLE_INVOICE case keeps its invoice...
    let violations = bad_request(
        client
            .update_invoice_case(update_case(&case, &["invoice_number"], |_| {}))
            .await,
    );
    assert_eq!(fields_of(&violations), ["invoice_case.invoice_number"]);
    // ... and MULTIPLE_INVOICES needs every line to name one.
    let violations = bad_request(
        client
            .update_invoice_case(update_case(&case, &["request_source"], |c| {
                c.request_source = pb::invoice_case::RequestSource::MultipleInvoices.into()
            }))
            .await,
    );
    assert_eq!(
        violations,
        [
            (
                "invoice_case.lines[0].invoice_number".to_owned(),
                format!(
                    "is required on lines of MULTIPLE_INVOICES cases (line {})",
                    case.lines[0].number
                )
            ),
            (
                "invoice_case.lines[1].invoice_number".to_owned(),
                format!(
                    "is required on lines of MULTIPLE_INVOICES cases (line {})",
                    case.lines[1].number
                )
            ),
        ]
    );
    // A line of a SINGLE_INVOICE case names the case's invoice or none.
    let violations = bad_request(
        client
            .update_case_line(update_line(&case, 1, &["invoice_number"], |l| {
                l.invoice_number = "ARINV0099999".into()
            }))
            .await,
    );
    assert_eq!(fields_of(&violations), ["line.invoice_number"]);
    assert_unchanged(&mut client, &case, 1).await;

    // Once the lines name their invoices, the case may take several, and
    // lose its own: both fields in one edit.
    let mut current = case.clone();
    for i in 0..2 {
        current = ok(client
            .update_case_line(update_line(&current, i, &["invoice_number"], |l| {
                l.invoice_number = "ARINV0012345".into()
            }))
            .await);
    }
    let multiple = ok(client
        .update_invoice_case(update_case(
            &current,
            &["request_source", "invoice_number"],
            |c| c.request_source = pb::invoice_case::RequestSource::MultipleInvoices.into(),
        ))
        .await);
    assert_eq!(
        multiple.request_source(),
        pb::invoice_case::RequestSource::MultipleInvoices
    );
    assert_eq!(multiple.invoice_number, "");
    // Stored so: the write statement sets the request source.
    assert_eq!(get(&mut client, &case.id).await, multiple);
    let event = history(&mut client, &case.id).await.pop().expect("event");
    assert_eq!(
        event
            .field_changes
            .iter()
            .map(|c| (c.field.as_str(), c.old_value.as_str(), c.new_value.as_str()))
            .collect::<Vec<_>>(),
        [
            ("request_source", "SINGLE_INVOICE", "MULTIPLE_INVOICES"),
            ("invoice_number", "ARINV0012345", ""),
        ]
    );
    // Now a line may not lose its invoice.
    let violations = bad_request(
        client
            .update_case_line(update_line(&multiple, 0, &["invoice_number"], |_| {}))
            .await,
    );
    assert_eq!(fields_of(&violations), ["line.invoice_number"]);
    assert_replay_matches(&mut client, &case.id).await;
}

#[tokio::test]
async fn optional_fields_are_cleared_by_naming_them_empty() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let mut new = new_case("ACME", 1);
    new.contact_id = "CONTACT-1".into();
    new.description = "Two lines".into();
    new.lines[0].invoice_line_ref = "10".into();
    new.lines[0].invoiced_quantity = Some("10".into());
    new.lines[0].disputed_quantity = Some("2".into());
    let case = ok(client
        .create_invoice_case(pb::CreateInvoiceCaseRequest {
            invoice_case: Some(new),
            ..Default::default()
        })
        .await);
    let cleared = ok(client
        .update_invoice_case(update_case(&case, &["description", "contact_id"], |_| {}))
        .await);
    assert_eq!(
        (cleared.description.as_str(), cleared.contact_id.as_str()),
        ("", "")
    );
    let cleared = ok(client
        .update_case_line(update_line(
            &cleared,
            0,
            &["invoiced_quantity", "disputed_quantity", "invoice_line_ref"],
            |_| {},
        ))
        .await);
    let line = &cleared.lines[0];
    assert_eq!(
        (
            line.invoiced_quantity.as_deref(),
            line.disputed_quantity.as_deref(),
            line.invoice_line_ref.as_str()
        ),
        (None, None, "")
    );
    assert_eq!(get(&mut client, &case.id).await, cleared);
    let log = history(&mut client, &case.id).await;
    let changes: Vec<_> = log[1..]
        .iter()
        .flat_map(|e| &e.field_changes)
        .map(|c| (c.field.as_str(), c.old_value.as_str(), c.new_value.as_str()))
        .collect();
    assert_eq!(
        changes,
        [
            ("description", "Two lines", ""),
            ("contact_id", "CONTACT-1", ""),
            ("invoiced_quantity", "10", ""),
            ("disputed_quantity", "2", ""),
            ("invoice_line_ref", "10", ""),
        ]
    );
    assert_replay_matches(&mut client, &case.id).await;
}

#[tokio::test]
async fn an_edit_that_changes_nothing_commits_nothing() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let case = create(&mut client, "ACME", 1).await;
    let case = ok(client.submit_case(submit(&case.id)).await);
    let rid = Uuid::new_v4().to_string();
    // Every named field already has its value: 40.0 is the line's 40.00.
    let mut same = update_case(
        &case,
        &["priority", "short_description", "contact_id"],
        |c| {
            c.priority = Priority::Low.into();
            c.short_description = "Invoice disputed".into();
        },
    );
    same.request_id = rid.clone();
    same.etag = case.etag.clone();
    let answer = ok(client.update_invoice_case(same.clone()).await);
    assert_eq!(answer, case, "the case as it is, same etag");
    let mut same_line = update_line(&case, 0, &["disputed_amount"], |l| {
        l.disputed_amount = "40.0".into()
    });
    same_line.etag = case.etag.clone();
    assert_eq!(ok(client.update_case_line(same_line).await), case);
    assert_unchanged(&mut client, &case, 2).await;

    // The request id was not recorded: the same id with another request
    // is a new request, not a reuse.
    let mut other = update_case(&case, &["priority"], |c| c.priority = Priority::High.into());
    other.request_id = rid.clone();
    let changed = ok(client.update_invoice_case(other.clone()).await);
    assert_eq!(changed.priority(), Priority::High);
    assert_eq!(changed.etag, "3");
    // ... which it is now: the first request under it again is a reuse.
    let status = expect_code(
        client.update_invoice_case(same).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["request_id"]);
    // A stale etag is refused even when nothing would change.
    let mut stale = update_case(&case, &["priority"], |c| c.priority = Priority::High.into());
    stale.etag = case.etag.clone();
    expect_code(client.update_invoice_case(stale).await, Code::Aborted);
    assert_eq!(history(&mut client, &case.id).await.len(), 3);
}

#[tokio::test]
async fn etags_and_request_ids_work_as_on_every_mutation() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let case = case_in_state(&mut client, pb::invoice_case::State::WorkInProgress).await;
    let events = history(&mut client, &case.id).await.len();

    let mut stale = update_line(&case, 0, &["disputed_amount"], |l| {
        l.disputed_amount = "12.34".into()
    });
    stale.etag = "1".into();
    let status = expect_code(client.update_case_line(stale).await, Code::Aborted);
    let details = status.get_error_details();
    assert_eq!(
        details.error_info().map(|i| i.reason.as_str()),
        Some("ETAG_MISMATCH")
    );
    assert_unchanged(&mut client, &case, events).await;

    let rid = Uuid::new_v4().to_string();
    let mut request = update_line(&case, 0, &["disputed_amount", "disputed_quantity"], |l| {
        l.disputed_amount = "12.34".into();
        l.disputed_quantity = Some("1.5".into());
    });
    request.etag = case.etag.clone();
    request.request_id = rid.clone();
    request.comment = "customer lowered the claim".into();
    let first = ok(client.update_case_line(request.clone()).await);
    assert_eq!(first.lines[0].disputed_amount, "12.34");
    assert_eq!(first.lines[0].disputed_quantity.as_deref(), Some("1.5"));
    // Moved on: another edit, then the retry still gets the first answer.
    let later = ok(client
        .update_invoice_case(update_case(&first, &["priority"], |c| {
            c.priority = Priority::Critical.into()
        }))
        .await);
    let retry = ok(client.update_case_line(request.clone()).await);
    assert_eq!(retry, first);
    assert_eq!(get(&mut client, &case.id).await, later);
    let log = history(&mut client, &case.id).await;
    assert_eq!(log.len(), events + 2);
    assert_eq!(log[events].comment, "customer lowered the claim");
    assert_eq!(log[events].actor, "admin");
    // The same id with another request is refused.
    request.update_mask = mask(&["disputed_amount"]);
    let status = expect_code(
        client.update_case_line(request).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["request_id"]);

    // A priority changed after submission is stored, and lists by it.
    let listed = ok(client
        .list_invoice_cases(pb::ListInvoiceCasesRequest {
            filter: "priority = CRITICAL".into(),
            ..Default::default()
        })
        .await);
    assert_eq!(listed.invoice_cases, [later]);
    assert_replay_matches(&mut client, &case.id).await;
}

#[tokio::test]
async fn unknown_cases_and_lines_are_not_found() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let case = create(&mut client, "ACME", 1).await;
    let mut request = update_case(&case, &["priority"], |c| c.priority = Priority::High.into());
    request.case_id = Uuid::new_v4().to_string();
    expect_code(client.update_invoice_case(request).await, Code::NotFound);
    let mut request = update_line(&case, 0, &["disputed_amount"], |l| {
        l.disputed_amount = "1".into()
    });
    request.line_id = "INVCSL9999999".into();
    let status = expect_code(client.update_case_line(request).await, Code::NotFound);
    assert!(status.message().contains("INVCSL9999999"), "{status:?}");
    assert_unchanged(&mut client, &case, 1).await;
}
