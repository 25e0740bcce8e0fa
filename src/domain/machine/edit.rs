//! Edits (UpdateInvoiceCase, UpdateCaseLine): which fields a case's and a
//! line's states let change, the checks of create on the record as it will
//! be, and the field changes to record. An edit changes no state.
//!
//! * A CLOSED or CANCELED case refuses every edit, as it refuses every
//!   action (INVALID_STATE_TRANSITION, action UPDATE).
//! * Case fields: in DRAFT every descriptive field; after submission only
//!   priority, short_description, description and contact_id.
//! * Line fields: in a DRAFT case every caller-given field; after
//!   submission disputed_amount and disputed_quantity; a final line none.
//! * A named field the states do not let change refuses the whole edit,
//!   whatever its value, naming every such field at once.
//! * Values are compared as values (`15.0` is `15.00`): an edit whose every
//!   field already has its value changes nothing — no revision, no event.

use super::{Decision, DomainError, RefusedLine, Violation, Work, create::check_invoice_of};
use crate::domain::{
    case::{Case, DisputeCode, LineRef, Priority, RequestSource},
    event::{Action, FieldChange, StateChange},
    state::{CaseState, LineState},
    values::Decimal,
};

/// The new value of one field of a case, as UpdateInvoiceCase names it.
#[derive(Debug, Clone, PartialEq)]
pub enum CaseField {
    ContactId(Option<String>),
    InvoiceNumber(Option<String>),
    RequestSource(RequestSource),
    ShortDescription(String),
    Description(Option<String>),
    Priority(Priority),
    CurrencyCode(String),
}

/// The new value of one field of a line, as UpdateCaseLine names it.
#[derive(Debug, Clone, PartialEq)]
pub enum LineField {
    DisputeCode(DisputeCode),
    InvoiceLineRef(Option<String>),
    InvoiceNumber(Option<String>),
    ShortDescription(String),
    InvoicedAmount(Decimal),
    DisputedAmount(Decimal),
    InvoicedQuantity(Option<Decimal>),
    DisputedQuantity(Option<Decimal>),
}

/// A field an edit named that the states do not let change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotEditable {
    /// The field's API name (`currency_code`).
    pub field: &'static str,
    /// Why, in plain words.
    pub reason: String,
}

impl CaseField {
    /// Every case field an edit may name, by its API name.
    pub const NAMES: [&'static str; 7] = [
        "contact_id",
        "invoice_number",
        "request_source",
        "short_description",
        "description",
        "priority",
        "currency_code",
    ];

    /// The field's API name (its name in `InvoiceCase`).
    pub fn name(&self) -> &'static str {
        match self {
            CaseField::ContactId(_) => "contact_id",
            CaseField::InvoiceNumber(_) => "invoice_number",
            CaseField::RequestSource(_) => "request_source",
            CaseField::ShortDescription(_) => "short_description",
            CaseField::Description(_) => "description",
            CaseField::Priority(_) => "priority",
            CaseField::CurrencyCode(_) => "currency_code",
        }
    }

    /// Whether a case in `state` (not terminal) lets this field change.
    pub fn editable_in(&self, state: CaseState) -> bool {
        match state {
            CaseState::Draft => true,
            CaseState::New
            | CaseState::WorkInProgress
            | CaseState::AwaitingInfo
            | CaseState::Resolved => matches!(
                self,
                CaseField::Priority(_)
                    | CaseField::ShortDescription(_)
                    | CaseField::Description(_)
                    | CaseField::ContactId(_)
            ),
            CaseState::Closed | CaseState::Canceled => false,
        }
    }
}

impl LineField {
    /// Every line field an edit may name, by its API name.
    pub const NAMES: [&'static str; 8] = [
        "dispute_code",
        "invoice_line_ref",
        "invoice_number",
        "short_description",
        "invoiced_amount",
        "disputed_amount",
        "invoiced_quantity",
        "disputed_quantity",
    ];

    /// The field's API name (its name in `CaseLine`).
    pub fn name(&self) -> &'static str {
        match self {
            LineField::DisputeCode(_) => "dispute_code",
            LineField::InvoiceLineRef(_) => "invoice_line_ref",
            LineField::InvoiceNumber(_) => "invoice_number",
            LineField::ShortDescription(_) => "short_description",
            LineField::InvoicedAmount(_) => "invoiced_amount",
            LineField::DisputedAmount(_) => "disputed_amount",
            LineField::InvoicedQuantity(_) => "invoiced_quantity",
            LineField::DisputedQuantity(_) => "disputed_quantity",
        }
    }

    /// Whether a line in `line_state` of a case in `case_state` (not
    /// terminal) lets this field change.
    pub fn editable_in(&self, case_state: CaseState, line_state: LineState) -> bool {
        if line_state.is_final() {
            return false;
        }
        match case_state {
            CaseState::Draft => true,
            CaseState::New | CaseState::WorkInProgress | CaseState::AwaitingInfo => matches!(
                self,
                LineField::DisputedAmount(_) | LineField::DisputedQuantity(_)
            ),
            CaseState::Resolved | CaseState::Closed | CaseState::Canceled => false,
        }
    }
}

/// Whether a decision of `action` with these changes commits nothing: an
/// edit or an assignment that changed no field (every other action is an
/// event even when it changes no state).
pub(super) fn commits_nothing(
    action: Action,
    changes: &[StateChange],
    field_changes: &[FieldChange],
) -> bool {
    matches!(action, Action::Update | Action::Assign)
        && changes.is_empty()
        && field_changes.is_empty()
}

impl Decision {
    /// Whether the decision changes nothing and is not to be written: an
    /// edit whose every field already had its value. Its case is the case
    /// as it was (same revision).
    pub fn is_no_op(&self) -> bool {
        commits_nothing(self.action, &self.changes, &self.field_changes)
    }
}

/// The name of a priority in the API (`HIGH`).
fn priority_name(priority: Priority) -> &'static str {
    match priority {
        Priority::Critical => "CRITICAL",
        Priority::High => "HIGH",
        Priority::Moderate => "MODERATE",
        Priority::Low => "LOW",
    }
}

fn text(value: &Option<String>) -> Option<String> {
    value.clone()
}

fn decimal_text(value: &Option<Decimal>) -> Option<String> {
    value.as_ref().map(Decimal::to_string)
}

/// Sets `slot` to `new` when it differs; returns the old and new values
/// as text when it changed.
fn replace<T: PartialEq>(
    slot: &mut T,
    new: T,
    as_text: impl Fn(&T) -> Option<String>,
) -> Option<(Option<String>, Option<String>)> {
    if *slot == new {
        return None;
    }
    let old = as_text(slot);
    *slot = new;
    Some((old, as_text(slot)))
}

impl Work<'_> {
    /// UpdateInvoiceCase: sets the case fields `fields` names.
    pub(super) fn update_case(&mut self, fields: Vec<CaseField>) -> Result<(), DomainError> {
        if self.case.state.is_terminal() {
            return Err(self.refuse(None));
        }
        let state = self.case.state;
        let refused: Vec<NotEditable> = fields
            .iter()
            .filter(|field| !field.editable_in(state))
            .map(|field| NotEditable {
                field: field.name(),
                reason: format!(
                    "{} changes only while the case is DRAFT; the case is {state}",
                    field.name()
                ),
            })
            .collect();
        if !refused.is_empty() {
            return Err(DomainError::FieldsNotEditable {
                case_state: state,
                line: None,
                fields: refused,
            });
        }
        let mut invoice_rules_changed = false;
        for field in fields {
            let name = field.name();
            let case = &mut self.case;
            let changed = match field {
                CaseField::ContactId(value) => replace(&mut case.contact_id, value, text),
                CaseField::InvoiceNumber(value) => replace(&mut case.invoice_number, value, text),
                CaseField::RequestSource(value) => {
                    replace(&mut case.request_source, value, |v| Some(v.as_str().into()))
                }
                CaseField::ShortDescription(value) => {
                    replace(&mut case.short_description, value, |v| Some(v.clone()))
                }
                CaseField::Description(value) => replace(&mut case.description, value, text),
                CaseField::Priority(value) => replace(&mut case.priority, value, |v| {
                    Some(priority_name(*v).into())
                }),
                CaseField::CurrencyCode(value) => {
                    replace(&mut case.currency_code, value, |v| Some(v.clone()))
                }
            };
            if let Some((old, new)) = changed {
                invoice_rules_changed |= matches!(name, "invoice_number" | "request_source");
                self.record_field(None, name, old, new);
            }
        }
        let violations = if invoice_rules_changed {
            invoice_violations(&self.case)
        } else {
            Vec::new()
        };
        if violations.is_empty() {
            Ok(())
        } else {
            Err(DomainError::InvalidRequest(violations))
        }
    }

    /// UpdateCaseLine: sets the fields `fields` names of the line
    /// `line_ref` names.
    pub(super) fn update_line(
        &mut self,
        line_ref: &LineRef,
        fields: Vec<LineField>,
    ) -> Result<(), DomainError> {
        let index = self.find_line(line_ref)?;
        if self.case.state.is_terminal() {
            return Err(self.refuse(None));
        }
        let case_state = self.case.state;
        let line = &self.case.lines[index];
        let refused: Vec<NotEditable> = fields
            .iter()
            .filter(|field| !field.editable_in(case_state, line.state))
            .map(|field| NotEditable {
                field: field.name(),
                reason: if line.state.is_final() {
                    format!(
                        "line {} is {}: a final line does not change",
                        line.number, line.state
                    )
                } else {
                    format!(
                        "{} changes only while the case is DRAFT; the case is {case_state}",
                        field.name()
                    )
                },
            })
            .collect();
        if !refused.is_empty() {
            return Err(DomainError::FieldsNotEditable {
                case_state,
                line: Some(RefusedLine {
                    id: line.id,
                    number: line.number.clone(),
                    state: line.state,
                }),
                fields: refused,
            });
        }
        let names_disputed = fields
            .iter()
            .any(|field| matches!(field, LineField::DisputedAmount(_)));
        let mut invoice_changed = false;
        let mut any_changed = false;
        for field in fields {
            let name = field.name();
            let line = &mut self.case.lines[index];
            let decimal = |v: &Decimal| Some(v.to_string());
            let changed = match field {
                LineField::DisputeCode(value) => {
                    replace(&mut line.dispute_code, value, |v| Some(v.as_str().into()))
                }
                LineField::InvoiceLineRef(value) => {
                    replace(&mut line.invoice_line_ref, value, text)
                }
                LineField::InvoiceNumber(value) => replace(&mut line.invoice_number, value, text),
                LineField::ShortDescription(value) => {
                    replace(&mut line.short_description, value, |v| Some(v.clone()))
                }
                LineField::InvoicedAmount(value) => {
                    replace(&mut line.invoiced_amount, value, decimal)
                }
                LineField::DisputedAmount(value) => {
                    replace(&mut line.disputed_amount, value, decimal)
                }
                LineField::InvoicedQuantity(value) => {
                    replace(&mut line.invoiced_quantity, value, decimal_text)
                }
                LineField::DisputedQuantity(value) => {
                    replace(&mut line.disputed_quantity, value, decimal_text)
                }
            };
            if let Some((old, new)) = changed {
                invoice_changed |= name == "invoice_number";
                any_changed = true;
                self.record_field(Some(index), name, old, new);
            }
        }
        if !any_changed {
            return Ok(());
        }
        self.case.lines[index].update_time = self.ctx.now;
        let line = &self.case.lines[index];
        let mut violations = Vec::new();
        if line.disputed_amount > line.invoiced_amount {
            let field = if names_disputed {
                "line.disputed_amount"
            } else {
                "line.invoiced_amount"
            };
            violations.push(Violation::new(
                field,
                format!(
                    "the disputed amount {} would be more than the invoiced amount {}",
                    line.disputed_amount, line.invoiced_amount
                ),
            ));
        }
        if let Some(approved) = &line.approved_amount
            && approved > &line.disputed_amount
        {
            violations.push(Violation::new(
                "line.disputed_amount",
                format!(
                    "{} is less than the approved amount {approved}",
                    line.disputed_amount
                ),
            ));
        }
        if invoice_changed
            && let Err(description) = check_invoice_of(
                self.case.request_source,
                self.case.invoice_number.as_deref(),
                line.invoice_number.as_deref(),
            )
        {
            violations.push(Violation::new("line.invoice_number", description));
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(DomainError::InvalidRequest(violations))
        }
    }
}

/// What the case's request source and invoice number, as edited, refuse:
/// a SINGLE_INVOICE case without its invoice, and every line whose invoice
/// does not fit (named by its position among the case's lines).
fn invoice_violations(case: &Case) -> Vec<Violation> {
    let mut violations = Vec::new();
    if case.request_source == RequestSource::SingleInvoice && case.invoice_number.is_none() {
        violations.push(Violation::new(
            "invoice_case.invoice_number",
            "is required when request_source is SINGLE_INVOICE",
        ));
    }
    for (i, line) in case.lines.iter().enumerate() {
        if let Err(description) = check_invoice_of(
            case.request_source,
            case.invoice_number.as_deref(),
            line.invoice_number.as_deref(),
        ) {
            violations.push(Violation::new(
                format!("invoice_case.lines[{i}].invoice_number"),
                format!("{description} (line {})", line.number),
            ));
        }
    }
    violations
}
