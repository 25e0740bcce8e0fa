//! The domain: records, states, actions and the rules that decide them.
//!
//! Pure: no gRPC, no database, no async. The API layer converts requests
//! into [`machine::Command`]s, the store loads a [`case::Case`], and
//! [`machine::decide`] alone says what is allowed and what changes.

pub mod case;
pub mod diagram;
pub mod event;
pub mod invariants;
pub mod machine;
pub mod state;
pub mod values;

pub use case::{
    Case, DisputeCode, Line, LineIdentity, LineRef, NewCase, NewLine, Priority, RequestSource,
    ResolutionCode,
};
pub use event::{Action, Cause, ChangedLine, FieldChange, StateChange};
pub use machine::{CaseField, LineField, NotEditable};
pub use machine::{
    CaseIdentity, Command, Context, Decision, DomainError, LineOutcome, LineResolution, Outcome,
    ProposeSolution, RefusedLine, Violation,
};
pub use state::{CaseState, LineState};
pub use values::Decimal;

#[cfg(test)]
mod tests;
