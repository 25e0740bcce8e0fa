//! The synchronisation rules R1 and R2 (SPEC §3.4), applied after every
//! action: a line entering WORK_IN_PROGRESS while the case awaits
//! information puts the case back in progress (R2); an open case whose
//! lines are all final is resolved (R1).

use crate::domain::{
    event::{Cause, StateChange},
    state::{CaseState, LineState},
};

use super::Work;

impl Work<'_> {
    /// The synchronisation rules, applied after every action.
    pub(super) fn synchronise(&mut self) {
        // R2: a line entering WORK_IN_PROGRESS while the case awaits
        // information puts the case back in progress.
        let line_entered_progress = self.changes.iter().any(|change| {
            matches!(
                change,
                StateChange::Line {
                    to: Some(LineState::WorkInProgress),
                    ..
                }
            )
        });
        if self.case.state == CaseState::AwaitingInfo && line_entered_progress {
            self.set_case_state(CaseState::WorkInProgress, Cause::Cascade);
        }
        // R1: an open case whose lines are all final is resolved.
        if self.case.state.is_open()
            && !self.case.lines.is_empty()
            && self.case.lines.iter().all(|line| line.state.is_final())
        {
            self.set_case_state(CaseState::Resolved, Cause::Cascade);
        }
    }
}
