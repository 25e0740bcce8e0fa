//! What an action asks for: the commands and their parts.

use chrono::{DateTime, Utc};

use super::{CaseField, LineField};
use crate::domain::{
    case::{LineIdentity, LineRef, NewLine, ResolutionCode},
    event::Action,
    state::LineState,
    values::Decimal,
};

/// Who acts, and when.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The caller (the token's `sub`).
    pub actor: &'a str,
    /// The time recorded on the changed rows.
    pub now: DateTime<Utc>,
}

/// An action on an existing case.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    AddLine {
        line: NewLine,
        identity: LineIdentity,
    },
    RemoveLine {
        line: LineRef,
    },
    Submit,
    AssignToMe,
    RequestInformation,
    InformationReceived,
    ProposeSolution(ProposeSolution),
    Close,
    Cancel,
    SetLineState {
        line: LineRef,
        target: LineState,
        resolution: LineResolution,
    },
    /// AssignCase: the case to a named agent, and its assignment group
    /// (`None` clears it).
    Assign {
        assignee: String,
        group: Option<String>,
    },
    /// UpdateInvoiceCase: new values of case fields, in the request's
    /// order.
    UpdateCase {
        fields: Vec<CaseField>,
    },
    /// UpdateCaseLine: new values of one line's fields, in the request's
    /// order.
    UpdateLine {
        line: LineRef,
        fields: Vec<LineField>,
    },
}

impl Command {
    /// The action this command performs.
    pub fn action(&self) -> Action {
        match self {
            Command::AddLine { .. } => Action::AddLine,
            Command::RemoveLine { .. } => Action::RemoveLine,
            Command::Submit => Action::Submit,
            Command::AssignToMe => Action::AssignToMe,
            Command::RequestInformation => Action::RequestInformation,
            Command::InformationReceived => Action::InformationReceived,
            Command::ProposeSolution(_) => Action::ProposeSolution,
            Command::Close => Action::Close,
            Command::Cancel => Action::Cancel,
            Command::SetLineState { .. } => Action::SetLineState,
            Command::Assign { .. } => Action::Assign,
            Command::UpdateCase { .. } | Command::UpdateLine { .. } => Action::Update,
        }
    }
}

/// The outcome a proposed solution gives a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Denied,
}

impl Outcome {
    pub(super) fn line_state(self) -> LineState {
        match self {
            Outcome::Accepted => LineState::ResolvedAccepted,
            Outcome::Denied => LineState::ResolvedDenied,
        }
    }
}

/// Propose solution: the case's resolution and every open line's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposeSolution {
    pub resolution_code: ResolutionCode,
    pub resolution_notes: String,
    /// The outcome of every non-final line without an entry of its own.
    pub default_outcome: Option<Outcome>,
    pub line_outcomes: Vec<LineOutcome>,
}

/// The outcome of one line in [`ProposeSolution`].
#[derive(Debug, Clone, PartialEq)]
pub struct LineOutcome {
    pub line: LineRef,
    pub outcome: Outcome,
    pub approved_amount: Option<Decimal>,
    pub resolution_code: Option<ResolutionCode>,
    pub resolution_notes: Option<String>,
}

/// What resolving a line by hand may set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineResolution {
    pub code: Option<ResolutionCode>,
    pub notes: Option<String>,
    pub approved_amount: Option<Decimal>,
}
