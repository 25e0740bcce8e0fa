//! The states of cases and lines (SPEC §3).

use std::fmt;

/// The state of an invoice case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaseState {
    Draft,
    New,
    WorkInProgress,
    AwaitingInfo,
    Resolved,
    Closed,
    Canceled,
}

/// The state of a case line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineState {
    Draft,
    New,
    WorkInProgress,
    AwaitingInfo,
    ResolvedAccepted,
    ResolvedDenied,
    Canceled,
}

impl CaseState {
    /// Every case state, in lifecycle order.
    pub const ALL: [CaseState; 7] = [
        CaseState::Draft,
        CaseState::New,
        CaseState::WorkInProgress,
        CaseState::AwaitingInfo,
        CaseState::Resolved,
        CaseState::Closed,
        CaseState::Canceled,
    ];

    /// An open case is one an agent works on.
    pub fn is_open(self) -> bool {
        matches!(self, CaseState::WorkInProgress | CaseState::AwaitingInfo)
    }

    /// Nothing about a terminal case or its lines changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, CaseState::Closed | CaseState::Canceled)
    }

    /// The name used in the database, the API and error details.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseState::Draft => "DRAFT",
            CaseState::New => "NEW",
            CaseState::WorkInProgress => "WORK_IN_PROGRESS",
            CaseState::AwaitingInfo => "AWAITING_INFO",
            CaseState::Resolved => "RESOLVED",
            CaseState::Closed => "CLOSED",
            CaseState::Canceled => "CANCELED",
        }
    }

    /// The inverse of [`CaseState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

impl LineState {
    /// Every line state, in lifecycle order.
    pub const ALL: [LineState; 7] = [
        LineState::Draft,
        LineState::New,
        LineState::WorkInProgress,
        LineState::AwaitingInfo,
        LineState::ResolvedAccepted,
        LineState::ResolvedDenied,
        LineState::Canceled,
    ];

    /// No transition leaves a final line state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            LineState::ResolvedAccepted | LineState::ResolvedDenied | LineState::Canceled
        )
    }

    /// A resolved line carries a resolution.
    pub fn is_resolved(self) -> bool {
        matches!(
            self,
            LineState::ResolvedAccepted | LineState::ResolvedDenied
        )
    }

    /// The name used in the database, the API and error details.
    pub fn as_str(self) -> &'static str {
        match self {
            LineState::Draft => "DRAFT",
            LineState::New => "NEW",
            LineState::WorkInProgress => "WORK_IN_PROGRESS",
            LineState::AwaitingInfo => "AWAITING_INFO",
            LineState::ResolvedAccepted => "RESOLVED_ACCEPTED",
            LineState::ResolvedDenied => "RESOLVED_DENIED",
            LineState::Canceled => "CANCELED",
        }
    }

    /// The inverse of [`LineState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

impl fmt::Display for CaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for LineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in CaseState::ALL {
            assert_eq!(CaseState::parse(state.as_str()), Some(state));
        }
        for state in LineState::ALL {
            assert_eq!(LineState::parse(state.as_str()), Some(state));
        }
        assert_eq!(CaseState::parse("RESOLVED_ACCEPTED"), None);
        assert_eq!(LineState::parse("RESOLVED"), None);
    }

    #[test]
    fn final_and_open_states_are_those_of_the_spec() {
        let finals: Vec<_> = LineState::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .collect();
        assert_eq!(
            finals,
            [
                LineState::ResolvedAccepted,
                LineState::ResolvedDenied,
                LineState::Canceled
            ]
        );
        let open: Vec<_> = CaseState::ALL.into_iter().filter(|s| s.is_open()).collect();
        assert_eq!(open, [CaseState::WorkInProgress, CaseState::AwaitingInfo]);
    }
}
