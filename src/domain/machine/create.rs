//! Creating a case: the one action without a case before it.

use chrono::{DateTime, Utc};

use super::{CaseIdentity, Context, Decision, DomainError};
use crate::domain::{
    case::{Case, Line, LineIdentity, NewCase, NewLine, RequestSource},
    event::{Action, Cause, StateChange},
    state::{CaseState, LineState},
    values::{Decimal, MAX_LINES_PER_CASE},
};

/// Checks that a line fits its case's request source; the error describes
/// the line's `invoice_number`.
pub fn check_line_invoice(
    request_source: RequestSource,
    case_invoice: Option<&str>,
    line: &NewLine,
) -> Result<(), String> {
    check_invoice_of(request_source, case_invoice, line.invoice_number.as_deref())
}

/// [`check_line_invoice`] of a line's invoice number.
pub(super) fn check_invoice_of(
    request_source: RequestSource,
    case_invoice: Option<&str>,
    line_invoice: Option<&str>,
) -> Result<(), String> {
    match (request_source, line_invoice) {
        (RequestSource::MultipleInvoices, None) => {
            Err("is required on lines of MULTIPLE_INVOICES cases".into())
        }
        (RequestSource::SingleInvoice, Some(number)) if Some(number) != case_invoice => {
            Err(format!(
                "must be empty or the case's invoice number ({}) on SINGLE_INVOICE cases",
                case_invoice.unwrap_or_default()
            ))
        }
        _ => Ok(()),
    }
}

/// Checks an amount against the line's disputed amount.
pub(super) fn check_approved(line: &Line, approved: &Decimal) -> Result<(), String> {
    if approved > &line.disputed_amount {
        Err(format!(
            "{approved} is more than line {}'s disputed amount {}",
            line.number, line.disputed_amount
        ))
    } else {
        Ok(())
    }
}

/// Creates a case in DRAFT with its lines in DRAFT. The caller has validated
/// the fields (including [`check_line_invoice`] for every line).
pub fn create(
    new: NewCase,
    identity: CaseIdentity,
    line_identities: Vec<LineIdentity>,
    ctx: Context<'_>,
) -> Result<Decision, DomainError> {
    if new.lines.len() > MAX_LINES_PER_CASE {
        return Err(DomainError::TooManyLines);
    }
    assert_eq!(
        new.lines.len(),
        line_identities.len(),
        "one identity per new line"
    );
    let mut changes = vec![StateChange::Case {
        id: identity.id,
        number: identity.number.clone(),
        cause: Cause::Direct,
        from: None,
        to: CaseState::Draft,
    }];
    let lines: Vec<Line> = new
        .lines
        .into_iter()
        .zip(line_identities)
        .zip(1..)
        .map(|((line, identity), position)| {
            changes.push(StateChange::Line {
                id: identity.id,
                number: identity.number.clone(),
                cause: Cause::Cascade,
                from: None,
                to: Some(LineState::Draft),
            });
            new_line(line, identity, position, LineState::Draft, ctx.now)
        })
        .collect();
    let added_lines = lines.iter().map(|line| line.id).collect();
    let case = Case {
        id: identity.id,
        number: identity.number,
        state: CaseState::Draft,
        account_id: new.account_id,
        contact_id: new.contact_id,
        invoice_number: new.invoice_number,
        request_source: new.request_source,
        short_description: new.short_description,
        description: new.description,
        priority: new.priority,
        currency_code: new.currency_code,
        assigned_to: None,
        opened_by: ctx.actor.to_owned(),
        resolution_code: None,
        resolution_notes: None,
        create_time: ctx.now,
        update_time: ctx.now,
        submit_time: None,
        resolve_time: None,
        close_time: None,
        assignment_group: None,
        revision: 1,
        lines,
    };
    Ok(Decision {
        action: Action::Create,
        case,
        changes,
        field_changes: Vec::new(),
        added_lines,
        removed_lines: Vec::new(),
        updated_lines: Vec::new(),
    })
}

pub(super) fn new_line(
    line: NewLine,
    identity: LineIdentity,
    position: i32,
    state: LineState,
    now: DateTime<Utc>,
) -> Line {
    Line {
        id: identity.id,
        number: identity.number,
        position,
        state,
        dispute_code: line.dispute_code,
        invoice_line_ref: line.invoice_line_ref,
        invoice_number: line.invoice_number,
        short_description: line.short_description,
        invoiced_amount: line.invoiced_amount,
        disputed_amount: line.disputed_amount,
        approved_amount: None,
        invoiced_quantity: line.invoiced_quantity,
        disputed_quantity: line.disputed_quantity,
        resolution_code: None,
        resolution_notes: None,
        create_time: now,
        update_time: now,
    }
}
