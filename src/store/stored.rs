//! The stored forms of what the database keeps as documents: an event's
//! `changes` (JSON) and an idempotency record's reply.
//!
//! Storage has types of its own here, named by the version of the form they
//! read and write, and converted to and from the domain's by hand: the
//! domain has no serde derives, so renaming a domain type, field or variant
//! cannot change what is stored, and rows written by earlier versions must
//! still read. A golden test pins each form.
//!
//! * `changes`, version 1: a JSON array of `{"entity": "CASE" | "LINE",
//!   "id", "number", "cause": "DIRECT" | "CASCADE", "from", "to"}`, the
//!   states by their database names (`CaseState::as_str`). A later version
//!   would be an object `{"version": n, …}`, which version 1 (an array)
//!   cannot be mistaken for.
//! * `details`, version 1: NULL when an event has none, else a JSON object
//!   `{"fields": [{"line": {"id", "number"} | null, "field", "old", "new"}]}`:
//!   the fields an action changed besides states. Keys are added only with
//!   a default, so that every row written before reads as it was.
//! * replies, version 2 (column `reply`): the bytes of the response message
//!   the first call sent, exactly. Version 1 (column `response`, written
//!   before replies were bytes) is the case as JSON; it is still read, for
//!   records written before the upgrade, until retention prunes them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{
    StoreError,
    event_log::{Shown, StreamPosition},
    rows::EventPosition,
};
use crate::domain::{
    Case, CaseState, Cause, ChangedLine, Decimal, DisputeCode, FieldChange, Line, LineState,
    Priority, RequestSource, ResolutionCode, StateChange,
};

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("stored {what}: {error}"))
}

/// A state name as stored.
fn named<T>(what: &str, name: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, StoreError> {
    parse(name).ok_or_else(|| corrupt(what, format!("unknown value {name:?}")))
}

fn named_opt<T>(
    what: &str,
    name: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, StoreError> {
    name.map(|name| named(what, name, parse)).transpose()
}

// ---------------------------------------------------------------------------
// Event changes, version 1.

/// One change of `changes` version 1.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "entity", deny_unknown_fields)]
enum ChangeV1 {
    #[serde(rename = "CASE")]
    Case {
        id: Uuid,
        number: String,
        cause: CauseV1,
        from: Option<String>,
        to: String,
    },
    #[serde(rename = "LINE")]
    Line {
        id: Uuid,
        number: String,
        cause: CauseV1,
        from: Option<String>,
        to: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum CauseV1 {
    #[serde(rename = "DIRECT")]
    Direct,
    #[serde(rename = "CASCADE")]
    Cascade,
}

impl From<Cause> for CauseV1 {
    fn from(cause: Cause) -> Self {
        match cause {
            Cause::Direct => CauseV1::Direct,
            Cause::Cascade => CauseV1::Cascade,
        }
    }
}

impl From<CauseV1> for Cause {
    fn from(cause: CauseV1) -> Self {
        match cause {
            CauseV1::Direct => Cause::Direct,
            CauseV1::Cascade => Cause::Cascade,
        }
    }
}

impl ChangeV1 {
    fn of(change: &StateChange) -> Self {
        match change {
            StateChange::Case {
                id,
                number,
                cause,
                from,
                to,
            } => ChangeV1::Case {
                id: *id,
                number: number.clone(),
                cause: (*cause).into(),
                from: from.map(|s| s.as_str().to_owned()),
                to: to.as_str().to_owned(),
            },
            StateChange::Line {
                id,
                number,
                cause,
                from,
                to,
            } => ChangeV1::Line {
                id: *id,
                number: number.clone(),
                cause: (*cause).into(),
                from: from.map(|s| s.as_str().to_owned()),
                to: to.map(|s| s.as_str().to_owned()),
            },
        }
    }

    fn into_domain(self) -> Result<StateChange, StoreError> {
        const CASE: &str = "event change case state";
        const LINE: &str = "event change line state";
        Ok(match self {
            ChangeV1::Case {
                id,
                number,
                cause,
                from,
                to,
            } => StateChange::Case {
                id,
                number,
                cause: cause.into(),
                from: named_opt(CASE, from.as_deref(), CaseState::parse)?,
                to: named(CASE, &to, CaseState::parse)?,
            },
            ChangeV1::Line {
                id,
                number,
                cause,
                from,
                to,
            } => StateChange::Line {
                id,
                number,
                cause: cause.into(),
                from: named_opt(LINE, from.as_deref(), LineState::parse)?,
                to: named_opt(LINE, to.as_deref(), LineState::parse)?,
            },
        })
    }
}

/// An event's `changes` column, in the current version.
pub(super) fn changes_to_json(changes: &[StateChange]) -> Result<Value, StoreError> {
    let stored: Vec<ChangeV1> = changes.iter().map(ChangeV1::of).collect();
    serde_json::to_value(stored).map_err(|e| corrupt("event changes", e))
}

/// Reads an event's `changes` column, of any version.
pub(super) fn changes_from_json(value: Value) -> Result<Vec<StateChange>, StoreError> {
    match value {
        Value::Array(_) => {
            let stored: Vec<ChangeV1> =
                serde_json::from_value(value).map_err(|e| corrupt("event changes", e))?;
            stored.into_iter().map(ChangeV1::into_domain).collect()
        }
        other => Err(corrupt(
            "event changes",
            format!(
                "a {} is not a version this service reads",
                json_kind(&other)
            ),
        )),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

// ---------------------------------------------------------------------------
// Event details, version 1.

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetailsV1 {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    fields: Vec<FieldChangeV1>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldChangeV1 {
    line: Option<LineV1Ref>,
    field: String,
    old: Option<String>,
    new: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineV1Ref {
    id: Uuid,
    number: String,
}

impl DetailsV1 {
    fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// An event's `details` column: `None` when the event has no details.
pub(super) fn details_to_json(fields: &[FieldChange]) -> Result<Option<Value>, StoreError> {
    let details = DetailsV1 {
        fields: fields
            .iter()
            .map(|change| FieldChangeV1 {
                line: change.line.as_ref().map(|line| LineV1Ref {
                    id: line.id,
                    number: line.number.clone(),
                }),
                field: change.field.clone(),
                old: change.old.clone(),
                new: change.new.clone(),
            })
            .collect(),
    };
    if details.is_empty() {
        return Ok(None);
    }
    serde_json::to_value(details)
        .map(Some)
        .map_err(|e| corrupt("event details", e))
}

/// Reads an event's `details` column.
pub(super) fn details_from_json(value: Option<Value>) -> Result<Vec<FieldChange>, StoreError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let details: DetailsV1 =
        serde_json::from_value(value).map_err(|e| corrupt("event details", e))?;
    Ok(details
        .fields
        .into_iter()
        .map(|change| FieldChange {
            line: change.line.map(|line| ChangedLine {
                id: line.id,
                number: line.number,
            }),
            field: change.field,
            old: change.old,
            new: change.new,
        })
        .collect())
}

// ---------------------------------------------------------------------------
// Idempotency replies.

/// The first response to a request id, as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredResponse {
    /// Version 2: the response message's bytes, as they were sent.
    Encoded(Vec<u8>),
    /// Version 1: the case the response was made of (records written
    /// before replies were stored as bytes).
    Case(Box<Case>),
}

/// Reads a reply: version 2 (`reply`, bytes) when present, else version 1
/// (`response`, JSON).
pub(super) fn response_from_columns(
    reply: Option<Vec<u8>>,
    response: Option<Value>,
) -> Result<StoredResponse, StoreError> {
    match (reply, response) {
        (Some(bytes), _) => Ok(StoredResponse::Encoded(bytes)),
        (None, Some(json)) => {
            response_v1_from_json(json).map(|case| StoredResponse::Case(case.into()))
        }
        (None, None) => Err(corrupt(
            "reply",
            "neither the reply nor the response is stored",
        )),
    }
}

/// Version 1 of a reply: the case, with its lines.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseV1 {
    id: Uuid,
    number: String,
    state: String,
    account_id: String,
    contact_id: Option<String>,
    invoice_number: Option<String>,
    request_source: String,
    short_description: String,
    description: Option<String>,
    /// `Critical`, `High`, `Moderate` or `Low` (version 1 wrote the
    /// variant names).
    priority: String,
    currency_code: String,
    assigned_to: Option<String>,
    opened_by: String,
    resolution_code: Option<String>,
    resolution_notes: Option<String>,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
    submit_time: Option<DateTime<Utc>>,
    resolve_time: Option<DateTime<Utc>>,
    close_time: Option<DateTime<Utc>>,
    revision: i64,
    lines: Vec<LineV1>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineV1 {
    id: Uuid,
    number: String,
    position: i32,
    state: String,
    dispute_code: String,
    invoice_line_ref: Option<String>,
    invoice_number: Option<String>,
    short_description: String,
    invoiced_amount: String,
    disputed_amount: String,
    approved_amount: Option<String>,
    invoiced_quantity: Option<String>,
    disputed_quantity: Option<String>,
    resolution_code: Option<String>,
    resolution_notes: Option<String>,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
}

fn priority_v1(name: &str) -> Option<Priority> {
    match name {
        "Critical" => Some(Priority::Critical),
        "High" => Some(Priority::High),
        "Moderate" => Some(Priority::Moderate),
        "Low" => Some(Priority::Low),
        _ => None,
    }
}

fn decimal_v1(what: &str, text: &str) -> Result<Decimal, StoreError> {
    Decimal::parse(text).map_err(|e| corrupt(what, e))
}

fn response_v1_from_json(json: Value) -> Result<Case, StoreError> {
    const WHAT: &str = "response (version 1)";
    let case: CaseV1 = serde_json::from_value(json).map_err(|e| corrupt(WHAT, e))?;
    let lines = case
        .lines
        .into_iter()
        .map(|line| {
            Ok(Line {
                id: line.id,
                number: line.number,
                position: line.position,
                state: named(WHAT, &line.state, LineState::parse)?,
                dispute_code: named(WHAT, &line.dispute_code, DisputeCode::parse)?,
                invoice_line_ref: line.invoice_line_ref,
                invoice_number: line.invoice_number,
                short_description: line.short_description,
                invoiced_amount: decimal_v1(WHAT, &line.invoiced_amount)?,
                disputed_amount: decimal_v1(WHAT, &line.disputed_amount)?,
                approved_amount: line
                    .approved_amount
                    .map(|a| decimal_v1(WHAT, &a))
                    .transpose()?,
                invoiced_quantity: line
                    .invoiced_quantity
                    .map(|q| decimal_v1(WHAT, &q))
                    .transpose()?,
                disputed_quantity: line
                    .disputed_quantity
                    .map(|q| decimal_v1(WHAT, &q))
                    .transpose()?,
                resolution_code: named_opt(
                    WHAT,
                    line.resolution_code.as_deref(),
                    ResolutionCode::parse,
                )?,
                resolution_notes: line.resolution_notes,
                create_time: line.create_time,
                update_time: line.update_time,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Case {
        id: case.id,
        number: case.number,
        state: named(WHAT, &case.state, CaseState::parse)?,
        account_id: case.account_id,
        contact_id: case.contact_id,
        invoice_number: case.invoice_number,
        request_source: named(WHAT, &case.request_source, RequestSource::parse)?,
        short_description: case.short_description,
        description: case.description,
        priority: named(WHAT, &case.priority, priority_v1)?,
        currency_code: case.currency_code,
        assigned_to: case.assigned_to,
        opened_by: case.opened_by,
        resolution_code: named_opt(WHAT, case.resolution_code.as_deref(), ResolutionCode::parse)?,
        resolution_notes: case.resolution_notes,
        create_time: case.create_time,
        update_time: case.update_time,
        submit_time: case.submit_time,
        resolve_time: case.resolve_time,
        close_time: case.close_time,
        // Version 1 was written before cases had assignment groups.
        assignment_group: None,
        revision: case.revision,
        lines,
    })
}

// ---------------------------------------------------------------------------
// Subscription positions, version 1.

/// A subscription's start as the columns of `subscriptions` hold it
/// (version 1): the position `(start_txid, start_id)` and, for a start
/// after a snapshot, that snapshot's `xmax` and the transactions it saw in
/// progress (ascending, none before the start). The acknowledged position
/// is `(position_txid, position_id)`, read with the start's snapshot part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StartColumnsV1 {
    pub start_txid: i64,
    pub start_id: i64,
    pub snapshot_xmax: Option<i64>,
    pub snapshot_in_progress: Vec<i64>,
}

impl StartColumnsV1 {
    /// The columns of a subscription starting at `start`.
    pub fn of(start: &StreamPosition) -> Self {
        StartColumnsV1 {
            start_txid: start.after.txid,
            start_id: start.after.id,
            snapshot_xmax: start.shown.as_ref().map(|shown| shown.xmax),
            snapshot_in_progress: start
                .shown
                .as_ref()
                .map(|shown| shown.in_progress.clone())
                .unwrap_or_default(),
        }
    }

    /// The stream position of a subscription whose subscriber acknowledged
    /// `(position_txid, position_id)`: the start's snapshot part, advanced
    /// there.
    pub fn position(
        &self,
        position_txid: i64,
        position_id: i64,
    ) -> Result<StreamPosition, StoreError> {
        const WHAT: &str = "subscription position";
        let start = EventPosition {
            txid: self.start_txid,
            id: self.start_id,
        };
        let acknowledged = EventPosition {
            txid: position_txid,
            id: position_id,
        };
        if acknowledged < start {
            return Err(corrupt(WHAT, "acknowledged before its start"));
        }
        let shown = match self.snapshot_xmax {
            None if self.snapshot_in_progress.is_empty() => None,
            None => return Err(corrupt(WHAT, "transactions in progress without a snapshot")),
            Some(xmax) => {
                let ordered = self.snapshot_in_progress.windows(2).all(|w| w[0] < w[1]);
                let inside = self
                    .snapshot_in_progress
                    .iter()
                    .all(|&txid| txid >= self.start_txid && txid < xmax);
                if xmax <= self.start_txid || !ordered || !inside {
                    return Err(corrupt(WHAT, "a snapshot that does not follow its start"));
                }
                Some(Shown {
                    xmax,
                    in_progress: self.snapshot_in_progress.clone(),
                })
            }
        };
        let mut position = StreamPosition {
            after: start,
            shown,
        };
        position.advance(acknowledged);
        Ok(position)
    }
}

#[cfg(test)]
mod subscription_position_tests {
    use super::*;

    /// A start after a snapshot (xmin 100, xmax 110, 104 and 107 in
    /// progress), as its columns hold it.
    fn golden() -> StartColumnsV1 {
        StartColumnsV1 {
            start_txid: 100,
            start_id: 0,
            snapshot_xmax: Some(110),
            snapshot_in_progress: vec![104, 107],
        }
    }

    #[test]
    fn subscription_starts_are_written_and_read_in_version_1() {
        let start = StreamPosition::after_snapshot(100, 110, vec![107, 104]);
        assert_eq!(StartColumnsV1::of(&start), golden());
        assert_eq!(golden().position(100, 0).unwrap(), start);
        // Acknowledged inside the snapshot: its part after the position.
        assert_eq!(
            golden().position(105, 3).unwrap(),
            StreamPosition {
                after: EventPosition { txid: 105, id: 3 },
                shown: Some(Shown {
                    xmax: 110,
                    in_progress: vec![107],
                }),
            }
        );
        // Past the snapshot: a plain position.
        assert_eq!(
            golden().position(110, 0).unwrap(),
            StreamPosition::at(EventPosition { txid: 110, id: 0 })
        );
        let plain = StreamPosition::at(EventPosition { txid: 7, id: 9 });
        let columns = StartColumnsV1::of(&plain);
        assert_eq!(
            columns,
            StartColumnsV1 {
                start_txid: 7,
                start_id: 9,
                snapshot_xmax: None,
                snapshot_in_progress: Vec::new(),
            }
        );
        assert_eq!(columns.position(7, 9).unwrap(), plain);
    }

    #[test]
    fn subscription_starts_that_do_not_fit_are_corrupt() {
        let bad = [
            StartColumnsV1 {
                snapshot_xmax: None,
                ..golden()
            },
            StartColumnsV1 {
                snapshot_xmax: Some(100),
                snapshot_in_progress: Vec::new(),
                ..golden()
            },
            StartColumnsV1 {
                snapshot_in_progress: vec![107, 104],
                ..golden()
            },
            StartColumnsV1 {
                snapshot_in_progress: vec![99],
                ..golden()
            },
        ];
        for columns in bad {
            assert!(
                matches!(columns.position(100, 0), Err(StoreError::Corrupt(_))),
                "{columns:?}"
            );
        }
        assert!(matches!(
            golden().position(99, 5),
            Err(StoreError::Corrupt(_))
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assignment_group: None,
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
            StateChange::Line {
                id: Uuid::parse_str("01936f3e-0000-7000-8000-000000000003").unwrap(),
                number: "INVCSL0001002".into(),
                cause: Cause::Direct,
                from: None,
                to: Some(LineState::Draft),
            },
        ]
    }

    /// Version 1 of the sample changes, as every version so far has
    /// written it.
    const GOLDEN_CHANGES_V1: &str = r#"[
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
    },
    {
        "entity": "LINE",
        "id": "01936f3e-0000-7000-8000-000000000003",
        "number": "INVCSL0001002",
        "cause": "DIRECT",
        "from": null,
        "to": "DRAFT"
    }
]"#;

    /// Version 1 of a reply: the sample case as the service wrote it
    /// before replies were stored as bytes.
    const GOLDEN_RESPONSE_V1: &str = r#"{
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
    fn changes_are_written_and_read_in_version_1() {
        let golden: Value = serde_json::from_str(GOLDEN_CHANGES_V1).unwrap();
        assert_eq!(changes_to_json(&sample_changes()).unwrap(), golden);
        assert_eq!(changes_from_json(golden).unwrap(), sample_changes());
    }

    #[test]
    fn changes_of_an_unknown_version_or_shape_are_corrupt_not_guessed() {
        for bad in [
            serde_json::json!({"version": 2, "changes": []}),
            serde_json::json!([{"entity": "CASE", "id": Uuid::nil(), "number": "INVCS0000001",
                                "cause": "DIRECT", "from": null, "to": "OPEN"}]),
            serde_json::json!([{"entity": "CASE", "id": Uuid::nil(), "number": "INVCS0000001",
                                "cause": "DIRECT", "from": null, "to": "NEW", "extra": 1}]),
            serde_json::json!([{"entity": "BOTH"}]),
        ] {
            assert!(
                matches!(changes_from_json(bad.clone()), Err(StoreError::Corrupt(_))),
                "{bad}"
            );
        }
    }

    fn sample_field_changes() -> Vec<FieldChange> {
        vec![
            FieldChange {
                line: None,
                field: "priority".into(),
                old: Some("LOW".into()),
                new: Some("HIGH".into()),
            },
            FieldChange {
                line: Some(ChangedLine {
                    id: Uuid::parse_str("01936f3e-0000-7000-8000-000000000002").unwrap(),
                    number: "INVCSL0001001".into(),
                }),
                field: "disputed_quantity".into(),
                old: Some("2".into()),
                new: None,
            },
        ]
    }

    /// Version 1 of the sample details.
    const GOLDEN_DETAILS_V1: &str = r#"{
    "fields": [
        {"line": null, "field": "priority", "old": "LOW", "new": "HIGH"},
        {
            "line": {"id": "01936f3e-0000-7000-8000-000000000002", "number": "INVCSL0001001"},
            "field": "disputed_quantity",
            "old": "2",
            "new": null
        }
    ]
}"#;

    #[test]
    fn details_are_written_and_read_in_version_1() {
        let golden: Value = serde_json::from_str(GOLDEN_DETAILS_V1).unwrap();
        assert_eq!(
            details_to_json(&sample_field_changes()).unwrap(),
            Some(golden.clone())
        );
        assert_eq!(
            details_from_json(Some(golden)).unwrap(),
            sample_field_changes()
        );
        // An event without details stores none, and reads as none.
        assert_eq!(details_to_json(&[]).unwrap(), None);
        assert_eq!(details_from_json(None).unwrap(), Vec::new());
        assert!(matches!(
            details_from_json(Some(serde_json::json!({"fields": [], "unknown": 1}))),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn replies_of_version_1_still_read() {
        let golden: Value = serde_json::from_str(GOLDEN_RESPONSE_V1).unwrap();
        assert_eq!(
            response_from_columns(None, Some(golden)).unwrap(),
            StoredResponse::Case(Box::new(sample_case()))
        );
    }

    #[test]
    fn replies_of_version_2_are_the_bytes_as_sent() {
        let bytes = vec![10, 3, b'a', b'b', b'c'];
        // The bytes win over a version 1 form, and are returned untouched.
        assert_eq!(
            response_from_columns(Some(bytes.clone()), Some(Value::Null)).unwrap(),
            StoredResponse::Encoded(bytes)
        );
        assert!(matches!(
            response_from_columns(None, None),
            Err(StoreError::Corrupt(_))
        ));
    }
}
