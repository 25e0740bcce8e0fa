//! Protobuf requests to domain values: every field checked, every problem
//! reported at once as a field violation.

use uuid::Uuid;

use crate::{
    domain::{
        DisputeCode, LineRef, LineState, NewCase, NewLine, Outcome, Priority, RequestSource,
        ResolutionCode, Violation,
        case::is_case_number,
        machine::{LineOutcome, LineResolution, ProposeSolution, check_line_invoice},
        values::{
            Decimal, MAX_IDENTIFIER, MAX_LINES_PER_CASE, MAX_LONG_TEXT, MAX_SHORT_DESCRIPTION,
            currency_code, optional_long_text, optional_text, quote, required_text,
        },
    },
    pb,
    store::CaseKey,
};

/// Longest etag accepted (etags are short numbers).
const MAX_ETAG: usize = 64;

/// Collects field violations while a request is converted.
#[derive(Debug, Default)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// Records the error of `result` under `field`; returns the value.
    pub fn check<T>(&mut self, field: impl Into<String>, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(description) => {
                self.0.push(Violation {
                    field: field.into(),
                    description,
                });
                None
            }
        }
    }

    /// The value when nothing was wrong, else every violation.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, Vec<Violation>> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ if self.0.is_empty() => Err(vec![Violation {
                field: String::new(),
                description: "the request is incomplete".into(),
            }]),
            _ => Err(self.0),
        }
    }
}

/// A case UUID or number.
pub fn case_key(text: &str) -> Result<CaseKey, String> {
    if text.is_empty() {
        return Err("is required (a case UUID or number like INVCS0001001)".into());
    }
    if let Ok(id) = Uuid::parse_str(text) {
        Ok(CaseKey::Id(id))
    } else if is_case_number(text) {
        Ok(CaseKey::Number(text.to_owned()))
    } else {
        Err(format!(
            "must be a case UUID or number like INVCS0001001, not {}",
            quote(text)
        ))
    }
}

/// A line UUID or number.
pub fn line_ref(text: &str) -> Result<LineRef, String> {
    if text.is_empty() {
        return Err("is required (a line UUID or number like INVCSL0001001)".into());
    }
    LineRef::parse(text).ok_or_else(|| {
        format!(
            "must be a line UUID or number like INVCSL0001001, not {}",
            quote(text)
        )
    })
}

/// An optional request id: a UUID.
pub fn request_id(text: &str) -> Result<Option<Uuid>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(text)
        .map(Some)
        .map_err(|_| format!("must be a UUID, not {}", quote(text)))
}

/// An optional etag.
pub fn etag(text: &str) -> Result<Option<String>, String> {
    match text.len() {
        0 => Ok(None),
        n if n > MAX_ETAG => Err(format!("is longer than {MAX_ETAG} characters")),
        _ => Ok(Some(text.to_owned())),
    }
}

/// An optional comment recorded on the event.
pub fn comment(text: &str) -> Result<Option<String>, String> {
    optional_long_text(text, MAX_LONG_TEXT)
}

pub(super) fn decimal(text: &str) -> Result<Decimal, String> {
    if text.is_empty() {
        return Err("is required".into());
    }
    Decimal::parse(text)
}

pub(super) fn optional_decimal(text: Option<&str>) -> Result<Option<Decimal>, String> {
    text.map(Decimal::parse).transpose()
}

fn enum_value<E: TryFrom<i32>>(value: i32) -> Result<E, String> {
    E::try_from(value).map_err(|_| format!("{value} is not a known value"))
}

pub(super) fn dispute_code(value: i32) -> Result<DisputeCode, String> {
    use pb::case_line::DisputeCode as P;
    Ok(match enum_value::<P>(value)? {
        P::Unspecified => return Err("is required".into()),
        P::IncorrectProductOrService => DisputeCode::IncorrectProductOrService,
        P::PricingDiscrepancy => DisputeCode::PricingDiscrepancy,
        P::IncorrectQuantity => DisputeCode::IncorrectQuantity,
        P::IncorrectCustomerDetails => DisputeCode::IncorrectCustomerDetails,
        P::Other => DisputeCode::Other,
    })
}

/// An optional resolution code (unspecified means none).
fn resolution_code(value: i32) -> Result<Option<ResolutionCode>, String> {
    use pb::invoice_case::ResolutionCode as P;
    Ok(match enum_value::<P>(value)? {
        P::Unspecified => None,
        P::SolvedCredit => Some(ResolutionCode::SolvedCredit),
        P::SolvedWriteOff => Some(ResolutionCode::SolvedWriteOff),
        P::SolvedSettlement => Some(ResolutionCode::SolvedSettlement),
        P::SolvedInvalidDispute => Some(ResolutionCode::SolvedInvalidDispute),
    })
}

/// A priority; unspecified means LOW.
pub fn priority(value: i32) -> Result<Priority, String> {
    use pb::invoice_case::Priority as P;
    Ok(match enum_value::<P>(value)? {
        P::Unspecified | P::Low => Priority::Low,
        P::Critical => Priority::Critical,
        P::High => Priority::High,
        P::Moderate => Priority::Moderate,
    })
}

pub(super) fn request_source(value: i32) -> Result<RequestSource, String> {
    use pb::invoice_case::RequestSource as P;
    Ok(match enum_value::<P>(value)? {
        P::Unspecified => return Err("is required: SINGLE_INVOICE or MULTIPLE_INVOICES".into()),
        P::SingleInvoice => RequestSource::SingleInvoice,
        P::MultipleInvoices => RequestSource::MultipleInvoices,
    })
}

/// A line outcome of ProposeSolution: the line state it resolves the line
/// to, RESOLVED_ACCEPTED or RESOLVED_DENIED (unspecified means none).
fn outcome(value: i32) -> Result<Option<Outcome>, String> {
    use pb::case_line::State as P;
    Ok(match enum_value::<P>(value)? {
        P::Unspecified => None,
        P::ResolvedAccepted => Some(Outcome::Accepted),
        P::ResolvedDenied => Some(Outcome::Denied),
        P::Draft | P::New | P::WorkInProgress | P::AwaitingInfo | P::Canceled => {
            return Err(format!(
                "must be RESOLVED_ACCEPTED or RESOLVED_DENIED, not {}",
                P::try_from(value).map(|p| p.as_str_name()).unwrap_or("?")
            ));
        }
    })
}

/// The target of SetLineState.
fn line_target(value: i32) -> Result<LineState, String> {
    use pb::case_line::State as P;
    Ok(match enum_value::<P>(value)? {
        P::AwaitingInfo => LineState::AwaitingInfo,
        P::WorkInProgress => LineState::WorkInProgress,
        P::ResolvedAccepted => LineState::ResolvedAccepted,
        P::ResolvedDenied => LineState::ResolvedDenied,
        P::Canceled => LineState::Canceled,
        P::Unspecified | P::Draft | P::New => {
            return Err(
                "must be AWAITING_INFO, WORK_IN_PROGRESS, RESOLVED_ACCEPTED, \
                        RESOLVED_DENIED or CANCELED"
                    .into(),
            );
        }
    })
}

/// The caller-given fields of a line; `prefix` is its field path.
pub fn new_line(line: &pb::CaseLine, prefix: &str, v: &mut Violations) -> Option<NewLine> {
    let field = |name: &str| format!("{prefix}.{name}");
    let dispute_code = v.check(field("dispute_code"), dispute_code(line.dispute_code));
    let invoice_line_ref = v.check(
        field("invoice_line_ref"),
        optional_text(&line.invoice_line_ref, MAX_IDENTIFIER),
    );
    let invoice_number = v.check(
        field("invoice_number"),
        optional_text(&line.invoice_number, MAX_IDENTIFIER),
    );
    let short_description = v.check(
        field("short_description"),
        required_text(&line.short_description, MAX_SHORT_DESCRIPTION),
    );
    let invoiced_amount = v.check(field("invoiced_amount"), decimal(&line.invoiced_amount));
    let disputed_amount = v.check(field("disputed_amount"), decimal(&line.disputed_amount));
    if let (Some(invoiced), Some(disputed)) = (&invoiced_amount, &disputed_amount)
        && disputed > invoiced
    {
        v.check::<()>(
            field("disputed_amount"),
            Err(format!(
                "{disputed} is more than the invoiced amount {invoiced}"
            )),
        );
    }
    let invoiced_quantity = v.check(
        field("invoiced_quantity"),
        optional_decimal(line.invoiced_quantity.as_deref()),
    );
    let disputed_quantity = v.check(
        field("disputed_quantity"),
        optional_decimal(line.disputed_quantity.as_deref()),
    );
    if line.approved_amount.is_some() {
        v.check::<()>(
            field("approved_amount"),
            Err("is set when the line is resolved, not when it is added".into()),
        );
    }
    Some(NewLine {
        dispute_code: dispute_code?,
        invoice_line_ref: invoice_line_ref?,
        invoice_number: invoice_number?,
        short_description: short_description?,
        invoiced_amount: invoiced_amount?,
        disputed_amount: disputed_amount?,
        invoiced_quantity: invoiced_quantity?,
        disputed_quantity: disputed_quantity?,
    })
}

/// The caller-given fields of a new case and its lines.
pub fn new_case(case: Option<&pb::InvoiceCase>) -> Result<NewCase, Vec<Violation>> {
    let mut v = Violations::default();
    let Some(case) = case else {
        v.check::<()>("invoice_case", Err("is required".into()));
        return v.finish(None);
    };
    let account_id = v.check(
        "invoice_case.account_id",
        required_text(&case.account_id, MAX_IDENTIFIER),
    );
    let contact_id = v.check(
        "invoice_case.contact_id",
        optional_text(&case.contact_id, MAX_IDENTIFIER),
    );
    let invoice_number = v.check(
        "invoice_case.invoice_number",
        optional_text(&case.invoice_number, MAX_IDENTIFIER),
    );
    let request_source = v.check(
        "invoice_case.request_source",
        request_source(case.request_source),
    );
    if request_source == Some(RequestSource::SingleInvoice) && matches!(invoice_number, Some(None))
    {
        v.check::<()>(
            "invoice_case.invoice_number",
            Err("is required when request_source is SINGLE_INVOICE".into()),
        );
    }
    let short_description = v.check(
        "invoice_case.short_description",
        required_text(&case.short_description, MAX_SHORT_DESCRIPTION),
    );
    let description = v.check(
        "invoice_case.description",
        optional_long_text(&case.description, MAX_LONG_TEXT),
    );
    let priority = v.check("invoice_case.priority", priority(case.priority));
    let currency_code = v.check(
        "invoice_case.currency_code",
        currency_code(&case.currency_code),
    );
    if case.lines.len() > MAX_LINES_PER_CASE {
        v.check::<()>(
            "invoice_case.lines",
            Err(format!(
                "has {} lines; a case holds at most {MAX_LINES_PER_CASE}",
                case.lines.len()
            )),
        );
        return v.finish(None);
    }
    let mut lines = Vec::with_capacity(case.lines.len());
    for (i, line) in case.lines.iter().enumerate() {
        let prefix = format!("invoice_case.lines[{i}]");
        if let Some(line) = new_line(line, &prefix, &mut v) {
            if let (Some(source), Some(invoice)) = (request_source, &invoice_number) {
                v.check(
                    format!("{prefix}.invoice_number"),
                    check_line_invoice(source, invoice.as_deref(), &line),
                );
            }
            lines.push(line);
        }
    }
    let new = (|| {
        Some(NewCase {
            account_id: account_id?,
            contact_id: contact_id?,
            invoice_number: invoice_number?,
            request_source: request_source?,
            short_description: short_description?,
            description: description?,
            priority: priority?,
            currency_code: currency_code?,
            lines,
        })
    })();
    v.finish(new)
}

/// ProposeSolution's resolution and outcomes.
pub fn propose_solution(
    request: &pb::ProposeSolutionRequest,
    v: &mut Violations,
) -> Option<ProposeSolution> {
    let code = v.check(
        "resolution_code",
        resolution_code(request.resolution_code)
            .and_then(|code| code.ok_or_else(|| "is required".to_owned())),
    );
    let notes = v.check(
        "resolution_notes",
        optional_long_text(&request.resolution_notes, MAX_LONG_TEXT)
            .and_then(|notes| notes.ok_or_else(|| "is required".to_owned())),
    );
    let default_outcome = v.check("default_outcome", outcome(request.default_outcome));
    if request.line_outcomes.len() > MAX_LINES_PER_CASE {
        v.check::<()>(
            "line_outcomes",
            Err(format!("has more than {MAX_LINES_PER_CASE} entries")),
        );
        return None;
    }
    let mut line_outcomes = Vec::with_capacity(request.line_outcomes.len());
    for (i, entry) in request.line_outcomes.iter().enumerate() {
        let field = |name: &str| format!("line_outcomes[{i}].{name}");
        let line = v.check(field("line_id"), line_ref(&entry.line_id));
        let outcome = v.check(
            field("outcome"),
            outcome(entry.outcome).and_then(|o| {
                o.ok_or_else(|| "is required: RESOLVED_ACCEPTED or RESOLVED_DENIED".to_owned())
            }),
        );
        let approved_amount = v.check(
            field("approved_amount"),
            optional_decimal(entry.approved_amount.as_deref()),
        );
        let resolution_code = v.check(
            field("resolution_code"),
            resolution_code(entry.resolution_code),
        );
        let resolution_notes = v.check(
            field("resolution_notes"),
            optional_long_text(&entry.resolution_notes, MAX_LONG_TEXT),
        );
        if let (
            Some(line),
            Some(outcome),
            Some(approved_amount),
            Some(resolution_code),
            Some(resolution_notes),
        ) = (
            line,
            outcome,
            approved_amount,
            resolution_code,
            resolution_notes,
        ) {
            line_outcomes.push(LineOutcome {
                line,
                outcome,
                approved_amount,
                resolution_code,
                resolution_notes,
            });
        }
    }
    Some(ProposeSolution {
        resolution_code: code?,
        resolution_notes: notes?,
        default_outcome: default_outcome?,
        line_outcomes,
    })
}

/// SetLineState's line, target and resolution.
pub fn set_line_state(
    request: &pb::SetLineStateRequest,
    v: &mut Violations,
) -> Option<(LineRef, LineState, LineResolution)> {
    let line = v.check("line_id", line_ref(&request.line_id));
    let target = v.check("state", line_target(request.state));
    let code = v.check("resolution_code", resolution_code(request.resolution_code));
    let notes = v.check(
        "resolution_notes",
        optional_long_text(&request.resolution_notes, MAX_LONG_TEXT),
    );
    let approved_amount = v.check(
        "approved_amount",
        optional_decimal(request.approved_amount.as_deref()),
    );
    let resolution = LineResolution {
        code: code?,
        notes: notes?,
        approved_amount: approved_amount?,
    };
    let target = target?;
    if !target.is_resolved() && resolution != LineResolution::default() {
        v.check::<()>(
            "resolution_code",
            Err("resolution fields are only set when the target is RESOLVED_ACCEPTED or RESOLVED_DENIED".into()),
        );
        return None;
    }
    Some((line?, target, resolution))
}
