//! UpdateInvoiceCase and UpdateCaseLine: the update mask and the values of
//! the fields it names, converted to a domain edit with every problem
//! reported at once; the handlers take the shape of every mutation.
//!
//! What the mask may name is decided here (a field that exists and is not
//! output only); which of those fields the case's state lets change is the
//! domain's to decide.

use prost_types::FieldMask;
use tonic::{Request, Response, Status};

use super::{
    requests::{self, Violations},
    service::{InvoiceCaseApi, Mutation},
};
use crate::{
    auth::Permission,
    domain::{
        CaseField, Command, LineField, Priority,
        values::{
            MAX_IDENTIFIER, MAX_LONG_TEXT, MAX_SHORT_DESCRIPTION, currency_code,
            optional_long_text, optional_text, quote, required_text,
        },
    },
    pb, store,
};

/// Most paths an update mask may name (there are fewer editable fields:
/// more is a client bug, refused before any path is looked at).
pub const MAX_MASK_PATHS: usize = 32;

/// What a path of a mask names in a message.
enum Named {
    /// A field an edit may set (whether the state lets it is the domain's
    /// question).
    Editable(&'static str),
    /// A field of the message that no edit sets: why.
    Fixed(&'static str),
}

/// The fields of `InvoiceCase`, as a mask names them.
fn case_path(path: &str) -> Option<Named> {
    if let Some(name) = CaseField::NAMES.into_iter().find(|name| *name == path) {
        return Some(Named::Editable(name));
    }
    Some(Named::Fixed(match path {
        "account_id" => "never changes",
        "lines" => "is changed with AddCaseLine, RemoveCaseLine and UpdateCaseLine",
        "id" | "number" | "state" | "assigned_to" | "opened_by" | "resolution_code"
        | "resolution_notes" | "create_time" | "update_time" | "submit_time" | "resolve_time"
        | "close_time" | "etag" | "assignment_group" => "is output only",
        _ => return None,
    }))
}

/// The fields of `CaseLine`, as a mask names them.
fn line_path(path: &str) -> Option<Named> {
    if let Some(name) = LineField::NAMES.into_iter().find(|name| *name == path) {
        return Some(Named::Editable(name));
    }
    Some(Named::Fixed(match path {
        "id" | "number" | "state" | "approved_amount" | "resolution_code" | "resolution_notes"
        | "create_time" | "update_time" => "is output only",
        _ => return None,
    }))
}

/// The editable fields `mask` names, in its order, and whether the mask is
/// valid: at least one path, at most [`MAX_MASK_PATHS`], each once, every
/// one a field of `message` that an edit sets. Every problem is a
/// violation of `update_mask`.
fn mask_fields(
    mask: Option<&FieldMask>,
    message: &str,
    named: impl Fn(&str) -> Option<Named>,
    v: &mut Violations,
) -> (Vec<&'static str>, bool) {
    const FIELD: &str = "update_mask";
    let paths = mask.map(|mask| mask.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        v.check::<()>(
            FIELD,
            Err(format!(
                "is required: name the fields of {message} to change"
            )),
        );
        return (Vec::new(), false);
    }
    if paths.len() > MAX_MASK_PATHS {
        v.check::<()>(
            FIELD,
            Err(format!(
                "names {} paths; at most {MAX_MASK_PATHS} are allowed",
                paths.len()
            )),
        );
        return (Vec::new(), false);
    }
    let mut fields: Vec<&'static str> = Vec::with_capacity(paths.len());
    let mut valid = true;
    for path in paths {
        let problem = match named(path) {
            _ if path == "*" => {
                "`*` (every field) is not accepted: name the fields to change".to_owned()
            }
            None => format!("{} is not a field of {message}", quote(path)),
            Some(Named::Fixed(why)) => format!("{path} {why}"),
            Some(Named::Editable(name)) if fields.contains(&name) => {
                format!("{name} is named more than once")
            }
            Some(Named::Editable(name)) => {
                fields.push(name);
                continue;
            }
        };
        valid = false;
        v.check::<()>(FIELD, Err(problem));
    }
    (fields, valid)
}

/// A priority an edit sets: one of the four (unspecified means LOW only on
/// create).
fn priority(value: i32) -> Result<Priority, String> {
    use pb::invoice_case::Priority as P;
    match P::try_from(value) {
        Ok(P::Unspecified) => {
            Err("is required when named: CRITICAL, HIGH, MODERATE or LOW".to_owned())
        }
        _ => requests::priority(value),
    }
}

/// UpdateInvoiceCase's fields, with their new values, in the mask's order.
pub fn case_edit(
    request: &pb::UpdateInvoiceCaseRequest,
    v: &mut Violations,
) -> Option<Vec<CaseField>> {
    let (names, mask_valid) =
        mask_fields(request.update_mask.as_ref(), "InvoiceCase", case_path, v);
    let Some(case) = &request.invoice_case else {
        v.check::<()>("invoice_case", Err("is required".into()));
        return None;
    };
    let mut fields = Vec::new();
    for name in names {
        let field = format!("invoice_case.{name}");
        let value = match name {
            "contact_id" => v
                .check(field, optional_text(&case.contact_id, MAX_IDENTIFIER))
                .map(CaseField::ContactId),
            "invoice_number" => v
                .check(field, optional_text(&case.invoice_number, MAX_IDENTIFIER))
                .map(CaseField::InvoiceNumber),
            "request_source" => v
                .check(field, requests::request_source(case.request_source))
                .map(CaseField::RequestSource),
            "short_description" => v
                .check(
                    field,
                    required_text(&case.short_description, MAX_SHORT_DESCRIPTION),
                )
                .map(CaseField::ShortDescription),
            "description" => v
                .check(field, optional_long_text(&case.description, MAX_LONG_TEXT))
                .map(CaseField::Description),
            "priority" => v
                .check(field, priority(case.priority))
                .map(CaseField::Priority),
            "currency_code" => v
                .check(field, currency_code(&case.currency_code))
                .map(CaseField::CurrencyCode),
            other => v.check(field, Err(format!("{other} is not editable"))),
        };
        fields.extend(value);
    }
    mask_valid.then_some(fields)
}

/// UpdateCaseLine's fields, with their new values, in the mask's order.
pub fn line_edit(
    request: &pb::UpdateCaseLineRequest,
    v: &mut Violations,
) -> Option<Vec<LineField>> {
    let (names, mask_valid) = mask_fields(request.update_mask.as_ref(), "CaseLine", line_path, v);
    let Some(line) = &request.line else {
        v.check::<()>("line", Err("is required".into()));
        return None;
    };
    let mut fields = Vec::new();
    for name in names {
        let field = format!("line.{name}");
        let value = match name {
            "dispute_code" => v
                .check(field, requests::dispute_code(line.dispute_code))
                .map(LineField::DisputeCode),
            "invoice_line_ref" => v
                .check(field, optional_text(&line.invoice_line_ref, MAX_IDENTIFIER))
                .map(LineField::InvoiceLineRef),
            "invoice_number" => v
                .check(field, optional_text(&line.invoice_number, MAX_IDENTIFIER))
                .map(LineField::InvoiceNumber),
            "short_description" => v
                .check(
                    field,
                    required_text(&line.short_description, MAX_SHORT_DESCRIPTION),
                )
                .map(LineField::ShortDescription),
            "invoiced_amount" => v
                .check(field, requests::decimal(&line.invoiced_amount))
                .map(LineField::InvoicedAmount),
            "disputed_amount" => v
                .check(field, requests::decimal(&line.disputed_amount))
                .map(LineField::DisputedAmount),
            "invoiced_quantity" => v
                .check(
                    field,
                    requests::optional_decimal(line.invoiced_quantity.as_deref()),
                )
                .map(LineField::InvoicedQuantity),
            "disputed_quantity" => v
                .check(
                    field,
                    requests::optional_decimal(line.disputed_quantity.as_deref()),
                )
                .map(LineField::DisputedQuantity),
            other => v.check(field, Err(format!("{other} is not editable"))),
        };
        fields.extend(value);
    }
    mask_valid.then_some(fields)
}

impl Mutation for pb::UpdateInvoiceCaseRequest {
    fn case_id(&self) -> &str {
        &self.case_id
    }
    fn etag(&self) -> &str {
        &self.etag
    }
    fn request_id(&self) -> &str {
        &self.request_id
    }
    fn comment(&self) -> &str {
        &self.comment
    }
}

impl Mutation for pb::UpdateCaseLineRequest {
    fn case_id(&self) -> &str {
        &self.case_id
    }
    fn etag(&self) -> &str {
        &self.etag
    }
    fn request_id(&self) -> &str {
        &self.request_id
    }
    fn comment(&self) -> &str {
        &self.comment
    }
}

impl InvoiceCaseApi {
    /// UpdateInvoiceCase.
    pub(super) async fn update_case(
        &self,
        request: Request<pb::UpdateInvoiceCaseRequest>,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        self.mutate(request, "UpdateInvoiceCase", Permission::Edit, |r, v| {
            case_edit(r, v).map(|fields| store::Request::Command(Command::UpdateCase { fields }))
        })
        .await
    }

    /// UpdateCaseLine.
    pub(super) async fn update_line(
        &self,
        request: Request<pb::UpdateCaseLineRequest>,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        self.mutate(request, "UpdateCaseLine", Permission::Edit, |r, v| {
            let line = v.check("line_id", requests::line_ref(&r.line_id));
            let fields = line_edit(r, v);
            Some(store::Request::Command(Command::UpdateLine {
                line: line?,
                fields: fields?,
            }))
        })
        .await
    }
}
