//! What an action did: the action's name and every state change it made
//! (SPEC §4).

use std::fmt;

use uuid::Uuid;

use super::state::{CaseState, LineState};

/// The actions, one per mutating RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Create,
    AddLine,
    RemoveLine,
    Submit,
    AssignToMe,
    RequestInformation,
    InformationReceived,
    ProposeSolution,
    Close,
    Cancel,
    SetLineState,
    Update,
    Assign,
    AcceptSolution,
    RejectSolution,
    AddComment,
    SlaBreached,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 17] = [
        Action::Create,
        Action::AddLine,
        Action::RemoveLine,
        Action::Submit,
        Action::AssignToMe,
        Action::RequestInformation,
        Action::InformationReceived,
        Action::ProposeSolution,
        Action::Close,
        Action::Cancel,
        Action::SetLineState,
        Action::Update,
        Action::Assign,
        Action::AcceptSolution,
        Action::RejectSolution,
        Action::AddComment,
        Action::SlaBreached,
    ];

    /// The name used in the database, events and error details.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "CREATE",
            Action::AddLine => "ADD_LINE",
            Action::RemoveLine => "REMOVE_LINE",
            Action::Submit => "SUBMIT",
            Action::AssignToMe => "ASSIGN_TO_ME",
            Action::RequestInformation => "REQUEST_INFORMATION",
            Action::InformationReceived => "INFORMATION_RECEIVED",
            Action::ProposeSolution => "PROPOSE_SOLUTION",
            Action::Close => "CLOSE",
            Action::Cancel => "CANCEL",
            Action::SetLineState => "SET_LINE_STATE",
            Action::Update => "UPDATE",
            Action::Assign => "ASSIGN",
            Action::AcceptSolution => "ACCEPT_SOLUTION",
            Action::RejectSolution => "REJECT_SOLUTION",
            Action::AddComment => "ADD_COMMENT",
            Action::SlaBreached => "SLA_BREACHED",
        }
    }

    /// The inverse of [`Action::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The entity the action names (the case for case actions, the line for
    /// line actions).
    Direct,
    /// A consequence: a case action's effect on the lines, or a
    /// synchronisation rule (R1, R2).
    Cascade,
}

/// One state change of a case or a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange {
    /// The case changed state (`from` is `None` on creation).
    Case {
        id: Uuid,
        number: String,
        cause: Cause,
        from: Option<CaseState>,
        to: CaseState,
    },
    /// A line changed state (`from` is `None` when it was added, `to` when it
    /// was removed).
    Line {
        id: Uuid,
        number: String,
        cause: Cause,
        from: Option<LineState>,
        to: Option<LineState>,
    },
}

/// One field an action changed other than a state (those are
/// [`StateChange`]s): which, and its value before and after, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    /// The line whose field it is; `None` for a field of the case.
    pub line: Option<ChangedLine>,
    /// The field's API name (`priority`, `disputed_amount`, …).
    pub field: String,
    /// The value before; `None` when it was not set.
    pub old: Option<String>,
    /// The value after; `None` when it is no longer set.
    pub new: Option<String>,
}

/// The line a [`FieldChange`] is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedLine {
    pub id: Uuid,
    pub number: String,
}

impl StateChange {
    /// The cause of the change.
    pub fn cause(&self) -> Cause {
        match self {
            StateChange::Case { cause, .. } | StateChange::Line { cause, .. } => *cause,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_round_trip() {
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(action));
        }
    }
}
