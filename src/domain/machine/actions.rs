//! The actions on an existing case: what each requires and changes.

use super::{
    DomainError, LineOutcome, LineResolution, Outcome, ProposeSolution, Violation, Work,
    create::{check_approved, check_line_invoice, new_line},
};
use crate::domain::{
    case::{Line, LineIdentity, LineRef, NewLine, ResolutionCode},
    event::{Cause, StateChange},
    state::{CaseState, LineState},
    values::{Decimal, MAX_LINES_PER_CASE},
};

impl Work<'_> {
    pub(super) fn set_line_state(
        &mut self,
        line_ref: &LineRef,
        target: LineState,
        resolution: LineResolution,
    ) -> Result<(), DomainError> {
        let index = self.find_line(line_ref)?;
        let line = &self.case.lines[index];
        let (line_from, case_allowed): (&[LineState], &[CaseState]) = match target {
            LineState::AwaitingInfo => (&[LineState::WorkInProgress], &OPEN),
            LineState::WorkInProgress => (&[LineState::AwaitingInfo], &OPEN),
            LineState::ResolvedAccepted | LineState::ResolvedDenied => {
                (&[LineState::WorkInProgress, LineState::AwaitingInfo], &OPEN)
            }
            LineState::Canceled => (
                &[
                    LineState::Draft,
                    LineState::New,
                    LineState::WorkInProgress,
                    LineState::AwaitingInfo,
                ],
                &[
                    CaseState::Draft,
                    CaseState::New,
                    CaseState::WorkInProgress,
                    CaseState::AwaitingInfo,
                ],
            ),
            LineState::Draft | LineState::New => (&[], &[]),
        };
        if !case_allowed.contains(&self.case.state) {
            return Err(self.refuse(None));
        }
        if !line_from.contains(&line.state) {
            return Err(self.refuse(Some(line)));
        }
        if target.is_resolved() {
            let approved = match (&resolution.approved_amount, target) {
                (Some(_), LineState::ResolvedDenied) => {
                    return Err(DomainError::InvalidRequest(vec![Violation::new(
                        "approved_amount",
                        "a denied line has no approved amount",
                    )]));
                }
                (Some(amount), _) => {
                    check_approved(line, amount).map_err(|description| {
                        DomainError::InvalidRequest(vec![Violation::new(
                            "approved_amount",
                            description,
                        )])
                    })?;
                    amount.clone()
                }
                (None, _) => default_approved(line, target),
            };
            let line = &mut self.case.lines[index];
            line.approved_amount = Some(approved);
            line.resolution_code = resolution.code;
            line.resolution_notes = resolution.notes;
        } else if resolution != LineResolution::default() {
            return Err(DomainError::InvalidRequest(vec![Violation::new(
                "resolution_code",
                "resolution fields are only set when resolving a line",
            )]));
        }
        self.change_line(index, target, Cause::Direct);
        Ok(())
    }

    pub(super) fn add_line(
        &mut self,
        line: NewLine,
        identity: LineIdentity,
    ) -> Result<(), DomainError> {
        let state = match self.case.state {
            CaseState::Draft => LineState::Draft,
            CaseState::New => LineState::New,
            CaseState::WorkInProgress | CaseState::AwaitingInfo => LineState::WorkInProgress,
            _ => return Err(self.refuse(None)),
        };
        if self.case.lines.len() >= MAX_LINES_PER_CASE {
            return Err(DomainError::TooManyLines);
        }
        check_line_invoice(
            self.case.request_source,
            self.case.invoice_number.as_deref(),
            &line,
        )
        .map_err(|description| {
            DomainError::InvalidRequest(vec![Violation::new("line.invoice_number", description)])
        })?;
        let position = self
            .case
            .lines
            .iter()
            .map(|l| l.position)
            .max()
            .unwrap_or(0)
            + 1;
        let line = new_line(line, identity, position, state, self.ctx.now);
        self.changes.push(StateChange::Line {
            id: line.id,
            number: line.number.clone(),
            cause: Cause::Direct,
            from: None,
            to: Some(state),
        });
        self.added_lines.push(line.id);
        self.case.lines.push(line);
        Ok(())
    }

    pub(super) fn remove_line(&mut self, line_ref: &LineRef) -> Result<(), DomainError> {
        let index = self.find_line(line_ref)?;
        self.require_case(&[CaseState::Draft])?;
        let line = self.case.lines.remove(index);
        self.changes.push(StateChange::Line {
            id: line.id,
            number: line.number,
            cause: Cause::Direct,
            from: Some(line.state),
            to: None,
        });
        self.removed_lines.push(line.id);
        Ok(())
    }

    pub(super) fn submit(&mut self) -> Result<(), DomainError> {
        self.require_case(&[CaseState::Draft])?;
        if self
            .case
            .lines
            .iter()
            .all(|line| line.state == LineState::Canceled)
        {
            return Err(DomainError::NoActiveLines {
                case_state: self.case.state,
            });
        }
        self.set_case_state(CaseState::New, Cause::Direct);
        self.cascade_lines(LineState::Draft, LineState::New);
        Ok(())
    }

    pub(super) fn assign_to_me(&mut self) -> Result<(), DomainError> {
        self.require_case(&[CaseState::New])?;
        self.case.assigned_to = Some(self.ctx.actor.to_owned());
        self.set_case_state(CaseState::WorkInProgress, Cause::Direct);
        self.cascade_lines(LineState::New, LineState::WorkInProgress);
        Ok(())
    }

    /// AssignCase: a NEW case is taken into work for the assignee as
    /// Assign to me takes it for the caller; an open or RESOLVED case
    /// changes hands without a state change. The event records the
    /// assignee and the group from and to; the same assignment again
    /// changes nothing and commits nothing.
    pub(super) fn assign(
        &mut self,
        assignee: String,
        group: Option<String>,
    ) -> Result<(), DomainError> {
        self.require_case(&[
            CaseState::New,
            CaseState::WorkInProgress,
            CaseState::AwaitingInfo,
            CaseState::Resolved,
        ])?;
        let old_assignee = self.case.assigned_to.replace(assignee.clone());
        self.record_field(None, "assigned_to", old_assignee, Some(assignee));
        let old_group = std::mem::replace(&mut self.case.assignment_group, group.clone());
        self.record_field(None, "assignment_group", old_group, group);
        if self.case.state == CaseState::New {
            self.set_case_state(CaseState::WorkInProgress, Cause::Direct);
            self.cascade_lines(LineState::New, LineState::WorkInProgress);
        }
        Ok(())
    }

    pub(super) fn propose_solution(
        &mut self,
        solution: ProposeSolution,
    ) -> Result<(), DomainError> {
        self.require_case(&[CaseState::WorkInProgress])?;
        let mut violations = Vec::new();
        let mut chosen: Vec<Option<&LineOutcome>> = vec![None; self.case.lines.len()];
        for (i, entry) in solution.line_outcomes.iter().enumerate() {
            let field = format!("line_outcomes[{i}]");
            let Some(index) = self.case.line_index(&entry.line) else {
                violations.push(Violation::new(
                    format!("{field}.line_id"),
                    format!("the case has no line {}", entry.line),
                ));
                continue;
            };
            let line = &self.case.lines[index];
            if line.state.is_final() {
                violations.push(Violation::new(
                    format!("{field}.line_id"),
                    format!("line {} is already {}", line.number, line.state),
                ));
            } else if chosen[index].is_some() {
                violations.push(Violation::new(
                    format!("{field}.line_id"),
                    format!("line {} has more than one outcome", line.number),
                ));
            } else {
                chosen[index] = Some(entry);
            }
            match (&entry.approved_amount, entry.outcome) {
                (Some(_), Outcome::Denied) => violations.push(Violation::new(
                    format!("{field}.approved_amount"),
                    "a denied line has no approved amount",
                )),
                (Some(amount), Outcome::Accepted) => {
                    if let Err(description) = check_approved(line, amount) {
                        violations.push(Violation::new(
                            format!("{field}.approved_amount"),
                            description,
                        ));
                    }
                }
                (None, _) => {}
            }
        }
        if solution.default_outcome.is_none() {
            let missing: Vec<&str> = self
                .case
                .lines
                .iter()
                .zip(&chosen)
                .filter(|(line, chosen)| !line.state.is_final() && chosen.is_none())
                .map(|(line, _)| line.number.as_str())
                .collect();
            if !missing.is_empty() {
                violations.push(Violation::new(
                    "line_outcomes",
                    format!(
                        "no outcome for lines {} (give one per line or a default_outcome)",
                        missing.join(", ")
                    ),
                ));
            }
        }
        if !violations.is_empty() {
            return Err(DomainError::InvalidRequest(violations));
        }

        let resolutions: Vec<Option<ResolvedLine>> = self
            .case
            .lines
            .iter()
            .zip(&chosen)
            .map(|(line, chosen)| {
                if line.state.is_final() {
                    return None;
                }
                let (outcome, approved, code, notes) = match chosen {
                    Some(entry) => (
                        entry.outcome,
                        entry.approved_amount.clone(),
                        entry.resolution_code,
                        entry.resolution_notes.clone(),
                    ),
                    None => (solution.default_outcome?, None, None, None),
                };
                let state = outcome.line_state();
                Some(ResolvedLine {
                    state,
                    approved: approved.unwrap_or_else(|| default_approved(line, state)),
                    code: code.unwrap_or(solution.resolution_code),
                    notes: notes.unwrap_or_else(|| solution.resolution_notes.clone()),
                })
            })
            .collect();

        self.case.resolution_code = Some(solution.resolution_code);
        self.case.resolution_notes = Some(solution.resolution_notes);
        self.set_case_state(CaseState::Resolved, Cause::Direct);
        for (index, resolution) in resolutions.into_iter().enumerate() {
            if let Some(resolved) = resolution {
                let line = &mut self.case.lines[index];
                line.approved_amount = Some(resolved.approved);
                line.resolution_code = Some(resolved.code);
                line.resolution_notes = Some(resolved.notes);
                self.change_line(index, resolved.state, Cause::Cascade);
            }
        }
        Ok(())
    }

    pub(super) fn close(&mut self) -> Result<(), DomainError> {
        self.require_case(&[CaseState::Resolved])?;
        let open: Vec<String> = self
            .case
            .lines
            .iter()
            .filter(|line| !line.state.is_final())
            .map(|line| line.number.clone())
            .collect();
        if !open.is_empty() {
            return Err(DomainError::LinesNotFinal {
                case_state: self.case.state,
                lines: open,
            });
        }
        self.set_case_state(CaseState::Closed, Cause::Direct);
        Ok(())
    }

    pub(super) fn cancel(&mut self) -> Result<(), DomainError> {
        self.require_case(&[CaseState::Draft])?;
        self.set_case_state(CaseState::Canceled, Cause::Direct);
        for index in 0..self.case.lines.len() {
            if self.case.lines[index].state != LineState::Canceled {
                self.change_line(index, LineState::Canceled, Cause::Cascade);
            }
        }
        Ok(())
    }
}

/// How Propose solution resolves one line.
struct ResolvedLine {
    state: LineState,
    approved: Decimal,
    code: ResolutionCode,
    notes: String,
}

const OPEN: [CaseState; 2] = [CaseState::WorkInProgress, CaseState::AwaitingInfo];

/// An accepted line without an explicit amount is approved in full; a
/// denied one approves nothing.
fn default_approved(line: &Line, state: LineState) -> Decimal {
    match state {
        LineState::ResolvedAccepted => line.disputed_amount.clone(),
        _ => Decimal::from_big_decimal(0.into()),
    }
}
