//! Tests of the domain against SPEC §3, written from the SPEC: the expected
//! answers are tables of their own, never derived from the code under test.
//!
//! The fixtures here build cases directly as [`Case`] values, so a test can
//! start from any state without walking the whole lifecycle.

mod edits;
mod properties;
mod transitions;

use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

use super::{
    case::{
        Case, DisputeCode, Line, LineIdentity, LineRef, NewCase, NewLine, Priority, RequestSource,
        ResolutionCode, line_number,
    },
    event::{Cause, StateChange},
    machine::Context,
    state::{CaseState, LineState},
    values::Decimal,
};

/// The caller of the actions under test.
const ACTOR: &str = "agent-7";
/// Whoever assigned the fixture cases that are already assigned.
const EARLIER_AGENT: &str = "agent-1";
/// The id of every fixture case.
const CASE_ID: Uuid = Uuid::from_u128(0xCA5E_0000_0000_0000_0000_0000_0000_0001);
/// The number of every fixture case.
const CASE_NUMBER: &str = "INVCS0001001";
/// The invoice every fixture case disputes.
const CASE_INVOICE: &str = "ARINV0012345";
/// The disputed amount of every fixture line.
const DISPUTED: &str = "100.00";

/// A fixed point in time, `seconds` after the fixtures were created.
fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
}

/// When the fixtures were created (and last updated).
fn created() -> DateTime<Utc> {
    at(0)
}

/// When the action under test happens.
fn now() -> DateTime<Utc> {
    at(3600)
}

/// The action under test is taken by [`ACTOR`] at [`now`].
fn ctx() -> Context<'static> {
    Context {
        actor: ACTOR,
        now: now(),
    }
}

fn dec(text: &str) -> Decimal {
    Decimal::parse(text).unwrap()
}

/// The id of fixture line `n` (also of a line added with [`identity`]`(n)`).
fn line_id(n: u32) -> Uuid {
    Uuid::from_u128(0x11AE_0000_0000_0000_0000_0000_0000_0000 + u128::from(n))
}

/// The number of fixture line `n`.
fn line_no(n: u32) -> String {
    line_number(i64::from(n) + 1)
}

/// The identity of a line added by a test.
fn identity(n: u32) -> LineIdentity {
    LineIdentity {
        id: line_id(n),
        number: line_no(n),
    }
}

/// Refers to fixture line `n` by id.
fn by_id(n: u32) -> LineRef {
    LineRef::Id(line_id(n))
}

/// A line `n` in `state`, disputing [`DISPUTED`]; resolved lines carry the
/// resolution a previous action gave them.
fn line(n: u32, state: LineState) -> Line {
    let (approved_amount, resolution_code) = match state {
        LineState::ResolvedAccepted => (Some(dec("60.00")), Some(ResolutionCode::SolvedCredit)),
        LineState::ResolvedDenied => (Some(dec("0")), Some(ResolutionCode::SolvedInvalidDispute)),
        _ => (None, None),
    };
    Line {
        id: line_id(n),
        number: line_no(n),
        position: i32::try_from(n).unwrap() + 1,
        state,
        dispute_code: DisputeCode::PricingDiscrepancy,
        invoice_line_ref: Some(format!("L{n}")),
        invoice_number: None,
        short_description: format!("line {n}"),
        invoiced_amount: dec("120.00"),
        disputed_amount: dec(DISPUTED),
        approved_amount,
        invoiced_quantity: None,
        disputed_quantity: None,
        resolution_code,
        resolution_notes: None,
        create_time: created(),
        update_time: created(),
    }
}

/// A case in `state` whose lines `0..` are in `line_states`, with the fields
/// the earlier actions of its lifecycle would have set.
fn case(state: CaseState, line_states: &[LineState]) -> Case {
    let submitted = !matches!(state, CaseState::Draft | CaseState::Canceled);
    let assigned = matches!(
        state,
        CaseState::WorkInProgress
            | CaseState::AwaitingInfo
            | CaseState::Resolved
            | CaseState::Closed
    );
    let resolved = matches!(state, CaseState::Resolved | CaseState::Closed);
    Case {
        id: CASE_ID,
        number: CASE_NUMBER.into(),
        state,
        account_id: "ACC-1".into(),
        contact_id: None,
        invoice_number: Some(CASE_INVOICE.into()),
        request_source: RequestSource::SingleInvoice,
        short_description: "Wrong prices".into(),
        description: None,
        priority: Priority::Low,
        currency_code: "EUR".into(),
        assigned_to: assigned.then(|| EARLIER_AGENT.into()),
        opened_by: "requester-1".into(),
        resolution_code: resolved.then_some(ResolutionCode::SolvedCredit),
        resolution_notes: resolved.then(|| "earlier".into()),
        create_time: created(),
        update_time: created(),
        submit_time: submitted.then(|| at(10)),
        resolve_time: resolved.then(|| at(20)),
        close_time: (state == CaseState::Closed).then(|| at(30)),
        assignment_group: None,
        revision: 7,
        lines: (0..)
            .zip(line_states)
            .map(|(n, &state)| line(n, state))
            .collect(),
    }
}

/// The caller-given fields of a new line of a single-invoice case.
fn new_line(disputed: &str) -> NewLine {
    NewLine {
        dispute_code: DisputeCode::IncorrectQuantity,
        invoice_line_ref: Some("L9".into()),
        invoice_number: None,
        short_description: "added later".into(),
        invoiced_amount: dec("500.00"),
        disputed_amount: dec(disputed),
        invoiced_quantity: Some(dec("5")),
        disputed_quantity: Some(dec("1")),
    }
}

/// The caller-given fields of a new single-invoice case with `lines` lines.
fn new_case(lines: usize) -> NewCase {
    NewCase {
        account_id: "ACC-1".into(),
        contact_id: Some("CONTACT-1".into()),
        invoice_number: Some(CASE_INVOICE.into()),
        request_source: RequestSource::SingleInvoice,
        short_description: "Wrong prices".into(),
        description: Some("Two lines are priced wrong".into()),
        priority: Priority::High,
        currency_code: "EUR".into(),
        lines: (0..lines).map(|_| new_line(DISPUTED)).collect(),
    }
}

/// The expected change of the fixture case.
fn case_change(from: CaseState, to: CaseState, cause: Cause) -> StateChange {
    StateChange::Case {
        id: CASE_ID,
        number: CASE_NUMBER.into(),
        cause,
        from: Some(from),
        to,
    }
}

/// The expected change of fixture line `n`.
fn line_change(n: u32, from: LineState, to: LineState, cause: Cause) -> StateChange {
    StateChange::Line {
        id: line_id(n),
        number: line_no(n),
        cause,
        from: Some(from),
        to: Some(to),
    }
}

/// The expected change of line `n` added in `to`.
fn line_added(n: u32, to: LineState, cause: Cause) -> StateChange {
    StateChange::Line {
        id: line_id(n),
        number: line_no(n),
        cause,
        from: None,
        to: Some(to),
    }
}

/// The expected change of line `n` removed while in `from`.
fn line_removed(n: u32, from: LineState) -> StateChange {
    StateChange::Line {
        id: line_id(n),
        number: line_no(n),
        cause: Cause::Direct,
        from: Some(from),
        to: None,
    }
}

/// The ids and states of a case's lines, in order.
fn line_states(case: &Case) -> Vec<(Uuid, LineState)> {
    case.lines
        .iter()
        .map(|line| (line.id, line.state))
        .collect()
}
