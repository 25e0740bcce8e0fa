//! The invariants of SPEC §3.5 that every committed case satisfies, and the
//! replay of recorded changes.

use std::collections::HashMap;

use uuid::Uuid;

use super::{
    case::Case,
    event::StateChange,
    state::{CaseState, LineState},
    values::MAX_LINES_PER_CASE,
};

/// Checks every invariant of SPEC §3.5 that a single case carries; returns
/// the first one broken.
pub fn check(case: &Case) -> Result<(), String> {
    let states: Vec<LineState> = case.lines.iter().map(|line| line.state).collect();
    let only = |allowed: &[LineState]| states.iter().all(|state| allowed.contains(state));
    let ok = match case.state {
        CaseState::Draft => only(&[LineState::Draft, LineState::Canceled]),
        CaseState::New => only(&[LineState::New, LineState::Canceled]),
        CaseState::WorkInProgress | CaseState::AwaitingInfo => {
            !states
                .iter()
                .any(|state| matches!(state, LineState::Draft | LineState::New))
                && states.iter().any(|state| !state.is_final())
        }
        CaseState::Resolved | CaseState::Closed => states.iter().all(|state| state.is_final()),
        CaseState::Canceled => only(&[LineState::Canceled]),
    };
    if !ok {
        return Err(format!(
            "case {} is {} with lines {:?}",
            case.number, case.state, states
        ));
    }
    let must_be_assigned = matches!(
        case.state,
        CaseState::WorkInProgress
            | CaseState::AwaitingInfo
            | CaseState::Resolved
            | CaseState::Closed
    );
    if must_be_assigned != case.assigned_to.is_some() {
        return Err(format!(
            "case {} is {} with assigned_to {:?}",
            case.number, case.state, case.assigned_to
        ));
    }
    if case.lines.len() > MAX_LINES_PER_CASE {
        return Err(format!(
            "case {} has {} lines",
            case.number,
            case.lines.len()
        ));
    }
    for line in &case.lines {
        if line.state.is_resolved() != line.approved_amount.is_some() {
            return Err(format!(
                "line {} is {} with approved amount {:?}",
                line.number, line.state, line.approved_amount
            ));
        }
        if line
            .approved_amount
            .as_ref()
            .is_some_and(|approved| approved > &line.disputed_amount)
        {
            return Err(format!("line {} approves more than disputed", line.number));
        }
    }
    Ok(())
}

/// States rebuilt from a case's recorded changes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub case_state: Option<CaseState>,
    /// The state of every line that exists after the changes.
    pub lines: HashMap<Uuid, LineState>,
}

impl Replayed {
    /// Applies one change; fails when its `from` is not the replayed state.
    pub fn apply(&mut self, change: &StateChange) -> Result<(), String> {
        match change {
            StateChange::Case {
                from, to, number, ..
            } => {
                if *from != self.case_state {
                    return Err(format!(
                        "case {number} changes from {from:?} but was {:?}",
                        self.case_state
                    ));
                }
                self.case_state = Some(*to);
            }
            StateChange::Line {
                id,
                from,
                to,
                number,
                ..
            } => {
                let current = self.lines.get(id).copied();
                if *from != current {
                    return Err(format!(
                        "line {number} changes from {from:?} but was {current:?}"
                    ));
                }
                match to {
                    Some(to) => self.lines.insert(*id, *to),
                    None => self.lines.remove(id),
                };
            }
        }
        Ok(())
    }

    /// Whether the replayed states are exactly the case's.
    pub fn matches(&self, case: &Case) -> bool {
        self.case_state == Some(case.state)
            && self.lines.len() == case.lines.len()
            && case
                .lines
                .iter()
                .all(|line| self.lines.get(&line.id) == Some(&line.state))
    }
}
