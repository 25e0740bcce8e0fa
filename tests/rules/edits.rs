//! Which fields an edit may change, through the real API: every case field
//! in every case state (UpdateInvoiceCase), every line field for every
//! (case state, line state) (UpdateCaseLine), checked against tables
//! written from the rules of the issue. An allowed edit returns the new
//! value, moves the etag on and records one UPDATE event with exactly that
//! field change; a refused one is FAILED_PRECONDITION (FIELD_NOT_EDITABLE
//! naming the field, or INVALID_STATE_TRANSITION on a CLOSED or CANCELED
//! case) and changes nothing — neither the case nor its history.

use invoice_cases::pb::{
    self, case_line::State as L, invoice_case::State as C, state_change_event::Action as A,
};
use prost_types::FieldMask;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

const CASE_STATES: [C; 7] = [
    C::Draft,
    C::New,
    C::WorkInProgress,
    C::AwaitingInfo,
    C::Resolved,
    C::Closed,
    C::Canceled,
];

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

/// The rule for case fields: in DRAFT all seven; after submission, until
/// CLOSED or CANCELED, these four.
fn case_field_editable(state: C, field: &str) -> bool {
    match state {
        C::Draft => true,
        C::New | C::WorkInProgress | C::AwaitingInfo | C::Resolved => matches!(
            field,
            "priority" | "short_description" | "description" | "contact_id"
        ),
        _ => false,
    }
}

/// The rule for line fields: never of a final line; in a DRAFT case all
/// eight; after submission the disputed amount and quantity.
fn line_field_editable(case: C, line: L, field: &str) -> bool {
    if matches!(line, L::ResolvedAccepted | L::ResolvedDenied | L::Canceled) {
        return false;
    }
    match case {
        C::Draft => true,
        C::New | C::WorkInProgress | C::AwaitingInfo => {
            matches!(field, "disputed_amount" | "disputed_quantity")
        }
        _ => false,
    }
}

/// Each case field with a new value (in an order that keeps a DRAFT case
/// valid when applied one after the other: its lines name the case's
/// invoice, which fits MULTIPLE_INVOICES, and then the case's invoice may
/// change), and the texts the event records.
fn case_values() -> Vec<(&'static str, pb::InvoiceCase, &'static str, &'static str)> {
    use pb::invoice_case::{Priority, RequestSource};
    let set = |edit: fn(&mut pb::InvoiceCase)| {
        let mut case = pb::InvoiceCase::default();
        edit(&mut case);
        case
    };
    vec![
        (
            "contact_id",
            set(|c| c.contact_id = "CONTACT-2".into()),
            "",
            "CONTACT-2",
        ),
        (
            "request_source",
            set(|c| c.request_source = RequestSource::MultipleInvoices.into()),
            "SINGLE_INVOICE",
            "MULTIPLE_INVOICES",
        ),
        (
            "invoice_number",
            set(|c| c.invoice_number = "ARINV0099999".into()),
            "ARINV0012345",
            "ARINV0099999",
        ),
        (
            "short_description",
            set(|c| c.short_description = "Prices and quantities".into()),
            "Invoice disputed",
            "Prices and quantities",
        ),
        (
            "description",
            set(|c| c.description = "Both lines".into()),
            "",
            "Both lines",
        ),
        (
            "priority",
            set(|c| c.priority = Priority::High.into()),
            "LOW",
            "HIGH",
        ),
        (
            "currency_code",
            set(|c| c.currency_code = "USD".into()),
            "EUR",
            "USD",
        ),
    ]
}

/// A case of two lines that name the case's invoice, driven to `state`.
async fn case_naming_invoices(client: &mut Client, state: C) -> pb::InvoiceCase {
    let mut new = new_case("ACME", 2);
    for line in &mut new.lines {
        line.invoice_number = new.invoice_number.clone();
    }
    let case = ok(client
        .create_invoice_case(pb::CreateInvoiceCaseRequest {
            invoice_case: Some(new),
            ..Default::default()
        })
        .await);
    drive(client, case, state).await
}

/// Drives a DRAFT case to `state` with the RPCs.
async fn drive(client: &mut Client, case: pb::InvoiceCase, state: C) -> pb::InvoiceCase {
    let id = case.id.clone();
    match state {
        C::Draft => return case,
        C::Canceled => return ok(client.cancel_case(cancel(&id)).await),
        _ => {}
    }
    let case = ok(client.submit_case(submit(&id)).await);
    if state == C::New {
        return case;
    }
    let case = ok(client.assign_to_me(assign(&id)).await);
    match state {
        C::WorkInProgress => case,
        C::AwaitingInfo => ok(client.request_information(request_info(&id)).await),
        C::Resolved => ok(client.propose_solution(propose_all(&id)).await),
        C::Closed => {
            ok(client.propose_solution(propose_all(&id)).await);
            ok(client.close_case(close(&id)).await)
        }
        other => panic!("no fixture for {other:?}"),
    }
}

/// Checks a refusal: FIELD_NOT_EDITABLE naming `field` (for a line, with
/// its state and number) or, on a terminal case, INVALID_STATE_TRANSITION.
fn check_refusal(
    status: &tonic::Status,
    case_state: C,
    field: &str,
    line: Option<(&pb::CaseLine, L)>,
    failures: &mut Vec<String>,
    what: &str,
) {
    if status.code() != Code::FailedPrecondition {
        failures.push(format!("{what}: {status:?}"));
        return;
    }
    let details = status.get_error_details();
    let Some(info) = details.error_info() else {
        failures.push(format!("{what}: no ErrorInfo: {status:?}"));
        return;
    };
    let meta = |key: &str| info.metadata.get(key).map(String::as_str);
    if matches!(case_state, C::Closed | C::Canceled) {
        if info.reason != "INVALID_STATE_TRANSITION"
            || meta("action") != Some("UPDATE")
            || meta("currentState") != Some(case_state.as_str_name())
        {
            failures.push(format!("{what}: {info:?}"));
        }
        return;
    }
    let mut ok = info.reason == "FIELD_NOT_EDITABLE"
        && meta("field") == Some(field)
        && meta("caseState") == Some(case_state.as_str_name())
        && meta("action") == Some("UPDATE");
    if let Some((line, line_state)) = line {
        ok &= meta("lineState") == Some(line_state.as_str_name())
            && meta("lineNumber") == Some(line.number.as_str())
            && meta("lineId") == Some(line.id.as_str())
            && meta("entity") == Some("LINE");
    }
    let subjects: Vec<_> = details
        .precondition_failure()
        .map(|p| p.violations.iter().map(|v| v.subject.clone()).collect())
        .unwrap_or_default();
    ok &= subjects == [field];
    if !ok {
        failures.push(format!("{what}: {info:?} {subjects:?}"));
    }
}

#[tokio::test]
async fn every_case_field_in_every_case_state_through_the_api() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let mut failures = Vec::new();
    let mut allowed = 0;
    for state in CASE_STATES {
        let mut case = case_naming_invoices(&mut client, state).await;
        for (field, value, old, new) in case_values() {
            let what = format!("{field} in {state:?}");
            let events = history(&mut client, &case.id).await.len();
            let result = client
                .update_invoice_case(pb::UpdateInvoiceCaseRequest {
                    case_id: case.number.clone(),
                    etag: case.etag.clone(),
                    invoice_case: Some(value),
                    update_mask: mask(&[field]),
                    ..Default::default()
                })
                .await;
            match (case_field_editable(state, field), result) {
                (true, Ok(response)) => {
                    allowed += 1;
                    let after = response.into_inner();
                    if case_field_text(&after, field) != new {
                        failures.push(format!("{what}: the case has {after:?}"));
                    }
                    let etag: i64 = case.etag.parse().expect("etag");
                    if after.etag != (etag + 1).to_string() || after.state() != state {
                        failures.push(format!(
                            "{what}: etag {} state {:?}",
                            after.etag,
                            after.state()
                        ));
                    }
                    // Nothing else changed.
                    let mut expected = case.clone();
                    expected.etag = after.etag.clone();
                    expected.update_time = after.update_time;
                    let mut changed = after.clone();
                    set_case_field(&mut changed, field, &case);
                    if changed != expected {
                        failures.push(format!("{what}: more changed: {after:?}"));
                    }
                    let log = history(&mut client, &case.id).await;
                    let last = log.last().expect("events");
                    let expected_change = pb::FieldChange {
                        line_id: String::new(),
                        line_number: String::new(),
                        field: field.into(),
                        old_value: old.into(),
                        new_value: new.into(),
                    };
                    if log.len() != events + 1
                        || last.action() != A::Update
                        || !last.changes.is_empty()
                        || last.field_changes != [expected_change]
                        || last.etag != after.etag
                    {
                        failures.push(format!("{what}: event {last:?}"));
                    }
                    // The write reached the database.
                    if get(&mut client, &case.id).await != after {
                        failures.push(format!("{what}: the stored case differs"));
                    }
                    case = after;
                }
                (false, Err(status)) => {
                    check_refusal(&status, state, field, None, &mut failures, &what);
                    if get(&mut client, &case.id).await != case
                        || history(&mut client, &case.id).await.len() != events
                    {
                        failures.push(format!("{what}: a refused edit changed something"));
                    }
                }
                (editable, result) => {
                    failures.push(format!("{what}: editable {editable}, got {result:?}"))
                }
            }
        }
        assert_replay_matches(&mut client, &case.id).await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(allowed, 7 + 4 * 4);
}

/// Copies `field` from `from` into `case` (to compare the rest).
fn set_case_field(case: &mut pb::InvoiceCase, field: &str, from: &pb::InvoiceCase) {
    match field {
        "contact_id" => case.contact_id = from.contact_id.clone(),
        "request_source" => case.request_source = from.request_source,
        "invoice_number" => case.invoice_number = from.invoice_number.clone(),
        "short_description" => case.short_description = from.short_description.clone(),
        "description" => case.description = from.description.clone(),
        "priority" => case.priority = from.priority,
        "currency_code" => case.currency_code = from.currency_code.clone(),
        other => panic!("no case field {other}"),
    }
}

/// Each line field with a new value for the fixture line (invoiced 100.00,
/// disputed 40.00, no quantities, no invoice of its own), and the texts
/// the event records.
fn line_values() -> Vec<(&'static str, pb::CaseLine, &'static str, &'static str)> {
    let set = |edit: fn(&mut pb::CaseLine)| {
        let mut line = pb::CaseLine::default();
        edit(&mut line);
        line
    };
    vec![
        (
            "dispute_code",
            set(|l| l.dispute_code = pb::case_line::DisputeCode::Other.into()),
            "PRICING_DISCREPANCY",
            "OTHER",
        ),
        (
            "invoice_line_ref",
            set(|l| l.invoice_line_ref = "L-10".into()),
            "",
            "L-10",
        ),
        (
            "invoice_number",
            set(|l| l.invoice_number = "ARINV0012345".into()),
            "",
            "ARINV0012345",
        ),
        (
            "short_description",
            set(|l| l.short_description = "Unit price 12.50".into()),
            "line 0",
            "Unit price 12.50",
        ),
        (
            "invoiced_amount",
            set(|l| l.invoiced_amount = "150.00".into()),
            "100.00",
            "150.00",
        ),
        (
            "disputed_amount",
            set(|l| l.disputed_amount = "45.5".into()),
            "40.00",
            "45.5",
        ),
        (
            "invoiced_quantity",
            set(|l| l.invoiced_quantity = Some("10".into())),
            "",
            "10",
        ),
        (
            "disputed_quantity",
            set(|l| l.disputed_quantity = Some("2".into())),
            "",
            "2",
        ),
    ]
}

/// A case in `case_state` whose first line is in `line_state` (the second
/// keeps the case in its state).
async fn case_with_line(client: &mut Client, case_state: C, line_state: L) -> pb::InvoiceCase {
    let case = case_in_state(client, case_state).await;
    let first = case.lines[0].clone();
    if first.state() == line_state {
        return case;
    }
    let mut request = set_line(&case.id, &first.id, line_state);
    if line_state == L::ResolvedAccepted {
        request.resolution_code = pb::invoice_case::ResolutionCode::SolvedCredit.into();
    }
    let case = ok(client.set_line_state(request).await);
    assert_eq!(case.state(), case_state, "the fixture keeps its state");
    assert_eq!(case.lines[0].state(), line_state);
    case
}

#[tokio::test]
async fn every_line_field_in_every_case_and_line_state_through_the_api() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let pairs = [
        (C::Draft, L::Draft),
        (C::Draft, L::Canceled),
        (C::New, L::New),
        (C::New, L::Canceled),
        (C::WorkInProgress, L::WorkInProgress),
        (C::WorkInProgress, L::AwaitingInfo),
        (C::WorkInProgress, L::ResolvedAccepted),
        (C::WorkInProgress, L::ResolvedDenied),
        (C::WorkInProgress, L::Canceled),
        (C::AwaitingInfo, L::WorkInProgress),
        (C::AwaitingInfo, L::AwaitingInfo),
        (C::AwaitingInfo, L::ResolvedDenied),
        (C::Resolved, L::ResolvedAccepted),
        (C::Closed, L::ResolvedAccepted),
        (C::Canceled, L::Canceled),
    ];
    let mut failures = Vec::new();
    let mut allowed = 0;
    for (case_state, line_state) in pairs {
        let mut case = case_with_line(&mut client, case_state, line_state).await;
        let line = case.lines[0].clone();
        for (field, value, old, new) in line_values() {
            let what = format!("{field} of a {line_state:?} line in a {case_state:?} case");
            let events = history(&mut client, &case.id).await.len();
            let result = client
                .update_case_line(pb::UpdateCaseLineRequest {
                    case_id: case.id.clone(),
                    etag: case.etag.clone(),
                    line_id: line.number.clone(),
                    line: Some(value),
                    update_mask: mask(&[field]),
                    ..Default::default()
                })
                .await;
            match (line_field_editable(case_state, line_state, field), result) {
                (true, Ok(response)) => {
                    allowed += 1;
                    let after = response.into_inner();
                    let edited = &after.lines[0];
                    if line_field_text(edited, field) != new
                        || edited.state() != line_state
                        || after.state() != case_state
                    {
                        failures.push(format!("{what}: the line is {edited:?}"));
                    }
                    if after.lines[1] != case.lines[1] {
                        failures.push(format!("{what}: the other line changed"));
                    }
                    let log = history(&mut client, &case.id).await;
                    let last = log.last().expect("events");
                    let expected_change = pb::FieldChange {
                        line_id: line.id.clone(),
                        line_number: line.number.clone(),
                        field: field.into(),
                        old_value: old.into(),
                        new_value: new.into(),
                    };
                    if log.len() != events + 1
                        || last.action() != A::Update
                        || !last.changes.is_empty()
                        || last.field_changes != [expected_change]
                    {
                        failures.push(format!("{what}: event {last:?}"));
                    }
                    if get(&mut client, &case.id).await != after {
                        failures.push(format!("{what}: the stored case differs"));
                    }
                    case = after;
                }
                (false, Err(status)) => {
                    check_refusal(
                        &status,
                        case_state,
                        field,
                        Some((&line, line_state)),
                        &mut failures,
                        &what,
                    );
                    if get(&mut client, &case.id).await != case
                        || history(&mut client, &case.id).await.len() != events
                    {
                        failures.push(format!("{what}: a refused edit changed something"));
                    }
                }
                (editable, result) => {
                    failures.push(format!("{what}: editable {editable}, got {result:?}"))
                }
            }
        }
        assert_replay_matches(&mut client, &case.id).await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // A DRAFT line: all eight; the open lines of NEW, WORK_IN_PROGRESS and
    // AWAITING_INFO cases (five pairs): two each.
    assert_eq!(allowed, 8 + 2 * 5);
}
