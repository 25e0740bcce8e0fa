//! Every error to a gRPC status, in one place (SPEC §5).
//!
//! Clients get a code, a plain message and `google.rpc` details
//! (`BadRequest`, `ErrorInfo`, `ResourceInfo`, `PreconditionFailure`,
//! `RetryInfo`); internal causes go to the log with an incident id that the
//! status carries in `RequestInfo`, never to the client.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, PreconditionViolation, StatusExt};
use uuid::Uuid;

use crate::{
    auth::AuthError,
    domain::{Action, CaseState, DomainError, NotEditable, RefusedLine, Violation},
    store::{StoreError, SubscriptionError},
    watch::{Interruption, WatchError},
};

/// The `ErrorInfo.domain` of this service's errors.
pub const ERROR_DOMAIN: &str = "invoicecase.v1";

/// `ErrorInfo.reason` of an action the current state does not allow.
pub const INVALID_STATE_TRANSITION: &str = "INVALID_STATE_TRANSITION";

/// `ErrorInfo.reason` of an edit naming fields its case's or line's state
/// does not let change.
pub const FIELD_NOT_EDITABLE: &str = "FIELD_NOT_EDITABLE";

/// `ErrorInfo.reason` of a call refused, or a stream ended, by a shutdown.
pub const SERVER_SHUTTING_DOWN: &str = "SERVER_SHUTTING_DOWN";

/// Most field violations listed in one error.
const MAX_VIOLATIONS: usize = 50;

/// INVALID_ARGUMENT with one `BadRequest` violation per field (the first
/// fifty).
pub fn invalid_argument(violations: Vec<Violation>) -> Status {
    let summary: Vec<String> = violations
        .iter()
        .take(5)
        .map(|v| {
            if v.field.is_empty() {
                v.description.clone()
            } else {
                format!("{} {}", v.field, v.description)
            }
        })
        .collect();
    let more = violations.len().saturating_sub(summary.len());
    let mut message = format!("invalid request: {}", summary.join("; "));
    if more > 0 {
        message.push_str(&format!(" (and {more} more)"));
    }
    // However many fields are wrong, the answer stays small.
    let details = ErrorDetails::with_bad_request(
        violations
            .into_iter()
            .take(MAX_VIOLATIONS)
            .map(|v| FieldViolation::new(v.field, v.description))
            .collect::<Vec<_>>(),
    );
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// One invalid field.
pub fn invalid_field(field: &str, description: impl Into<String>) -> Status {
    invalid_argument(vec![Violation {
        field: field.to_owned(),
        description: description.into(),
    }])
}

/// UNAUTHENTICATED or PERMISSION_DENIED. Why a token was refused is logged,
/// not told: the client only learns that it was.
pub fn auth(error: AuthError) -> Status {
    match error {
        AuthError::Unauthenticated(reason) => {
            tracing::info!(%reason, "refused a call without a valid token");
            Status::unauthenticated("a valid bearer token is required")
        }
        AuthError::AccountDenied => Status::with_error_details(
            Code::PermissionDenied,
            "the caller's token does not allow cases of this account",
            ErrorDetails::with_error_info("ACCOUNT_NOT_ALLOWED", ERROR_DOMAIN, HashMap::new()),
        ),
        AuthError::PermissionDenied(permission) => Status::with_error_details(
            Code::PermissionDenied,
            format!("the caller's roles do not allow {permission}"),
            ErrorDetails::with_error_info(
                "MISSING_ROLE",
                ERROR_DOMAIN,
                HashMap::from([("permission".to_owned(), format!("{permission:?}"))]),
            ),
        ),
    }
}

/// Maps a store (or domain) error; `case` is the case the request named.
pub fn store(error: StoreError, case: &str) -> Status {
    match error {
        StoreError::Domain(error) => domain(error, case),
        StoreError::CaseNotFound => Status::with_error_details(
            Code::NotFound,
            format!("invoice case {case:?} not found"),
            ErrorDetails::with_resource_info("invoicecase.v1.InvoiceCase", case, "", "not found"),
        ),
        StoreError::StaleEtag { given, current } => Status::with_error_details(
            Code::Aborted,
            format!("the case changed: etag {given:?} is stale; read it again and retry"),
            ErrorDetails::with_error_info(
                "ETAG_MISMATCH",
                ERROR_DOMAIN,
                HashMap::from([
                    ("givenEtag".to_owned(), given),
                    ("currentEtag".to_owned(), current),
                ]),
            ),
        ),
        StoreError::RequestIdReused(id) => invalid_field(
            "request_id",
            format!("{id} was already used for a different request"),
        ),
        StoreError::Unavailable(cause) => {
            tracing::warn!(%cause, "database unavailable");
            Status::with_error_details(
                Code::Unavailable,
                "the database is unavailable; retry later",
                ErrorDetails::with_retry_info(Some(Duration::from_secs(1))),
            )
        }
        StoreError::Contention => Status::with_error_details(
            Code::Aborted,
            "the case kept changing while the action was decided; retry",
            ErrorDetails::with_error_info("CONCURRENT_MODIFICATION", ERROR_DOMAIN, HashMap::new()),
        ),
        StoreError::DeadlineExceeded => Status::deadline_exceeded(
            "the deadline expired before the database finished; nothing was changed",
        ),
        StoreError::Corrupt(cause) => internal(&cause),
        StoreError::Database(cause) => internal(&cause),
    }
}

/// Maps a watch's refusal or end; `case` is the case the request named.
pub fn watch(error: WatchError, case: &str) -> Status {
    let with_cursor = |code: Code, reason: &str, message: String, cursor: String| {
        Status::with_error_details(
            code,
            message,
            ErrorDetails::with_error_info(
                reason,
                ERROR_DOMAIN,
                HashMap::from([("cursor".to_owned(), cursor)]),
            ),
        )
    };
    match error {
        WatchError::TooManyStreams => Status::resource_exhausted(
            "too many watch streams on this server; retry later or on another replica",
        ),
        WatchError::InvalidCursor(why) => invalid_field("after_cursor", why),
        WatchError::CursorExpired { oldest } => Status::with_error_details(
            Code::FailedPrecondition,
            "the cursor is older than the retained event history; \
             read the current state again with with_snapshot",
            ErrorDetails::with_error_info(
                "CURSOR_EXPIRED",
                ERROR_DOMAIN,
                HashMap::from([
                    ("oldestCursor".to_owned(), oldest),
                    ("resumeWith".to_owned(), "with_snapshot".to_owned()),
                ]),
            ),
        ),
        WatchError::Store(error) => store(error, case),
        WatchError::Interrupted { reason, cursor } => {
            let (reason, why) = match reason {
                Interruption::ShuttingDown => (SERVER_SHUTTING_DOWN, "the server is shutting down"),
                Interruption::DatabaseUnavailable => {
                    ("DATABASE_UNAVAILABLE", "the database is unavailable")
                }
            };
            with_cursor(
                Code::Unavailable,
                reason,
                format!("{why}; resume with after_cursor = {cursor}"),
                cursor,
            )
        }
        WatchError::TokenExpired { cursor } => with_cursor(
            Code::Unauthenticated,
            "TOKEN_EXPIRED",
            format!("the token expired; resume with after_cursor = {cursor} and a fresh token"),
            cursor,
        ),
        WatchError::SnapshotNotRead => Status::with_error_details(
            Code::ResourceExhausted,
            "the client did not read the snapshot in time; start the watch again",
            ErrorDetails::with_error_info("SNAPSHOT_NOT_READ", ERROR_DOMAIN, HashMap::new()),
        ),
        WatchError::SnapshotFailed => Status::with_error_details(
            Code::Unavailable,
            "the snapshot could not be read; start the watch again",
            ErrorDetails::with_error_info("SNAPSHOT_FAILED", ERROR_DOMAIN, HashMap::new()),
        ),
        WatchError::SubscriptionDeleted { name, cursor } => Status::with_error_details(
            Code::FailedPrecondition,
            format!(
                "the subscription {name:?} was deleted; a new watch may start with \
                 after_cursor = {cursor}"
            ),
            ErrorDetails::with_error_info(
                "SUBSCRIPTION_DELETED",
                ERROR_DOMAIN,
                HashMap::from([
                    ("subscription".to_owned(), name),
                    ("cursor".to_owned(), cursor),
                ]),
            ),
        ),
    }
}

/// Maps an error of a durable subscription; `name` is the subscription the
/// request named (checked: at most 64 characters).
pub fn subscription(error: SubscriptionError, name: &str) -> Status {
    match error {
        SubscriptionError::NotFound => Status::with_error_details(
            Code::NotFound,
            format!("subscription {name:?} not found"),
            ErrorDetails::with_resource_info("invoicecase.v1.Subscription", name, "", "not found"),
        ),
        SubscriptionError::LimitReached { limit } => Status::with_error_details(
            Code::ResourceExhausted,
            format!("the caller has {limit} subscriptions, the most it may have; delete one first"),
            ErrorDetails::with_error_info(
                "SUBSCRIPTION_LIMIT_REACHED",
                ERROR_DOMAIN,
                HashMap::from([("limit".to_owned(), limit.to_string())]),
            ),
        ),
        SubscriptionError::CursorBeforeStart => {
            invalid_field("cursor", "is before the subscription's start")
        }
        SubscriptionError::CursorAhead => invalid_field(
            "cursor",
            "is ahead of the event log: not a cursor of this service's database",
        ),
        SubscriptionError::CursorOfAnotherStream => invalid_field(
            "cursor",
            "carries the snapshot of another stream: acknowledge cursors of this subscription's stream",
        ),
        SubscriptionError::Store(StoreError::Contention) => Status::with_error_details(
            Code::Aborted,
            "the subscription changed while it was created; retry",
            ErrorDetails::with_error_info("CONCURRENT_MODIFICATION", ERROR_DOMAIN, HashMap::new()),
        ),
        SubscriptionError::Store(error) => store(error, ""),
    }
}

/// INTERNAL without internals; the cause is logged under an incident id.
pub fn internal(cause: &dyn std::fmt::Display) -> Status {
    let incident = Uuid::new_v4().to_string();
    tracing::error!(%incident, %cause, "internal error");
    Status::with_error_details(
        Code::Internal,
        format!("internal error (incident {incident})"),
        ErrorDetails::with_request_info(incident, ""),
    )
}

fn domain(error: DomainError, case: &str) -> Status {
    let message = error.to_string();
    match error {
        DomainError::InvalidTransition {
            action,
            case_state,
            line,
        } => {
            let mut metadata = refusal_metadata(action, case_state);
            let subject = match &line {
                Some(line) => {
                    metadata.insert("entity".into(), "LINE".into());
                    metadata.insert("currentState".into(), line.state.as_str().into());
                    metadata.insert("lineId".into(), line.id.to_string());
                    metadata.insert("lineNumber".into(), line.number.clone());
                    metadata.insert("lineState".into(), line.state.as_str().into());
                    line.number.clone()
                }
                None => case.to_owned(),
            };
            precondition(
                INVALID_STATE_TRANSITION,
                message,
                metadata,
                PreconditionViolation::new("STATE", subject, hint(action)),
            )
        }
        // Preconditions on the lines of an action the state allows: still
        // "not allowed now", so the same reason, with the precondition named.
        DomainError::NoActiveLines { case_state } => precondition(
            INVALID_STATE_TRANSITION,
            message,
            lines_precondition(Action::Submit, case_state, "NO_ACTIVE_LINES"),
            PreconditionViolation::new("LINES", case, "add a line before submitting"),
        ),
        DomainError::LinesNotFinal { case_state, lines } => {
            let mut metadata = lines_precondition(Action::Close, case_state, "LINES_NOT_FINAL");
            metadata.insert("lines".to_owned(), lines.join(","));
            precondition(
                INVALID_STATE_TRANSITION,
                message,
                metadata,
                PreconditionViolation::new("LINES", case, "every line must be final"),
            )
        }
        DomainError::TooManyLines => precondition(
            "LINE_LIMIT_REACHED",
            message,
            HashMap::from([("action".to_owned(), Action::AddLine.as_str().to_owned())]),
            PreconditionViolation::new("LINES", case, "the case has the most lines it may hold"),
        ),
        DomainError::LineNotFound(line) => Status::with_error_details(
            Code::NotFound,
            format!("the case has no line {line}"),
            ErrorDetails::with_resource_info(
                "invoicecase.v1.CaseLine",
                line.to_string(),
                case,
                "not found",
            ),
        ),
        DomainError::InvalidRequest(violations) => invalid_argument(violations),
        DomainError::FieldsNotEditable {
            case_state,
            line,
            fields,
        } => not_editable(message, case_state, line, fields),
    }
}

/// FAILED_PRECONDITION of an edit: ErrorInfo `FIELD_NOT_EDITABLE` with the
/// fields (comma-separated) and the states, and one violation per field.
fn not_editable(
    message: String,
    case_state: CaseState,
    line: Option<RefusedLine>,
    fields: Vec<NotEditable>,
) -> Status {
    let mut metadata = refusal_metadata(Action::Update, case_state);
    let names: Vec<&str> = fields.iter().map(|field| field.field).collect();
    metadata.insert("field".to_owned(), names.join(","));
    if let Some(line) = &line {
        metadata.insert("entity".into(), "LINE".into());
        metadata.insert("currentState".into(), line.state.as_str().into());
        metadata.insert("lineId".into(), line.id.to_string());
        metadata.insert("lineNumber".into(), line.number.clone());
        metadata.insert("lineState".into(), line.state.as_str().into());
    }
    let mut details = ErrorDetails::with_error_info(FIELD_NOT_EDITABLE, ERROR_DOMAIN, metadata);
    details.set_precondition_failure(
        fields
            .into_iter()
            .map(|field| PreconditionViolation::new("FIELD", field.field, field.reason))
            .collect::<Vec<_>>(),
    );
    Status::with_error_details(Code::FailedPrecondition, message, details)
}

/// ErrorInfo metadata of an action the case refused: the action, and the
/// case's state as the current one (a refusing line overrides `entity` and
/// `currentState`).
fn refusal_metadata(action: Action, case_state: CaseState) -> HashMap<String, String> {
    HashMap::from([
        ("action".to_owned(), action.as_str().to_owned()),
        ("entity".to_owned(), "CASE".to_owned()),
        ("currentState".to_owned(), case_state.as_str().to_owned()),
        ("caseState".to_owned(), case_state.as_str().to_owned()),
    ])
}

/// ErrorInfo metadata of an action refused for its case's lines.
fn lines_precondition(
    action: Action,
    case_state: CaseState,
    precondition: &str,
) -> HashMap<String, String> {
    let mut metadata = refusal_metadata(action, case_state);
    metadata.insert("precondition".to_owned(), precondition.to_owned());
    metadata
}

fn precondition(
    reason: &str,
    message: String,
    metadata: HashMap<String, String>,
    violation: PreconditionViolation,
) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    details.set_precondition_failure(vec![violation]);
    Status::with_error_details(Code::FailedPrecondition, message, details)
}

/// What state an action needs, for the precondition detail.
fn hint(action: Action) -> &'static str {
    match action {
        Action::Create => "",
        Action::AddLine => {
            "lines are added while the case is DRAFT, NEW, WORK_IN_PROGRESS or AWAITING_INFO"
        }
        Action::RemoveLine => "lines are removed while the case is DRAFT",
        Action::Submit => "a case is submitted from DRAFT",
        Action::AssignToMe => "a case is assigned from NEW",
        Action::RequestInformation => "information is requested while the case is WORK_IN_PROGRESS",
        Action::InformationReceived => "information is received while the case is AWAITING_INFO",
        Action::ProposeSolution => "a solution is proposed while the case is WORK_IN_PROGRESS",
        Action::Close => "a case is closed from RESOLVED",
        Action::Cancel => "a case is canceled from DRAFT",
        Action::SetLineState => {
            "see SetLineState: the line and the case must be in states that allow the target"
        }
        Action::Update => {
            "see UpdateInvoiceCase and UpdateCaseLine: which fields each state allows"
        }
        Action::Assign => {
            "a case is assigned while it is NEW, WORK_IN_PROGRESS, AWAITING_INFO or RESOLVED"
        }
        Action::AcceptSolution => "a solution is accepted while the case is RESOLVED",
        Action::RejectSolution => "a solution is rejected while the case is RESOLVED",
        Action::AddComment => "comments are added until the case is CLOSED or CANCELED",
        Action::SlaBreached => "",
    }
}
