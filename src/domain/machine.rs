//! The state machine: what each action may do, and what it changes
//! (SPEC §3.1–3.4). Plain functions over plain data.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    case::{Case, Line, LineIdentity, LineRef, NewCase, NewLine, RequestSource, ResolutionCode},
    event::{Action, Cause, StateChange},
    state::{CaseState, LineState},
    values::{Decimal, MAX_LINES_PER_CASE},
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
    fn line_state(self) -> LineState {
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

/// A field of the request that is wrong given the case it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The request field, as the API names it (e.g. `line_outcomes[1].line_id`).
    pub field: String,
    pub description: String,
}

impl Violation {
    fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
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
}

/// The line whose state refused an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedLine {
    pub id: Uuid,
    pub number: String,
    pub state: LineState,
}

fn line_suffix(line: &Option<RefusedLine>) -> String {
    match line {
        Some(line) => format!(" and line {} is {}", line.number, line.state),
        None => String::new(),
    }
}

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

/// Checks that a line fits its case's request source; the error describes
/// the line's `invoice_number`.
pub fn check_line_invoice(
    request_source: RequestSource,
    case_invoice: Option<&str>,
    line: &NewLine,
) -> Result<(), String> {
    match (request_source, line.invoice_number.as_deref()) {
        (RequestSource::MultipleInvoices, None) => {
            Err("is required on lines of MULTIPLE_INVOICES cases".into())
        }
        (RequestSource::SingleInvoice, Some(number)) if Some(number) != case_invoice => {
            Err(format!(
                "must be empty or the case's invoice number ({}) on SINGLE_INVOICE cases",
                case_invoice.unwrap_or_default()
            ))
        }
        _ => Ok(()),
    }
}

/// Checks an amount against the line's disputed amount.
fn check_approved(line: &Line, approved: &Decimal) -> Result<(), String> {
    if approved > &line.disputed_amount {
        Err(format!(
            "{approved} is more than line {}'s disputed amount {}",
            line.number, line.disputed_amount
        ))
    } else {
        Ok(())
    }
}

/// Creates a case in DRAFT with its lines in DRAFT. The caller has validated
/// the fields (including [`check_line_invoice`] for every line).
pub fn create(
    new: NewCase,
    identity: CaseIdentity,
    line_identities: Vec<LineIdentity>,
    ctx: Context<'_>,
) -> Result<Decision, DomainError> {
    if new.lines.len() > MAX_LINES_PER_CASE {
        return Err(DomainError::TooManyLines);
    }
    assert_eq!(
        new.lines.len(),
        line_identities.len(),
        "one identity per new line"
    );
    let mut changes = vec![StateChange::Case {
        id: identity.id,
        number: identity.number.clone(),
        cause: Cause::Direct,
        from: None,
        to: CaseState::Draft,
    }];
    let lines: Vec<Line> = new
        .lines
        .into_iter()
        .zip(line_identities)
        .zip(1..)
        .map(|((line, identity), position)| {
            changes.push(StateChange::Line {
                id: identity.id,
                number: identity.number.clone(),
                cause: Cause::Cascade,
                from: None,
                to: Some(LineState::Draft),
            });
            new_line(line, identity, position, LineState::Draft, ctx.now)
        })
        .collect();
    let added_lines = lines.iter().map(|line| line.id).collect();
    let case = Case {
        id: identity.id,
        number: identity.number,
        state: CaseState::Draft,
        account_id: new.account_id,
        contact_id: new.contact_id,
        invoice_number: new.invoice_number,
        request_source: new.request_source,
        short_description: new.short_description,
        description: new.description,
        priority: new.priority,
        currency_code: new.currency_code,
        assigned_to: None,
        opened_by: ctx.actor.to_owned(),
        resolution_code: None,
        resolution_notes: None,
        create_time: ctx.now,
        update_time: ctx.now,
        submit_time: None,
        resolve_time: None,
        close_time: None,
        revision: 1,
        lines,
    };
    Ok(Decision {
        action: Action::Create,
        case,
        changes,
        added_lines,
        removed_lines: Vec::new(),
        updated_lines: Vec::new(),
    })
}

fn new_line(
    line: NewLine,
    identity: LineIdentity,
    position: i32,
    state: LineState,
    now: DateTime<Utc>,
) -> Line {
    Line {
        id: identity.id,
        number: identity.number,
        position,
        state,
        dispute_code: line.dispute_code,
        invoice_line_ref: line.invoice_line_ref,
        invoice_number: line.invoice_number,
        short_description: line.short_description,
        invoiced_amount: line.invoiced_amount,
        disputed_amount: line.disputed_amount,
        approved_amount: None,
        invoiced_quantity: line.invoiced_quantity,
        disputed_quantity: line.disputed_quantity,
        resolution_code: None,
        resolution_notes: None,
        create_time: now,
        update_time: now,
    }
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

    fn set_line_state(
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

    /// Moves every line in `from` to `to` as a cascade of the case action.
    fn cascade_lines(&mut self, from: LineState, to: LineState) {
        for index in 0..self.case.lines.len() {
            if self.case.lines[index].state == from {
                self.change_line(index, to, Cause::Cascade);
            }
        }
    }

    fn add_line(&mut self, line: NewLine, identity: LineIdentity) -> Result<(), DomainError> {
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

    fn remove_line(&mut self, line_ref: &LineRef) -> Result<(), DomainError> {
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

    fn submit(&mut self) -> Result<(), DomainError> {
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

    fn assign_to_me(&mut self) -> Result<(), DomainError> {
        self.require_case(&[CaseState::New])?;
        self.case.assigned_to = Some(self.ctx.actor.to_owned());
        self.set_case_state(CaseState::WorkInProgress, Cause::Direct);
        self.cascade_lines(LineState::New, LineState::WorkInProgress);
        Ok(())
    }

    fn propose_solution(&mut self, solution: ProposeSolution) -> Result<(), DomainError> {
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

    fn close(&mut self) -> Result<(), DomainError> {
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

    fn cancel(&mut self) -> Result<(), DomainError> {
        self.require_case(&[CaseState::Draft])?;
        self.set_case_state(CaseState::Canceled, Cause::Direct);
        for index in 0..self.case.lines.len() {
            if self.case.lines[index].state != LineState::Canceled {
                self.change_line(index, LineState::Canceled, Cause::Cascade);
            }
        }
        Ok(())
    }

    /// The synchronisation rules, applied after every action.
    fn synchronise(&mut self) {
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

    fn finish(mut self) -> Decision {
        self.case.revision += 1;
        self.case.update_time = self.ctx.now;
        Decision {
            action: self.action,
            case: self.case,
            changes: self.changes,
            added_lines: self.added_lines,
            removed_lines: self.removed_lines,
            updated_lines: self.updated_lines,
        }
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
