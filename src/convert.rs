//! Domain records to protobuf messages.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use crate::{
    domain::{
        Action, Case, CaseState, Cause, DisputeCode, FieldChange, Line, LineState, Priority,
        RequestSource, ResolutionCode, StateChange,
    },
    pb,
    store::StoredEvent,
};

pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn case_state(state: CaseState) -> pb::invoice_case::State {
    use pb::invoice_case::State;
    match state {
        CaseState::Draft => State::Draft,
        CaseState::New => State::New,
        CaseState::WorkInProgress => State::WorkInProgress,
        CaseState::AwaitingInfo => State::AwaitingInfo,
        CaseState::Resolved => State::Resolved,
        CaseState::Closed => State::Closed,
        CaseState::Canceled => State::Canceled,
    }
}

pub fn line_state(state: LineState) -> pb::case_line::State {
    use pb::case_line::State;
    match state {
        LineState::Draft => State::Draft,
        LineState::New => State::New,
        LineState::WorkInProgress => State::WorkInProgress,
        LineState::AwaitingInfo => State::AwaitingInfo,
        LineState::ResolvedAccepted => State::ResolvedAccepted,
        LineState::ResolvedDenied => State::ResolvedDenied,
        LineState::Canceled => State::Canceled,
    }
}

pub fn request_source(source: RequestSource) -> pb::invoice_case::RequestSource {
    match source {
        RequestSource::SingleInvoice => pb::invoice_case::RequestSource::SingleInvoice,
        RequestSource::MultipleInvoices => pb::invoice_case::RequestSource::MultipleInvoices,
    }
}

pub fn priority(priority: Priority) -> pb::invoice_case::Priority {
    use pb::invoice_case::Priority as P;
    match priority {
        Priority::Critical => P::Critical,
        Priority::High => P::High,
        Priority::Moderate => P::Moderate,
        Priority::Low => P::Low,
    }
}

pub fn dispute_code(code: DisputeCode) -> pb::case_line::DisputeCode {
    use pb::case_line::DisputeCode as P;
    match code {
        DisputeCode::IncorrectProductOrService => P::IncorrectProductOrService,
        DisputeCode::PricingDiscrepancy => P::PricingDiscrepancy,
        DisputeCode::IncorrectQuantity => P::IncorrectQuantity,
        DisputeCode::IncorrectCustomerDetails => P::IncorrectCustomerDetails,
        DisputeCode::Other => P::Other,
    }
}

pub fn resolution_code(code: Option<ResolutionCode>) -> pb::invoice_case::ResolutionCode {
    use pb::invoice_case::ResolutionCode as P;
    match code {
        None => P::Unspecified,
        Some(ResolutionCode::SolvedCredit) => P::SolvedCredit,
        Some(ResolutionCode::SolvedWriteOff) => P::SolvedWriteOff,
        Some(ResolutionCode::SolvedSettlement) => P::SolvedSettlement,
        Some(ResolutionCode::SolvedInvalidDispute) => P::SolvedInvalidDispute,
    }
}

pub fn action(action: Action) -> pb::state_change_event::Action {
    use pb::state_change_event::Action as A;
    match action {
        Action::Create => A::Create,
        Action::AddLine => A::AddLine,
        Action::RemoveLine => A::RemoveLine,
        Action::Submit => A::Submit,
        Action::AssignToMe => A::AssignToMe,
        Action::RequestInformation => A::RequestInformation,
        Action::InformationReceived => A::InformationReceived,
        Action::ProposeSolution => A::ProposeSolution,
        Action::Close => A::Close,
        Action::Cancel => A::Cancel,
        Action::SetLineState => A::SetLineState,
        Action::Update => A::Update,
        Action::Assign => A::Assign,
        Action::AcceptSolution => A::AcceptSolution,
        Action::RejectSolution => A::RejectSolution,
        Action::AddComment => A::AddComment,
        Action::SlaBreached => A::SlaBreached,
    }
}

pub fn invoice_case(case: Case) -> pb::InvoiceCase {
    pb::InvoiceCase {
        etag: case.etag(),
        id: case.id.to_string(),
        number: case.number,
        state: case_state(case.state).into(),
        account_id: case.account_id,
        contact_id: case.contact_id.unwrap_or_default(),
        invoice_number: case.invoice_number.unwrap_or_default(),
        request_source: request_source(case.request_source).into(),
        short_description: case.short_description,
        description: case.description.unwrap_or_default(),
        priority: priority(case.priority).into(),
        currency_code: case.currency_code,
        assigned_to: case.assigned_to.unwrap_or_default(),
        opened_by: case.opened_by,
        resolution_code: resolution_code(case.resolution_code).into(),
        resolution_notes: case.resolution_notes.unwrap_or_default(),
        create_time: Some(timestamp(case.create_time)),
        update_time: Some(timestamp(case.update_time)),
        submit_time: case.submit_time.map(timestamp),
        resolve_time: case.resolve_time.map(timestamp),
        close_time: case.close_time.map(timestamp),
        lines: case.lines.into_iter().map(case_line).collect(),
        assignment_group: case.assignment_group.unwrap_or_default(),
    }
}

pub fn case_line(line: Line) -> pb::CaseLine {
    pb::CaseLine {
        id: line.id.to_string(),
        number: line.number,
        state: line_state(line.state).into(),
        dispute_code: dispute_code(line.dispute_code).into(),
        invoice_line_ref: line.invoice_line_ref.unwrap_or_default(),
        invoice_number: line.invoice_number.unwrap_or_default(),
        short_description: line.short_description,
        invoiced_amount: line.invoiced_amount.to_string(),
        disputed_amount: line.disputed_amount.to_string(),
        approved_amount: line.approved_amount.map(|a| a.to_string()),
        invoiced_quantity: line.invoiced_quantity.map(|q| q.to_string()),
        disputed_quantity: line.disputed_quantity.map(|q| q.to_string()),
        resolution_code: resolution_code(line.resolution_code).into(),
        resolution_notes: line.resolution_notes.unwrap_or_default(),
        create_time: Some(timestamp(line.create_time)),
        update_time: Some(timestamp(line.update_time)),
    }
}

pub fn state_change(change: StateChange) -> pb::StateChange {
    use pb::state_change::{CaseTransition, Cause as C, LineTransition, Transition};
    let cause = |cause: Cause| match cause {
        Cause::Direct => C::Direct,
        Cause::Cascade => C::Cascade,
    };
    match change {
        StateChange::Case {
            id,
            number,
            cause: c,
            from,
            to,
        } => pb::StateChange {
            cause: cause(c).into(),
            transition: Some(Transition::CaseTransition(CaseTransition {
                id: id.to_string(),
                number,
                from_state: from.map(case_state).unwrap_or_default().into(),
                to_state: case_state(to).into(),
            })),
        },
        StateChange::Line {
            id,
            number,
            cause: c,
            from,
            to,
        } => pb::StateChange {
            cause: cause(c).into(),
            transition: Some(Transition::LineTransition(LineTransition {
                id: id.to_string(),
                number,
                from_state: from.map(line_state).unwrap_or_default().into(),
                to_state: to.map(line_state).unwrap_or_default().into(),
            })),
        },
    }
}

pub fn field_change(change: FieldChange) -> pb::FieldChange {
    let (line_id, line_number) = match change.line {
        Some(line) => (line.id.to_string(), line.number),
        None => (String::new(), String::new()),
    };
    pb::FieldChange {
        line_id,
        line_number,
        field: change.field,
        old_value: change.old.unwrap_or_default(),
        new_value: change.new.unwrap_or_default(),
    }
}

/// An event as clients see it; `cursor` is its stream position.
pub fn event(event: StoredEvent, cursor: String) -> pb::StateChangeEvent {
    pb::StateChangeEvent {
        cursor,
        case_id: event.case_id.to_string(),
        case_number: event.case_number,
        account_id: event.account_id,
        action: action(event.action).into(),
        actor: event.actor,
        occur_time: Some(timestamp(event.occur_time)),
        etag: event.etag,
        changes: event.changes.into_iter().map(state_change).collect(),
        comment: event.comment.unwrap_or_default(),
        field_changes: event.field_changes.into_iter().map(field_change).collect(),
    }
}
