//! The stored JSON forms: an event's `changes` and an idempotency record's
//! `response`. Written and read only here, and pinned by a golden test:
//! renaming a domain type or field must not change what is stored (rows
//! written by earlier versions must still read), so a change that would
//! fails the test instead of silently changing the format.

use serde_json::Value;

use super::StoreError;
use crate::domain::{Case, StateChange};

/// An event's `changes` column.
pub(super) fn changes_to_json(changes: &[StateChange]) -> Result<Value, StoreError> {
    serde_json::to_value(changes).map_err(|e| StoreError::Corrupt(format!("event changes: {e}")))
}

/// Reads an event's `changes` column.
pub(super) fn changes_from_json(value: Value) -> Result<Vec<StateChange>, StoreError> {
    serde_json::from_value(value).map_err(|e| StoreError::Corrupt(format!("event changes: {e}")))
}

/// An idempotency record's `response` column: the case as answered.
pub(super) fn response_to_json(case: &Case) -> Result<Value, StoreError> {
    serde_json::to_value(case).map_err(|e| StoreError::Corrupt(format!("response: {e}")))
}

/// Reads an idempotency record's `response` column.
pub(super) fn response_from_json(value: Value) -> Result<Case, StoreError> {
    serde_json::from_value(value).map_err(|e| StoreError::Corrupt(format!("stored response: {e}")))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::domain::{
        CaseState, Cause, Decimal, DisputeCode, Line, LineState, Priority, RequestSource,
        ResolutionCode,
    };

    fn time(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn sample_case() -> Case {
        Case {
            id: Uuid::parse_str("01936f3e-0000-7000-8000-000000000001").unwrap(),
            number: "INVCS0001001".into(),
            state: CaseState::Resolved,
            account_id: "ACME".into(),
            contact_id: Some("C-7".into()),
            invoice_number: Some("INV-9".into()),
            request_source: RequestSource::SingleInvoice,
            short_description: "Overcharged".into(),
            description: None,
            priority: Priority::High,
            currency_code: "EUR".into(),
            assigned_to: Some("agent-1".into()),
            opened_by: "req-1".into(),
            resolution_code: Some(ResolutionCode::SolvedCredit),
            resolution_notes: Some("half".into()),
            create_time: time("2026-12-01T08:00:00.123456Z"),
            update_time: time("2026-12-01T09:00:00Z"),
            submit_time: Some(time("2026-12-01T08:10:00Z")),
            resolve_time: Some(time("2026-12-01T09:00:00Z")),
            close_time: None,
            revision: 7,
            lines: vec![Line {
                id: Uuid::parse_str("01936f3e-0000-7000-8000-000000000002").unwrap(),
                number: "INVCSL0001001".into(),
                position: 1,
                state: LineState::ResolvedAccepted,
                dispute_code: DisputeCode::PricingDiscrepancy,
                invoice_line_ref: Some("L1".into()),
                invoice_number: None,
                short_description: "Widgets".into(),
                invoiced_amount: Decimal::parse("100.00").unwrap(),
                disputed_amount: Decimal::parse("40.5").unwrap(),
                approved_amount: Some(Decimal::parse("20.25").unwrap()),
                invoiced_quantity: Some(Decimal::parse("10").unwrap()),
                disputed_quantity: None,
                resolution_code: Some(ResolutionCode::SolvedSettlement),
                resolution_notes: None,
                create_time: time("2026-12-01T08:00:00.123456Z"),
                update_time: time("2026-12-01T09:00:00Z"),
            }],
        }
    }

    fn sample_changes() -> Vec<StateChange> {
        vec![
            StateChange::Line {
                id: Uuid::parse_str("01936f3e-0000-7000-8000-000000000002").unwrap(),
                number: "INVCSL0001001".into(),
                cause: Cause::Direct,
                from: Some(LineState::WorkInProgress),
                to: Some(LineState::ResolvedAccepted),
            },
            StateChange::Case {
                id: Uuid::parse_str("01936f3e-0000-7000-8000-000000000001").unwrap(),
                number: "INVCS0001001".into(),
                cause: Cause::Cascade,
                from: Some(CaseState::WorkInProgress),
                to: CaseState::Resolved,
            },
        ]
    }

    /// The stored form of the sample changes, as every version so far has
    /// written it.
    const GOLDEN_CHANGES: &str = r#"[
    {
        "entity": "LINE",
        "id": "01936f3e-0000-7000-8000-000000000002",
        "number": "INVCSL0001001",
        "cause": "DIRECT",
        "from": "WORK_IN_PROGRESS",
        "to": "RESOLVED_ACCEPTED"
    },
    {
        "entity": "CASE",
        "id": "01936f3e-0000-7000-8000-000000000001",
        "number": "INVCS0001001",
        "cause": "CASCADE",
        "from": "WORK_IN_PROGRESS",
        "to": "RESOLVED"
    }
]"#;

    /// The stored form of the sample case.
    const GOLDEN_RESPONSE: &str = r#"{
    "id": "01936f3e-0000-7000-8000-000000000001",
    "number": "INVCS0001001",
    "state": "RESOLVED",
    "account_id": "ACME",
    "contact_id": "C-7",
    "invoice_number": "INV-9",
    "request_source": "SINGLE_INVOICE",
    "short_description": "Overcharged",
    "description": null,
    "priority": "High",
    "currency_code": "EUR",
    "assigned_to": "agent-1",
    "opened_by": "req-1",
    "resolution_code": "SOLVED_CREDIT",
    "resolution_notes": "half",
    "create_time": "2026-12-01T08:00:00.123456Z",
    "update_time": "2026-12-01T09:00:00Z",
    "submit_time": "2026-12-01T08:10:00Z",
    "resolve_time": "2026-12-01T09:00:00Z",
    "close_time": null,
    "revision": 7,
    "lines": [
        {
            "id": "01936f3e-0000-7000-8000-000000000002",
            "number": "INVCSL0001001",
            "position": 1,
            "state": "RESOLVED_ACCEPTED",
            "dispute_code": "PRICING_DISCREPANCY",
            "invoice_line_ref": "L1",
            "invoice_number": null,
            "short_description": "Widgets",
            "invoiced_amount": "100.00",
            "disputed_amount": "40.5",
            "approved_amount": "20.25",
            "invoiced_quantity": "10",
            "disputed_quantity": null,
            "resolution_code": "SOLVED_SETTLEMENT",
            "resolution_notes": null,
            "create_time": "2026-12-01T08:00:00.123456Z",
            "update_time": "2026-12-01T09:00:00Z"
        }
    ]
}"#;

    #[test]
    fn the_stored_forms_are_unchanged() {
        let golden: Value = serde_json::from_str(GOLDEN_CHANGES).unwrap();
        assert_eq!(changes_to_json(&sample_changes()).unwrap(), golden);
        assert_eq!(changes_from_json(golden).unwrap(), sample_changes());

        let golden: Value = serde_json::from_str(GOLDEN_RESPONSE).unwrap();
        assert_eq!(response_to_json(&sample_case()).unwrap(), golden);
        assert_eq!(response_from_json(golden).unwrap(), sample_case());
    }
}
