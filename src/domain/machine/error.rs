//! Why an action is refused.

use uuid::Uuid;

use super::NotEditable;
use crate::domain::{
    case::LineRef,
    event::Action,
    state::{CaseState, LineState},
    values::MAX_LINES_PER_CASE,
};

/// A field of the request that is wrong given the case it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The request field, as the API names it (e.g. `line_outcomes[1].line_id`).
    pub field: String,
    pub description: String,
}

impl Violation {
    pub(super) fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Violation {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Why an action is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The action is not allowed in the current state of the case (or, with
    /// `line`, of that line).
    #[error("{action} is not allowed while the case is {case_state}{}", line_suffix(.line))]
    InvalidTransition {
        action: Action,
        case_state: CaseState,
        line: Option<RefusedLine>,
    },
    /// Submit needs a line that is not canceled.
    #[error("the case has no line that is not CANCELED")]
    NoActiveLines { case_state: CaseState },
    /// Close needs every line final (always true in RESOLVED; still checked).
    #[error("lines {lines:?} are not final")]
    LinesNotFinal {
        case_state: CaseState,
        lines: Vec<String>,
    },
    /// The case already holds the most lines it may.
    #[error("a case holds at most {MAX_LINES_PER_CASE} lines")]
    TooManyLines,
    /// The line named by the request is not a line of the case.
    #[error("the case has no line {0}")]
    LineNotFound(LineRef),
    /// Request fields that do not fit the case.
    #[error("invalid request: {0:?}")]
    InvalidRequest(Vec<Violation>),
    /// An edit named fields that the case's state (or, with `line`, that
    /// line's) does not let change.
    #[error("{} cannot change while the case is {case_state}{}", field_list(.fields), line_suffix(.line))]
    FieldsNotEditable {
        case_state: CaseState,
        line: Option<RefusedLine>,
        fields: Vec<NotEditable>,
    },
}

/// The line whose state refused an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedLine {
    pub id: Uuid,
    pub number: String,
    pub state: LineState,
}

fn field_list(fields: &[NotEditable]) -> String {
    let names: Vec<&str> = fields.iter().map(|field| field.field).collect();
    names.join(", ")
}

fn line_suffix(line: &Option<RefusedLine>) -> String {
    match line {
        Some(line) => format!(" and line {} is {}", line.number, line.state),
        None => String::new(),
    }
}
