//! The state machine: what each action may do, and what it changes
//! (SPEC §3.1–3.4). Plain functions over plain data.
//!
//! * `command.rs` — what an action asks for;
//! * `error.rs` — why an action is refused;
//! * `create.rs` — creating a case;
//! * `actions.rs` — every action on an existing case;
//! * `edit.rs` — editing the fields of a case and its lines;
//! * `rules.rs` — the synchronisation rules R1 and R2;
//! * here — [`decide`], which applies one action and then the rules.

mod actions;
mod command;
mod create;
mod edit;
mod error;
mod rules;

pub use command::{Command, Context, LineOutcome, LineResolution, Outcome, ProposeSolution};
pub use create::{check_line_invoice, create};
pub use edit::{CaseField, LineField, NotEditable};
pub use error::{DomainError, RefusedLine, Violation};

use uuid::Uuid;

use crate::domain::{
    case::{Case, Line, LineRef},
    event::{Action, Cause, ChangedLine, FieldChange, StateChange},
    state::{CaseState, LineState},
};

/// An allowed action's result: the new case, the changes to record, and the
/// rows to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub action: Action,
    /// The case as it is after the action.
    pub case: Case,
    /// Every state change, the direct one first, then cascades in the order
    /// they were applied.
    pub changes: Vec<StateChange>,
    /// Every other field the action changed, in the order it changed them.
    pub field_changes: Vec<FieldChange>,
    /// Lines to insert (by id).
    pub added_lines: Vec<Uuid>,
    /// Lines to delete.
    pub removed_lines: Vec<Uuid>,
    /// Existing lines whose mutable fields (state, resolution) changed.
    pub updated_lines: Vec<Uuid>,
}

/// The server-assigned identity of a new case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseIdentity {
    pub id: Uuid,
    pub number: String,
}

/// Decides an action on an existing case: refuses it, or returns the case
/// after it with every state change it makes, cascades and synchronisation
/// rules included.
pub fn decide(case: &Case, command: Command, ctx: Context<'_>) -> Result<Decision, DomainError> {
    let mut work = Work::new(case, command.action(), ctx);
    match command {
        Command::AddLine { line, identity } => work.add_line(line, identity)?,
        Command::RemoveLine { line } => work.remove_line(&line)?,
        Command::Submit => work.submit()?,
        Command::AssignToMe => work.assign_to_me()?,
        Command::Assign { assignee, group } => work.assign(assignee, group)?,
        Command::RequestInformation => {
            work.require_case(&[CaseState::WorkInProgress])?;
            work.set_case_state(CaseState::AwaitingInfo, Cause::Direct);
        }
        Command::InformationReceived => {
            work.require_case(&[CaseState::AwaitingInfo])?;
            work.set_case_state(CaseState::WorkInProgress, Cause::Direct);
        }
        Command::ProposeSolution(solution) => work.propose_solution(solution)?,
        Command::Close => work.close()?,
        Command::Cancel => work.cancel()?,
        Command::SetLineState {
            line,
            target,
            resolution,
        } => work.set_line_state(&line, target, resolution)?,
        Command::UpdateCase { fields } => work.update_case(fields)?,
        Command::UpdateLine { line, fields } => work.update_line(&line, fields)?,
    }
    work.synchronise();
    Ok(work.finish())
}

/// An action being applied to a copy of the case.
struct Work<'a> {
    action: Action,
    ctx: Context<'a>,
    case: Case,
    changes: Vec<StateChange>,
    field_changes: Vec<FieldChange>,
    added_lines: Vec<Uuid>,
    removed_lines: Vec<Uuid>,
    updated_lines: Vec<Uuid>,
}

impl<'a> Work<'a> {
    fn new(case: &Case, action: Action, ctx: Context<'a>) -> Self {
        Work {
            action,
            ctx,
            case: case.clone(),
            changes: Vec::new(),
            field_changes: Vec::new(),
            added_lines: Vec::new(),
            removed_lines: Vec::new(),
            updated_lines: Vec::new(),
        }
    }

    fn refuse(&self, line: Option<&Line>) -> DomainError {
        DomainError::InvalidTransition {
            action: self.action,
            case_state: self.case.state,
            line: line.map(|line| RefusedLine {
                id: line.id,
                number: line.number.clone(),
                state: line.state,
            }),
        }
    }

    fn require_case(&self, allowed: &[CaseState]) -> Result<(), DomainError> {
        if allowed.contains(&self.case.state) {
            Ok(())
        } else {
            Err(self.refuse(None))
        }
    }

    fn find_line(&self, line_ref: &LineRef) -> Result<usize, DomainError> {
        self.case
            .line_index(line_ref)
            .ok_or_else(|| DomainError::LineNotFound(line_ref.clone()))
    }

    fn set_case_state(&mut self, to: CaseState, cause: Cause) {
        let case = &mut self.case;
        self.changes.push(StateChange::Case {
            id: case.id,
            number: case.number.clone(),
            cause,
            from: Some(case.state),
            to,
        });
        case.state = to;
        match to {
            CaseState::New => case.submit_time = Some(self.ctx.now),
            CaseState::Resolved => case.resolve_time = Some(self.ctx.now),
            CaseState::Closed => case.close_time = Some(self.ctx.now),
            _ => {}
        }
    }

    fn change_line(&mut self, index: usize, to: LineState, cause: Cause) {
        let line = &mut self.case.lines[index];
        self.changes.push(StateChange::Line {
            id: line.id,
            number: line.number.clone(),
            cause,
            from: Some(line.state),
            to: Some(to),
        });
        line.state = to;
        line.update_time = self.ctx.now;
        if !self.updated_lines.contains(&line.id) && !self.added_lines.contains(&line.id) {
            self.updated_lines.push(line.id);
        }
    }

    /// Records that a field of the case (`line: None`) or of the line at
    /// `line` changed from `old` to `new`; a field whose value stays is not
    /// recorded. An existing line's row is then rewritten.
    fn record_field(
        &mut self,
        line: Option<usize>,
        field: &str,
        old: Option<String>,
        new: Option<String>,
    ) {
        if old == new {
            return;
        }
        let line = line.map(|index| {
            let line = &self.case.lines[index];
            if !self.updated_lines.contains(&line.id) && !self.added_lines.contains(&line.id) {
                self.updated_lines.push(line.id);
            }
            ChangedLine {
                id: line.id,
                number: line.number.clone(),
            }
        });
        self.field_changes.push(FieldChange {
            line,
            field: field.to_owned(),
            old,
            new,
        });
    }

    /// Moves every line in `from` to `to` as a cascade of the case action.
    fn cascade_lines(&mut self, from: LineState, to: LineState) {
        for index in 0..self.case.lines.len() {
            if self.case.lines[index].state == from {
                self.change_line(index, to, Cause::Cascade);
            }
        }
    }

    fn finish(mut self) -> Decision {
        // An edit that changed nothing leaves the case as it was.
        if !edit::commits_nothing(self.action, &self.changes, &self.field_changes) {
            self.case.revision += 1;
            self.case.update_time = self.ctx.now;
        }
        Decision {
            action: self.action,
            case: self.case,
            changes: self.changes,
            field_changes: self.field_changes,
            added_lines: self.added_lines,
            removed_lines: self.removed_lines,
            updated_lines: self.updated_lines,
        }
    }
}
