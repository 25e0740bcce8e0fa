//! Rows as diesel reads and writes them, and their conversion to and from
//! the domain records.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::{
    StoreError,
    schema::{case_events, case_lines, invoice_cases},
};
use crate::domain::{
    Action, Case, CaseState, Decimal, DisputeCode, FieldChange, Line, LineState, Priority,
    RequestSource, ResolutionCode, StateChange,
};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = invoice_cases, check_for_backend(diesel::pg::Pg))]
pub struct CaseRow {
    pub id: Uuid,
    pub number: String,
    pub state: String,
    pub account_id: String,
    pub contact_id: Option<String>,
    pub invoice_number: Option<String>,
    pub request_source: String,
    pub short_description: String,
    pub description: Option<String>,
    pub priority: i16,
    pub currency_code: String,
    pub assigned_to: Option<String>,
    pub opened_by: String,
    pub resolution_code: Option<String>,
    pub resolution_notes: Option<String>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub submit_time: Option<DateTime<Utc>>,
    pub resolve_time: Option<DateTime<Utc>>,
    pub close_time: Option<DateTime<Utc>>,
    pub revision: i64,
    pub assignment_group: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = case_lines, check_for_backend(diesel::pg::Pg))]
pub struct LineRow {
    pub id: Uuid,
    pub case_id: Uuid,
    pub position: i32,
    pub number: String,
    pub state: String,
    pub dispute_code: String,
    pub invoice_line_ref: Option<String>,
    pub invoice_number: Option<String>,
    pub short_description: String,
    pub invoiced_amount: BigDecimal,
    pub disputed_amount: BigDecimal,
    pub approved_amount: Option<BigDecimal>,
    pub invoiced_quantity: Option<BigDecimal>,
    pub disputed_quantity: Option<BigDecimal>,
    pub resolution_code: Option<String>,
    pub resolution_notes: Option<String>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = case_events, check_for_backend(diesel::pg::Pg))]
pub struct EventRow {
    pub id: i64,
    /// The writing transaction (xid8, read as a number).
    #[diesel(select_expression = diesel::dsl::sql::<diesel::sql_types::BigInt>("case_events.txid::text::bigint"))]
    #[diesel(select_expression_type = diesel::expression::SqlLiteral<diesel::sql_types::BigInt>)]
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub txid: i64,
    pub case_id: Uuid,
    pub case_number: String,
    pub account_id: String,
    pub action: String,
    pub actor: String,
    pub occur_time: DateTime<Utc>,
    pub etag: String,
    pub changes: serde_json::Value,
    pub comment: Option<String>,
    pub details: Option<serde_json::Value>,
}

/// A stored event, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Where the event stands in the log.
    pub position: EventPosition,
    pub case_id: Uuid,
    pub case_number: String,
    pub account_id: String,
    pub action: Action,
    pub actor: String,
    pub occur_time: DateTime<Utc>,
    pub etag: String,
    pub changes: Vec<StateChange>,
    pub comment: Option<String>,
    /// The fields it changed other than states.
    pub field_changes: Vec<FieldChange>,
}

/// The position of an event in the log: its writing transaction, then its
/// id. Ordering by it is commit order for any one case, and a reader that
/// only reads below the oldest running transaction never skips an event
/// that commits later (see `crate::watch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventPosition {
    pub txid: i64,
    pub id: i64,
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown {what} {value:?} in the database"))
}

fn parse<T>(what: &str, value: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, StoreError> {
    parse(value).ok_or_else(|| corrupt(what, value))
}

fn parse_opt<T>(
    what: &str,
    value: Option<&str>,
    parse_fn: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, StoreError> {
    value.map(|v| parse(what, v, &parse_fn)).transpose()
}

impl CaseRow {
    /// The case with its lines (given in line order).
    pub fn into_case(self, lines: Vec<LineRow>) -> Result<Case, StoreError> {
        Ok(Case {
            id: self.id,
            number: self.number,
            state: parse("case state", &self.state, CaseState::parse)?,
            account_id: self.account_id,
            contact_id: self.contact_id,
            invoice_number: self.invoice_number,
            request_source: parse("request source", &self.request_source, RequestSource::parse)?,
            short_description: self.short_description,
            description: self.description,
            priority: Priority::from_level(self.priority.into())
                .ok_or_else(|| corrupt("priority", &self.priority.to_string()))?,
            currency_code: self.currency_code,
            assigned_to: self.assigned_to,
            opened_by: self.opened_by,
            resolution_code: parse_opt(
                "resolution code",
                self.resolution_code.as_deref(),
                ResolutionCode::parse,
            )?,
            resolution_notes: self.resolution_notes,
            create_time: self.create_time,
            update_time: self.update_time,
            submit_time: self.submit_time,
            resolve_time: self.resolve_time,
            close_time: self.close_time,
            assignment_group: self.assignment_group,
            revision: self.revision,
            lines: lines
                .into_iter()
                .map(LineRow::into_line)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl LineRow {
    pub fn into_line(self) -> Result<Line, StoreError> {
        Ok(Line {
            id: self.id,
            number: self.number,
            position: self.position,
            state: parse("line state", &self.state, LineState::parse)?,
            dispute_code: parse("dispute code", &self.dispute_code, DisputeCode::parse)?,
            invoice_line_ref: self.invoice_line_ref,
            invoice_number: self.invoice_number,
            short_description: self.short_description,
            invoiced_amount: Decimal::from_big_decimal(self.invoiced_amount),
            disputed_amount: Decimal::from_big_decimal(self.disputed_amount),
            approved_amount: self.approved_amount.map(Decimal::from_big_decimal),
            invoiced_quantity: self.invoiced_quantity.map(Decimal::from_big_decimal),
            disputed_quantity: self.disputed_quantity.map(Decimal::from_big_decimal),
            resolution_code: parse_opt(
                "resolution code",
                self.resolution_code.as_deref(),
                ResolutionCode::parse,
            )?,
            resolution_notes: self.resolution_notes,
            create_time: self.create_time,
            update_time: self.update_time,
        })
    }
}

impl EventRow {
    pub fn into_event(self) -> Result<StoredEvent, StoreError> {
        Ok(StoredEvent {
            position: EventPosition {
                txid: self.txid,
                id: self.id,
            },
            case_id: self.case_id,
            case_number: self.case_number,
            account_id: self.account_id,
            action: parse("action", &self.action, Action::parse)?,
            actor: self.actor,
            occur_time: self.occur_time,
            etag: self.etag,
            changes: super::stored::changes_from_json(self.changes)?,
            comment: self.comment,
            field_changes: super::stored::details_from_json(self.details)?,
        })
    }
}

/// Reads a row's columns by position, one after the other from a start
/// column (rows of the statements in `load.rs` carry several records side
/// by side).
pub(super) struct Columns<'r, R> {
    row: &'r R,
    index: usize,
}

impl<'r, 'a, R: diesel::row::Row<'a, diesel::pg::Pg>> Columns<'r, R> {
    pub fn new(row: &'r R, start: usize) -> Self {
        Columns { row, index: start }
    }

    /// The next column, as `T` from SQL type `ST`.
    pub fn next<ST, T>(&mut self) -> diesel::deserialize::Result<T>
    where
        T: diesel::deserialize::FromSql<ST, diesel::pg::Pg>,
    {
        use diesel::row::Field;
        let index = self.index;
        self.index += 1;
        let field = diesel::row::Row::get(self.row, index)
            .ok_or_else(|| format!("the row has no column {index}"))?;
        T::from_nullable_sql(field.value())
    }
}

impl CaseRow {
    /// The 21 columns of a case, in table order.
    pub(super) fn read<'a>(
        c: &mut Columns<'_, impl diesel::row::Row<'a, diesel::pg::Pg>>,
    ) -> diesel::deserialize::Result<Self> {
        use diesel::sql_types::{BigInt, Nullable, SmallInt, Text, Timestamptz, Uuid as SqlUuid};
        Ok(CaseRow {
            id: c.next::<SqlUuid, _>()?,
            number: c.next::<Text, _>()?,
            state: c.next::<Text, _>()?,
            account_id: c.next::<Text, _>()?,
            contact_id: c.next::<Nullable<Text>, _>()?,
            invoice_number: c.next::<Nullable<Text>, _>()?,
            request_source: c.next::<Text, _>()?,
            short_description: c.next::<Text, _>()?,
            description: c.next::<Nullable<Text>, _>()?,
            priority: c.next::<SmallInt, _>()?,
            currency_code: c.next::<Text, _>()?,
            assigned_to: c.next::<Nullable<Text>, _>()?,
            opened_by: c.next::<Text, _>()?,
            resolution_code: c.next::<Nullable<Text>, _>()?,
            resolution_notes: c.next::<Nullable<Text>, _>()?,
            create_time: c.next::<Timestamptz, _>()?,
            update_time: c.next::<Timestamptz, _>()?,
            submit_time: c.next::<Nullable<Timestamptz>, _>()?,
            resolve_time: c.next::<Nullable<Timestamptz>, _>()?,
            close_time: c.next::<Nullable<Timestamptz>, _>()?,
            revision: c.next::<BigInt, _>()?,
            assignment_group: c.next::<Nullable<Text>, _>()?,
        })
    }
}

impl LineRow {
    /// The 18 columns of a line, in table order.
    pub(super) fn read<'a>(
        c: &mut Columns<'_, impl diesel::row::Row<'a, diesel::pg::Pg>>,
    ) -> diesel::deserialize::Result<Self> {
        use diesel::sql_types::{Integer, Nullable, Numeric, Text, Timestamptz, Uuid as SqlUuid};
        Ok(LineRow {
            id: c.next::<SqlUuid, _>()?,
            case_id: c.next::<SqlUuid, _>()?,
            position: c.next::<Integer, _>()?,
            number: c.next::<Text, _>()?,
            state: c.next::<Text, _>()?,
            dispute_code: c.next::<Text, _>()?,
            invoice_line_ref: c.next::<Nullable<Text>, _>()?,
            invoice_number: c.next::<Nullable<Text>, _>()?,
            short_description: c.next::<Text, _>()?,
            invoiced_amount: c.next::<Numeric, _>()?,
            disputed_amount: c.next::<Numeric, _>()?,
            approved_amount: c.next::<Nullable<Numeric>, _>()?,
            invoiced_quantity: c.next::<Nullable<Numeric>, _>()?,
            disputed_quantity: c.next::<Nullable<Numeric>, _>()?,
            resolution_code: c.next::<Nullable<Text>, _>()?,
            resolution_notes: c.next::<Nullable<Text>, _>()?,
            create_time: c.next::<Timestamptz, _>()?,
            update_time: c.next::<Timestamptz, _>()?,
        })
    }
}
