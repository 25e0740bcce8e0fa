//! Edits (UpdateInvoiceCase, UpdateCaseLine) against the rules of the
//! issue, written out here as tables of their own: which field each case
//! state and line state lets change, the checks of create on the record as
//! it will be, the field changes recorded, and edits that change nothing.
//! A property test drives random edits among random actions and replays
//! the recorded field changes onto the created case.

use proptest::prelude::*;

use super::*;
use crate::domain::{
    event::{Action, ChangedLine, FieldChange},
    invariants,
    machine::{
        self, CaseField, CaseIdentity, Command, Decision, DomainError, LineField, LineOutcome,
        LineResolution, NotEditable, Outcome, ProposeSolution, RefusedLine, Violation,
    },
};

use CaseState as CS;
use LineState as LS;

/// Every case state.
const CASE_STATES: [CaseState; 7] = [
    CS::Draft,
    CS::New,
    CS::WorkInProgress,
    CS::AwaitingInfo,
    CS::Resolved,
    CS::Closed,
    CS::Canceled,
];

/// The API name of a priority, as the proto spells it.
fn priority_name(priority: Priority) -> &'static str {
    match priority {
        Priority::Critical => "CRITICAL",
        Priority::High => "HIGH",
        Priority::Moderate => "MODERATE",
        Priority::Low => "LOW",
    }
}

fn decide(case: &Case, command: Command) -> Result<Decision, DomainError> {
    machine::decide(case, command, ctx())
}

fn update_case(fields: Vec<CaseField>) -> Command {
    Command::UpdateCase { fields }
}

fn update_line(n: u32, fields: Vec<LineField>) -> Command {
    Command::UpdateLine {
        line: by_id(n),
        fields,
    }
}

fn some(text: &str) -> Option<String> {
    Some(text.to_owned())
}

fn case_change(field: &str, old: Option<&str>, new: Option<&str>) -> FieldChange {
    FieldChange {
        line: None,
        field: field.into(),
        old: old.map(str::to_owned),
        new: new.map(str::to_owned),
    }
}

fn line_field_change(n: u32, field: &str, old: Option<&str>, new: Option<&str>) -> FieldChange {
    FieldChange {
        line: Some(ChangedLine {
            id: line_id(n),
            number: line_no(n),
        }),
        field: field.into(),
        old: old.map(str::to_owned),
        new: new.map(str::to_owned),
    }
}

fn violations(error: DomainError) -> Vec<Violation> {
    match error {
        DomainError::InvalidRequest(violations) => violations,
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}

fn fields_of(violations: &[Violation]) -> Vec<&str> {
    violations.iter().map(|v| v.field.as_str()).collect()
}

// ---------------------------------------------------------------------------
// Which case field each case state lets change.
// ---------------------------------------------------------------------------

/// The rule: in DRAFT every field; after submission until CLOSED or
/// CANCELED only priority, short_description, description and contact_id.
fn case_field_editable(state: CaseState, field: &str) -> bool {
    match state {
        CS::Draft => true,
        CS::New | CS::WorkInProgress | CS::AwaitingInfo | CS::Resolved => matches!(
            field,
            "priority" | "short_description" | "description" | "contact_id"
        ),
        CS::Closed | CS::Canceled => false,
    }
}

/// Lines of a case in `state` (SPEC §3.5).
fn lines_for(state: CaseState) -> Vec<LineState> {
    match state {
        CS::Draft => vec![LS::Draft, LS::Canceled],
        CS::New => vec![LS::New, LS::Canceled],
        CS::WorkInProgress => vec![LS::WorkInProgress, LS::ResolvedAccepted],
        CS::AwaitingInfo => vec![LS::AwaitingInfo, LS::WorkInProgress],
        CS::Resolved | CS::Closed => vec![LS::ResolvedAccepted, LS::ResolvedDenied],
        CS::Canceled => vec![LS::Canceled, LS::Canceled],
    }
}

/// A new value of every case field, different from the fixture's, with the
/// change it records and the fixture it applies to (one that stays valid
/// after the change).
fn case_edits(state: CaseState) -> Vec<(CaseField, FieldChange, Case)> {
    let plain = case(state, &lines_for(state));
    // Lines that name the case's invoice fit both request sources.
    let mut lines_name_invoice = plain.clone();
    for line in &mut lines_name_invoice.lines {
        line.invoice_number = some(CASE_INVOICE);
    }
    vec![
        (
            CaseField::ContactId(some("CONTACT-2")),
            case_change("contact_id", None, Some("CONTACT-2")),
            plain.clone(),
        ),
        (
            CaseField::InvoiceNumber(some("ARINV0099999")),
            case_change("invoice_number", Some(CASE_INVOICE), Some("ARINV0099999")),
            plain.clone(),
        ),
        (
            CaseField::RequestSource(RequestSource::MultipleInvoices),
            case_change(
                "request_source",
                Some("SINGLE_INVOICE"),
                Some("MULTIPLE_INVOICES"),
            ),
            lines_name_invoice,
        ),
        (
            CaseField::ShortDescription("Wrong prices and quantities".into()),
            case_change(
                "short_description",
                Some("Wrong prices"),
                Some("Wrong prices and quantities"),
            ),
            plain.clone(),
        ),
        (
            CaseField::Description(some("Line 1 too")),
            case_change("description", None, Some("Line 1 too")),
            plain.clone(),
        ),
        (
            CaseField::Priority(Priority::High),
            case_change("priority", Some("LOW"), Some("HIGH")),
            plain.clone(),
        ),
        (
            CaseField::CurrencyCode("USD".into()),
            case_change("currency_code", Some("EUR"), Some("USD")),
            plain,
        ),
    ]
}

/// The value a case field has, as an event's text.
fn case_field_text(case: &Case, field: &str) -> Option<String> {
    match field {
        "contact_id" => case.contact_id.clone(),
        "invoice_number" => case.invoice_number.clone(),
        "request_source" => Some(case.request_source.as_str().into()),
        "short_description" => Some(case.short_description.clone()),
        "description" => case.description.clone(),
        "priority" => Some(priority_name(case.priority).into()),
        "currency_code" => Some(case.currency_code.clone()),
        other => panic!("no case field {other}"),
    }
}

#[test]
fn every_case_field_in_every_case_state_changes_or_is_refused_as_the_rules_say() {
    let mut failures = Vec::new();
    let mut allowed = 0;
    for state in CASE_STATES {
        for (field, change, before) in case_edits(state) {
            let name = field.name();
            let what = format!("{name} in {state}");
            assert_eq!(invariants::check(&before), Ok(()), "fixture of {what}");
            let result = decide(&before, update_case(vec![field]));
            match (
                state.is_terminal(),
                case_field_editable(state, name),
                result,
            ) {
                (true, _, Err(error)) => {
                    let expected = DomainError::InvalidTransition {
                        action: Action::Update,
                        case_state: state,
                        line: None,
                    };
                    if error != expected {
                        failures.push(format!("{what}: {error:?}, expected {expected:?}"));
                    }
                }
                (
                    false,
                    false,
                    Err(DomainError::FieldsNotEditable {
                        case_state,
                        line,
                        fields,
                    }),
                ) => {
                    let names: Vec<_> = fields.iter().map(|f| f.field).collect();
                    if case_state != state || line.is_some() || names != [name] {
                        failures.push(format!(
                            "{what}: refused as {case_state} {line:?} {names:?}"
                        ));
                    }
                }
                (false, true, Ok(decision)) => {
                    allowed += 1;
                    let after = &decision.case;
                    let mut expected = before.clone();
                    expected.revision += 1;
                    expected.update_time = now();
                    match name {
                        "contact_id" => expected.contact_id = some("CONTACT-2"),
                        "invoice_number" => expected.invoice_number = some("ARINV0099999"),
                        "request_source" => {
                            expected.request_source = RequestSource::MultipleInvoices
                        }
                        "short_description" => {
                            expected.short_description = "Wrong prices and quantities".into()
                        }
                        "description" => expected.description = some("Line 1 too"),
                        "priority" => expected.priority = Priority::High,
                        "currency_code" => expected.currency_code = "USD".into(),
                        other => panic!("no case field {other}"),
                    }
                    if after != &expected {
                        failures.push(format!("{what}: got {after:?}\nexpected {expected:?}"));
                    }
                    if decision.action != Action::Update
                        || !decision.changes.is_empty()
                        || decision.field_changes != [change.clone()]
                        || !decision.updated_lines.is_empty()
                        || decision.is_no_op()
                    {
                        failures.push(format!("{what}: decision {decision:?}"));
                    }
                    if case_field_text(after, name) != change.new {
                        failures.push(format!("{what}: the event's new value is not the case's"));
                    }
                }
                (terminal, editable, result) => failures.push(format!(
                    "{what}: terminal {terminal}, editable {editable}, but {result:?}"
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Seven fields in DRAFT, four in each of NEW, WORK_IN_PROGRESS,
    // AWAITING_INFO and RESOLVED.
    assert_eq!(allowed, 7 + 4 * 4);
}

// ---------------------------------------------------------------------------
// Which line field each (case state, line state) lets change.
// ---------------------------------------------------------------------------

/// The rule: a final line never changes; in a DRAFT case every field of a
/// line; after submission disputed_amount and disputed_quantity.
fn line_field_editable(case: CaseState, line: LineState, field: &str) -> bool {
    let line_final = matches!(
        line,
        LS::ResolvedAccepted | LS::ResolvedDenied | LS::Canceled
    );
    if line_final {
        return false;
    }
    match case {
        CS::Draft => true,
        CS::New | CS::WorkInProgress | CS::AwaitingInfo => {
            matches!(field, "disputed_amount" | "disputed_quantity")
        }
        CS::Resolved | CS::Closed | CS::Canceled => false,
    }
}

/// A new value of every line field (of fixture line 0), with the change it
/// records.
fn line_edits() -> Vec<(LineField, FieldChange)> {
    vec![
        (
            LineField::DisputeCode(DisputeCode::Other),
            line_field_change(
                0,
                "dispute_code",
                Some("PRICING_DISCREPANCY"),
                Some("OTHER"),
            ),
        ),
        (
            LineField::InvoiceLineRef(some("L-NEW")),
            line_field_change(0, "invoice_line_ref", Some("L0"), Some("L-NEW")),
        ),
        (
            LineField::InvoiceNumber(some(CASE_INVOICE)),
            line_field_change(0, "invoice_number", None, Some(CASE_INVOICE)),
        ),
        (
            LineField::ShortDescription("price 12.50".into()),
            line_field_change(0, "short_description", Some("line 0"), Some("price 12.50")),
        ),
        (
            LineField::InvoicedAmount(dec("150.00")),
            line_field_change(0, "invoiced_amount", Some("120.00"), Some("150.00")),
        ),
        (
            LineField::DisputedAmount(dec("80.5")),
            line_field_change(0, "disputed_amount", Some(DISPUTED), Some("80.5")),
        ),
        (
            LineField::InvoicedQuantity(Some(dec("10"))),
            line_field_change(0, "invoiced_quantity", None, Some("10")),
        ),
        (
            LineField::DisputedQuantity(Some(dec("2.5"))),
            line_field_change(0, "disputed_quantity", None, Some("2.5")),
        ),
    ]
}

/// The line states a line of a case in `state` may be in (SPEC §3.5).
fn line_states_in(state: CaseState) -> Vec<LineState> {
    match state {
        CS::Draft => vec![LS::Draft, LS::Canceled],
        CS::New => vec![LS::New, LS::Canceled],
        CS::WorkInProgress | CS::AwaitingInfo => vec![
            LS::WorkInProgress,
            LS::AwaitingInfo,
            LS::ResolvedAccepted,
            LS::ResolvedDenied,
            LS::Canceled,
        ],
        CS::Resolved | CS::Closed => {
            vec![LS::ResolvedAccepted, LS::ResolvedDenied, LS::Canceled]
        }
        CS::Canceled => vec![LS::Canceled],
    }
}

/// A second line that keeps a case in `state` valid whatever line 0 is.
fn other_line(state: CaseState) -> LineState {
    match state {
        CS::Draft => LS::Draft,
        CS::New => LS::New,
        CS::WorkInProgress => LS::WorkInProgress,
        CS::AwaitingInfo => LS::AwaitingInfo,
        CS::Resolved | CS::Closed => LS::ResolvedDenied,
        CS::Canceled => LS::Canceled,
    }
}

#[test]
fn every_line_field_in_every_case_and_line_state_changes_or_is_refused_as_the_rules_say() {
    let mut failures = Vec::new();
    let mut allowed = 0;
    for case_state in CASE_STATES {
        for line_state in line_states_in(case_state) {
            for (field, change) in line_edits() {
                let name = field.name();
                let what = format!("{name} of a {line_state} line in a {case_state} case");
                let before = case(case_state, &[line_state, other_line(case_state)]);
                assert_eq!(invariants::check(&before), Ok(()), "fixture of {what}");
                let result = decide(&before, update_line(0, vec![field]));
                let editable = line_field_editable(case_state, line_state, name);
                match (case_state.is_terminal(), editable, result) {
                    (true, _, Err(error)) => {
                        let expected = DomainError::InvalidTransition {
                            action: Action::Update,
                            case_state,
                            line: None,
                        };
                        if error != expected {
                            failures.push(format!("{what}: {error:?}, expected {expected:?}"));
                        }
                    }
                    (
                        false,
                        false,
                        Err(DomainError::FieldsNotEditable {
                            case_state: state,
                            line,
                            fields,
                        }),
                    ) => {
                        let expected_line = RefusedLine {
                            id: line_id(0),
                            number: line_no(0),
                            state: line_state,
                        };
                        let names: Vec<_> = fields.iter().map(|f| f.field).collect();
                        if state != case_state || line != Some(expected_line) || names != [name] {
                            failures.push(format!("{what}: refused as {state} {line:?} {names:?}"));
                        }
                    }
                    (false, true, Ok(decision)) => {
                        allowed += 1;
                        let mut expected = before.clone();
                        expected.revision += 1;
                        expected.update_time = now();
                        let line = &mut expected.lines[0];
                        line.update_time = now();
                        match name {
                            "dispute_code" => line.dispute_code = DisputeCode::Other,
                            "invoice_line_ref" => line.invoice_line_ref = some("L-NEW"),
                            "invoice_number" => line.invoice_number = some(CASE_INVOICE),
                            "short_description" => line.short_description = "price 12.50".into(),
                            "invoiced_amount" => line.invoiced_amount = dec("150.00"),
                            "disputed_amount" => line.disputed_amount = dec("80.5"),
                            "invoiced_quantity" => line.invoiced_quantity = Some(dec("10")),
                            "disputed_quantity" => line.disputed_quantity = Some(dec("2.5")),
                            other => panic!("no line field {other}"),
                        }
                        if decision.case != expected {
                            failures.push(format!(
                                "{what}: got {:?}\nexpected {expected:?}",
                                decision.case
                            ));
                        }
                        if decision.action != Action::Update
                            || !decision.changes.is_empty()
                            || decision.field_changes != [change.clone()]
                            || decision.updated_lines != [line_id(0)]
                        {
                            failures.push(format!("{what}: decision {decision:?}"));
                        }
                    }
                    (terminal, editable, result) => failures.push(format!(
                        "{what}: terminal {terminal}, editable {editable}, but {result:?}"
                    )),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // A DRAFT line: 8 fields; a NEW, WORK_IN_PROGRESS or AWAITING_INFO line
    // of a NEW case (1 line state), WORK_IN_PROGRESS case (2) and
    // AWAITING_INFO case (2): 2 fields each.
    assert_eq!(allowed, 8 + 2 * (1 + 2 + 2));
}

#[test]
fn every_field_the_state_refuses_is_named_at_once_and_nothing_changes() {
    let before = case(CS::New, &[LS::New]);
    let error = decide(
        &before,
        update_case(vec![
            CaseField::CurrencyCode("USD".into()),
            CaseField::Priority(Priority::Critical),
            CaseField::RequestSource(RequestSource::MultipleInvoices),
            // Refused even with the value it has: the mask names it.
            CaseField::InvoiceNumber(some(CASE_INVOICE)),
        ]),
    )
    .unwrap_err();
    let DomainError::FieldsNotEditable {
        case_state, fields, ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(*case_state, CS::New);
    let names: Vec<_> = fields.iter().map(|f| f.field).collect();
    assert_eq!(names, ["currency_code", "request_source", "invoice_number"]);
    assert_eq!(
        error.to_string(),
        "currency_code, request_source, invoice_number cannot change while the case is NEW"
    );

    let before = case(
        CS::WorkInProgress,
        &[LS::ResolvedDenied, LS::WorkInProgress],
    );
    let error = decide(
        &before,
        update_line(
            0,
            vec![
                LineField::DisputedAmount(dec("1")),
                LineField::ShortDescription("x".into()),
            ],
        ),
    )
    .unwrap_err();
    assert_eq!(
        error,
        DomainError::FieldsNotEditable {
            case_state: CS::WorkInProgress,
            line: Some(RefusedLine {
                id: line_id(0),
                number: line_no(0),
                state: LS::ResolvedDenied,
            }),
            fields: vec![
                NotEditable {
                    field: "disputed_amount",
                    reason: format!(
                        "line {} is RESOLVED_DENIED: a final line does not change",
                        line_no(0)
                    ),
                },
                NotEditable {
                    field: "short_description",
                    reason: format!(
                        "line {} is RESOLVED_DENIED: a final line does not change",
                        line_no(0)
                    ),
                },
            ],
        }
    );
}

#[test]
fn a_terminal_case_refuses_even_an_edit_that_changes_nothing() {
    for state in [CS::Closed, CS::Canceled] {
        let before = case(state, &lines_for(state));
        let same = update_case(vec![CaseField::Priority(before.priority)]);
        assert_eq!(
            decide(&before, same),
            Err(DomainError::InvalidTransition {
                action: Action::Update,
                case_state: state,
                line: None,
            })
        );
        let same_line = update_line(0, vec![LineField::DisputedAmount(dec(DISPUTED))]);
        assert!(matches!(
            decide(&before, same_line),
            Err(DomainError::InvalidTransition {
                action: Action::Update,
                ..
            })
        ));
    }
}

#[test]
fn an_unknown_line_is_not_found() {
    let before = case(CS::Draft, &[LS::Draft]);
    let unknown = LineRef::Number(line_number(9_999_999));
    assert_eq!(
        decide(
            &before,
            Command::UpdateLine {
                line: unknown.clone(),
                fields: vec![LineField::DisputedAmount(dec("1"))],
            }
        ),
        Err(DomainError::LineNotFound(unknown))
    );
}

// ---------------------------------------------------------------------------
// The checks of create, on the record as it will be.
// ---------------------------------------------------------------------------

#[test]
fn a_disputed_amount_over_the_invoiced_one_is_refused_on_the_field_the_edit_named() {
    let before = case(CS::Draft, &[LS::Draft]);
    // The fixture line: invoiced 120.00, disputed 100.00.
    let error = decide(
        &before,
        update_line(0, vec![LineField::DisputedAmount(dec("120.01"))]),
    )
    .unwrap_err();
    assert_eq!(fields_of(&violations(error)), ["line.disputed_amount"]);
    let error = decide(
        &before,
        update_line(0, vec![LineField::InvoicedAmount(dec("99.99"))]),
    )
    .unwrap_err();
    let found = violations(error);
    assert_eq!(fields_of(&found), ["line.invoiced_amount"]);
    assert_eq!(
        found[0].description,
        "the disputed amount 100.00 would be more than the invoiced amount 99.99"
    );
    let error = decide(
        &before,
        update_line(
            0,
            vec![
                LineField::InvoicedAmount(dec("10")),
                LineField::DisputedAmount(dec("20")),
            ],
        ),
    )
    .unwrap_err();
    assert_eq!(fields_of(&violations(error)), ["line.disputed_amount"]);
    // Equal is allowed, and both at once may move past the old values.
    let decision = decide(
        &before,
        update_line(
            0,
            vec![
                LineField::InvoicedAmount(dec("500")),
                LineField::DisputedAmount(dec("500.0000")),
            ],
        ),
    )
    .unwrap();
    assert_eq!(
        decision.case.lines[0].disputed_amount.to_string(),
        "500.0000"
    );
    // After submission too (only the disputed amount may change).
    let before = case(CS::WorkInProgress, &[LS::AwaitingInfo]);
    let error = decide(
        &before,
        update_line(0, vec![LineField::DisputedAmount(dec("121"))]),
    )
    .unwrap_err();
    assert_eq!(fields_of(&violations(error)), ["line.disputed_amount"]);
}

#[test]
fn a_single_invoice_case_keeps_its_invoice_and_its_lines_fit_the_request_source() {
    // Clearing the invoice of a SINGLE_INVOICE case.
    let before = case(CS::Draft, &[LS::Draft]);
    let error = decide(&before, update_case(vec![CaseField::InvoiceNumber(None)])).unwrap_err();
    assert_eq!(
        violations(error),
        [Violation {
            field: "invoice_case.invoice_number".into(),
            description: "is required when request_source is SINGLE_INVOICE".into(),
        }]
    );
    // ... allowed together with MULTIPLE_INVOICES when the lines name theirs.
    let mut named = before.clone();
    named.lines[0].invoice_number = some("ARINV0000777");
    named.lines.push(line(1, LS::Draft));
    named.lines[1].invoice_number = some("ARINV0000778");
    let mut single_named = named.clone();
    single_named.lines[0].invoice_number = some(CASE_INVOICE);
    single_named.lines[1].invoice_number = some(CASE_INVOICE);
    let decision = decide(
        &single_named,
        update_case(vec![
            CaseField::RequestSource(RequestSource::MultipleInvoices),
            CaseField::InvoiceNumber(None),
        ]),
    )
    .unwrap();
    assert_eq!(
        decision.field_changes,
        [
            case_change(
                "request_source",
                Some("SINGLE_INVOICE"),
                Some("MULTIPLE_INVOICES")
            ),
            case_change("invoice_number", Some(CASE_INVOICE), None),
        ]
    );

    // MULTIPLE_INVOICES needs every line to name its invoice: each line
    // that does not is named.
    let before = case(CS::Draft, &[LS::Draft, LS::Canceled, LS::Draft]);
    let error = decide(
        &before,
        update_case(vec![CaseField::RequestSource(
            RequestSource::MultipleInvoices,
        )]),
    )
    .unwrap_err();
    let found = violations(error);
    assert_eq!(
        fields_of(&found),
        [
            "invoice_case.lines[0].invoice_number",
            "invoice_case.lines[1].invoice_number",
            "invoice_case.lines[2].invoice_number",
        ]
    );
    assert_eq!(
        found[2].description,
        format!(
            "is required on lines of MULTIPLE_INVOICES cases (line {})",
            line_no(2)
        )
    );

    // Back to SINGLE_INVOICE: the lines must name the case's invoice or none.
    let mut multiple = named.clone();
    multiple.request_source = RequestSource::MultipleInvoices;
    multiple.invoice_number = None;
    let error = decide(
        &multiple,
        update_case(vec![
            CaseField::RequestSource(RequestSource::SingleInvoice),
            CaseField::InvoiceNumber(some("ARINV0000777")),
        ]),
    )
    .unwrap_err();
    assert_eq!(
        fields_of(&violations(error)),
        ["invoice_case.lines[1].invoice_number"]
    );

    // A new invoice number of a SINGLE_INVOICE case re-checks the lines.
    let error = decide(
        &single_named,
        update_case(vec![CaseField::InvoiceNumber(some("ARINV0099999"))]),
    )
    .unwrap_err();
    assert_eq!(
        fields_of(&violations(error)),
        [
            "invoice_case.lines[0].invoice_number",
            "invoice_case.lines[1].invoice_number"
        ]
    );

    // A line's own invoice number against its case.
    let before = case(CS::Draft, &[LS::Draft]);
    let error = decide(
        &before,
        update_line(0, vec![LineField::InvoiceNumber(some("ARINV0099999"))]),
    )
    .unwrap_err();
    assert_eq!(fields_of(&violations(error)), ["line.invoice_number"]);
    let mut multiple_case = case(CS::Draft, &[LS::Draft]);
    multiple_case.request_source = RequestSource::MultipleInvoices;
    multiple_case.invoice_number = None;
    multiple_case.lines[0].invoice_number = some("ARINV0000777");
    let error = decide(
        &multiple_case,
        update_line(0, vec![LineField::InvoiceNumber(None)]),
    )
    .unwrap_err();
    assert_eq!(fields_of(&violations(error)), ["line.invoice_number"]);
}

// ---------------------------------------------------------------------------
// Edits that change nothing, and several fields at once.
// ---------------------------------------------------------------------------

#[test]
fn an_edit_to_the_values_the_case_has_changes_nothing() {
    let before = case(CS::WorkInProgress, &[LS::WorkInProgress]);
    for command in [
        update_case(vec![
            CaseField::Priority(Priority::Low),
            CaseField::ShortDescription("Wrong prices".into()),
            CaseField::Description(None),
            CaseField::ContactId(None),
        ]),
        // Decimals compare by value: 100.0 is the 100.00 the line has.
        update_line(
            0,
            vec![
                LineField::DisputedAmount(dec("100.0")),
                LineField::DisputedQuantity(None),
            ],
        ),
    ] {
        let decision = decide(&before, command.clone()).unwrap();
        assert!(decision.is_no_op(), "{command:?}");
        assert_eq!(decision.case, before, "{command:?}");
        assert!(decision.field_changes.is_empty());
        assert!(decision.updated_lines.is_empty());
    }
}

#[test]
fn only_the_fields_that_change_are_recorded_in_the_order_named() {
    let before = case(CS::AwaitingInfo, &[LS::AwaitingInfo, LS::WorkInProgress]);
    let decision = decide(
        &before,
        update_case(vec![
            CaseField::Description(some("more")),
            CaseField::Priority(Priority::Low),
            CaseField::ContactId(some("C-9")),
            CaseField::Priority(Priority::Critical),
        ]),
    )
    .unwrap();
    assert_eq!(
        decision.field_changes,
        [
            case_change("description", None, Some("more")),
            case_change("contact_id", None, Some("C-9")),
            case_change("priority", Some("LOW"), Some("CRITICAL")),
        ]
    );
    assert_eq!(decision.case.state, CS::AwaitingInfo);
    assert!(decision.changes.is_empty());

    // Clearing an optional field records it as unset.
    let mut with_quantity = case(CS::New, &[LS::New]);
    with_quantity.lines[0].disputed_quantity = Some(dec("3"));
    let decision = decide(
        &with_quantity,
        update_line(0, vec![LineField::DisputedQuantity(None)]),
    )
    .unwrap();
    assert_eq!(
        decision.field_changes,
        [line_field_change(0, "disputed_quantity", Some("3"), None)]
    );
    assert_eq!(decision.case.lines[0].disputed_quantity, None);
    assert_eq!(decision.case.lines[0].update_time, now());
    assert_eq!(decision.case.lines[0].state, LS::New);
}

// ---------------------------------------------------------------------------
// Random edits among random actions.
// ---------------------------------------------------------------------------

/// A random step: an action of the lifecycle, or an edit.
#[derive(Debug, Clone)]
enum Step {
    Submit,
    AssignToMe,
    RequestInformation,
    InformationReceived,
    SetLineState(usize, LineState),
    Propose(Outcome),
    Close,
    Cancel,
    AddLine(u32),
    RemoveLine(usize),
    EditCase(Vec<CaseField>),
    EditLine(usize, Vec<LineField>),
}

/// Values from small pools, so that edits repeat values (no-ops), clear
/// fields and break the rules (refusals).
fn case_field() -> impl Strategy<Value = CaseField> {
    let text = || prop::option::of(prop::sample::select(vec!["A-1", "A-2"]));
    prop_oneof![
        text().prop_map(|v| CaseField::ContactId(v.map(Into::into))),
        prop::option::of(prop::sample::select(vec![CASE_INVOICE, "ARINV0000777"]))
            .prop_map(|v| CaseField::InvoiceNumber(v.map(Into::into))),
        prop::sample::select(RequestSource::ALL).prop_map(CaseField::RequestSource),
        prop::sample::select(vec!["Wrong prices", "Short"])
            .prop_map(|v| CaseField::ShortDescription(v.into())),
        text().prop_map(|v| CaseField::Description(v.map(Into::into))),
        prop::sample::select(vec![
            Priority::Critical,
            Priority::High,
            Priority::Moderate,
            Priority::Low
        ])
        .prop_map(CaseField::Priority),
        prop::sample::select(vec!["EUR", "USD"]).prop_map(|v| CaseField::CurrencyCode(v.into())),
    ]
}

fn money() -> impl Strategy<Value = Decimal> {
    prop::sample::select(vec!["0", "50", "50.00", "100.00", "120.00", "150.5"]).prop_map(dec)
}

fn line_field() -> impl Strategy<Value = LineField> {
    prop_oneof![
        prop::sample::select(DisputeCode::ALL).prop_map(LineField::DisputeCode),
        prop::option::of(prop::sample::select(vec!["L1", "L2"]))
            .prop_map(|v| LineField::InvoiceLineRef(v.map(Into::into))),
        prop::option::of(prop::sample::select(vec![CASE_INVOICE, "ARINV0000777"]))
            .prop_map(|v| LineField::InvoiceNumber(v.map(Into::into))),
        prop::sample::select(vec!["line", "other"])
            .prop_map(|v| LineField::ShortDescription(v.into())),
        money().prop_map(LineField::InvoicedAmount),
        money().prop_map(LineField::DisputedAmount),
        prop::option::of(money()).prop_map(LineField::InvoicedQuantity),
        prop::option::of(money()).prop_map(LineField::DisputedQuantity),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::Submit),
        2 => Just(Step::AssignToMe),
        1 => Just(Step::RequestInformation),
        1 => Just(Step::InformationReceived),
        2 => (0..4usize, prop::sample::select(LineState::ALL.to_vec()))
            .prop_map(|(line, target)| Step::SetLineState(line, target)),
        1 => prop_oneof![Just(Outcome::Accepted), Just(Outcome::Denied)].prop_map(Step::Propose),
        1 => Just(Step::Close),
        1 => Just(Step::Cancel),
        1 => (0..15_000u32).prop_map(Step::AddLine),
        1 => (0..4usize).prop_map(Step::RemoveLine),
        5 => prop::collection::vec(case_field(), 1..4).prop_map(Step::EditCase),
        5 => (0..4usize, prop::collection::vec(line_field(), 1..4))
            .prop_map(|(line, fields)| Step::EditLine(line, fields)),
    ]
}

fn nth_line(case: &Case, index: usize) -> LineRef {
    match case.lines.len() {
        0 => LineRef::Id(Uuid::nil()),
        n => LineRef::Id(case.lines[index % n].id),
    }
}

fn command(step: &Step, case: &Case, sequence: &mut u32) -> Command {
    match step {
        Step::Submit => Command::Submit,
        Step::AssignToMe => Command::AssignToMe,
        Step::RequestInformation => Command::RequestInformation,
        Step::InformationReceived => Command::InformationReceived,
        Step::SetLineState(line, target) => Command::SetLineState {
            line: nth_line(case, *line),
            target: *target,
            resolution: LineResolution::default(),
        },
        Step::Propose(outcome) => Command::ProposeSolution(ProposeSolution {
            resolution_code: ResolutionCode::SolvedCredit,
            resolution_notes: "proposed".into(),
            default_outcome: Some(*outcome),
            line_outcomes: Vec::<LineOutcome>::new(),
        }),
        Step::Close => Command::Close,
        Step::Cancel => Command::Cancel,
        Step::AddLine(cents) => {
            *sequence += 1;
            let invoice_number = match case.request_source {
                RequestSource::SingleInvoice => case.invoice_number.clone(),
                RequestSource::MultipleInvoices => some("ARINV0000777"),
            };
            Command::AddLine {
                line: NewLine {
                    invoice_number,
                    invoiced_amount: dec("150.00"),
                    disputed_amount: dec(&format!("{}.{:02}", cents / 100, cents % 100)),
                    ..new_line(DISPUTED)
                },
                identity: identity(*sequence),
            }
        }
        Step::RemoveLine(line) => Command::RemoveLine {
            line: nth_line(case, *line),
        },
        Step::EditCase(fields) => Command::UpdateCase {
            fields: fields.clone(),
        },
        Step::EditLine(line, fields) => Command::UpdateLine {
            line: nth_line(case, *line),
            fields: fields.clone(),
        },
    }
}

/// Every editable field of the case and its lines, as an event's text:
/// `(line id, field) → value`.
type Fields = std::collections::BTreeMap<(Option<Uuid>, &'static str), Option<String>>;

fn fields(case: &Case) -> Fields {
    let mut fields = Fields::new();
    for name in CaseField::NAMES {
        fields.insert((None, name), case_field_text(case, name));
    }
    for line in &case.lines {
        let id = Some(line.id);
        let decimal = |d: &Decimal| Some(d.to_string());
        fields.insert(
            (id, "dispute_code"),
            Some(line.dispute_code.as_str().into()),
        );
        fields.insert((id, "invoice_line_ref"), line.invoice_line_ref.clone());
        fields.insert((id, "invoice_number"), line.invoice_number.clone());
        fields.insert(
            (id, "short_description"),
            Some(line.short_description.clone()),
        );
        fields.insert((id, "invoiced_amount"), decimal(&line.invoiced_amount));
        fields.insert((id, "disputed_amount"), decimal(&line.disputed_amount));
        fields.insert(
            (id, "invoiced_quantity"),
            line.invoiced_quantity.as_ref().and_then(decimal),
        );
        fields.insert(
            (id, "disputed_quantity"),
            line.disputed_quantity.as_ref().and_then(decimal),
        );
    }
    fields
}

/// Applies an event's field changes to the replayed fields; each must
/// change a field from the value it has.
fn replay_fields(replayed: &mut Fields, changes: &[FieldChange]) -> Result<(), TestCaseError> {
    for change in changes {
        let line = change.line.as_ref().map(|line| line.id);
        let name = CaseField::NAMES
            .into_iter()
            .chain(LineField::NAMES)
            .find(|name| *name == change.field)
            .ok_or_else(|| TestCaseError::fail(format!("unknown field {change:?}")))?;
        let slot = replayed
            .get_mut(&(line, name))
            .ok_or_else(|| TestCaseError::fail(format!("a change of no field: {change:?}")))?;
        prop_assert_eq!(&*slot, &change.old, "{:?}", change);
        prop_assert_ne!(&change.old, &change.new, "{:?}", change);
        *slot = change.new.clone();
    }
    Ok(())
}

/// The checks of create, which every case after an edit passes too.
fn create_checks(case: &Case) -> Result<(), String> {
    if case.request_source == RequestSource::SingleInvoice && case.invoice_number.is_none() {
        return Err("a SINGLE_INVOICE case without its invoice".into());
    }
    for line in &case.lines {
        if line.disputed_amount > line.invoiced_amount {
            return Err(format!("line {} disputes more than invoiced", line.number));
        }
        match (case.request_source, &line.invoice_number) {
            (RequestSource::MultipleInvoices, None) => {
                return Err(format!("line {} names no invoice", line.number));
            }
            (RequestSource::SingleInvoice, Some(invoice))
                if Some(invoice) != case.invoice_number.as_ref() =>
            {
                return Err(format!("line {} names another invoice", line.number));
            }
            _ => {}
        }
    }
    Ok(())
}

fn run(lines: usize, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let identities: Vec<LineIdentity> = (0..lines as u32).map(identity).collect();
    let mut sequence = lines as u32;
    let created = machine::create(
        new_case(lines),
        CaseIdentity {
            id: CASE_ID,
            number: CASE_NUMBER.into(),
        },
        identities,
        ctx(),
    )
    .map_err(|e| TestCaseError::fail(format!("create: {e}")))?;
    let mut case = created.case;
    let mut replayed = fields(&case);
    for (i, step) in steps.iter().enumerate() {
        let command = command(step, &case, &mut sequence);
        let is_edit = command.action() == Action::Update;
        let Ok(decision) = machine::decide(&case, command.clone(), ctx()) else {
            continue;
        };
        prop_assert_eq!(invariants::check(&decision.case), Ok(()), "step {}", i);
        if let Err(broken) = create_checks(&decision.case) {
            return Err(TestCaseError::fail(format!(
                "step {i}: {command:?}: {broken}"
            )));
        }
        if is_edit {
            prop_assert!(decision.changes.is_empty(), "an edit changed a state");
            prop_assert_eq!(decision.case.state, case.state);
            prop_assert!(!case.state.is_terminal());
            if decision.is_no_op() {
                prop_assert_eq!(&decision.case, &case);
            } else {
                prop_assert_eq!(decision.case.revision, case.revision + 1);
            }
        } else {
            prop_assert!(decision.field_changes.is_empty());
        }
        // Lines added or removed by the step enter or leave the replay as
        // they are; every other field moves only by the recorded changes.
        for line in &decision.case.lines {
            if decision.added_lines.contains(&line.id) {
                replayed.extend(
                    fields(&decision.case)
                        .into_iter()
                        .filter(|((id, _), _)| *id == Some(line.id)),
                );
            }
        }
        replayed.retain(|(id, _), _| id.is_none_or(|id| !decision.removed_lines.contains(&id)));
        replay_fields(&mut replayed, &decision.field_changes)?;
        prop_assert_eq!(
            &replayed,
            &fields(&decision.case),
            "step {}: {:?}",
            i,
            command
        );
        case = decision.case;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_edits_among_random_actions_keep_the_rules_and_replay_to_the_case(
        lines in 0..4usize,
        steps in prop::collection::vec(step(), 0..40),
    ) {
        run(lines, steps)?;
    }
}
