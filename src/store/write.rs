//! Writing an action: one statement writes the case, its lines, the event
//! and the idempotency record, and commits on its own (or within the
//! call's deadline transaction).
//!
//! Concurrency is optimistic: the case was read without a lock, and the
//! statement changes it only if its revision is still the one read (the
//! caller reads again and decides again when it is not). Before the case row
//! is written — before the transaction has an id — the statement takes the
//! case's advisory lock (the one `lock_for_event` takes) and holds it until
//! commit: two actions on one case then get transaction ids in the order
//! they commit, which is what makes the event log's (txid, id) order commit
//! order for any one case (see `event_log.rs`).
//!
//! The statement holds only what the decision needs — the columns that
//! changed, the kinds of line writes it makes — because PostgreSQL sets up
//! every part of a plan on every execution. Each shape has a fixed text
//! and is prepared once per connection.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::{
    QueryResult, QueryableByName,
    pg::Pg,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    sql_types::{
        Array, BigInt, Bytea, Integer, Jsonb, Nullable, Numeric, SmallInt, Text, Timestamptz,
        Uuid as SqlUuid,
    },
};
use uuid::Uuid;

use super::{StoreError, idempotency::Idempotency, stored};
use crate::domain::{Case, Decision, Line};

/// What a write statement reports.
#[derive(QueryableByName)]
pub(super) struct Written {
    /// 1 when the case was written; 0 when its revision had moved on.
    #[diesel(sql_type = BigInt)]
    pub written: i64,
}

/// The event and the idempotency record of a decision.
pub(super) struct Record<'a> {
    pub actor: &'a str,
    pub comment: Option<&'a str>,
    pub idempotency: Option<&'a Idempotency>,
    /// Notify other replicas' watch readers.
    pub notify: bool,
}

/// The statement that writes a decision: a new case (`before` is `None`)
/// or an action on the case as it was read.
pub(super) struct WriteDecision<'a> {
    case: &'a Case,
    before: Option<&'a Case>,
    action: &'static str,
    record: &'a Record<'a>,
    etag: String,
    resolution_code: Option<&'static str>,
    removed: Vec<Uuid>,
    added: Option<AddedLines<'a>>,
    changed: Option<ChangedLines<'a>>,
    changes: serde_json::Value,
    details: Option<serde_json::Value>,
    response: Option<Vec<u8>>,
}

impl<'a> WriteDecision<'a> {
    /// The statement of `decision`, taken on `before` (`None`: a create).
    pub fn new(
        decision: &'a Decision,
        before: Option<&'a Case>,
        record: &'a Record<'a>,
    ) -> Result<Self, StoreError> {
        let case = &decision.case;
        let changes = stored::changes_to_json(&decision.changes)?;
        let details = stored::details_to_json(&decision.field_changes)?;
        let response = record.idempotency.map(|key| (key.encode_response)(case));
        let added: Vec<&Line> = case
            .lines
            .iter()
            .filter(|line| before.is_none() || decision.added_lines.contains(&line.id))
            .collect();
        let changed: Vec<(&Line, &Line)> = case
            .lines
            .iter()
            .filter(|line| decision.updated_lines.contains(&line.id))
            .filter_map(|line| {
                let old = before?.lines.iter().find(|old| old.id == line.id)?;
                Some((old, line))
            })
            .collect();
        Ok(WriteDecision {
            case,
            before,
            action: decision.action.as_str(),
            record,
            etag: case.etag(),
            resolution_code: case.resolution_code.map(|c| c.as_str()),
            removed: decision.removed_lines.clone(),
            added: (!added.is_empty()).then(|| AddedLines::new(&added)),
            changed: (!changed.is_empty()).then(|| ChangedLines::new(&changed)),
            changes,
            details,
            response,
        })
    }
}

impl QueryId for WriteDecision<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for WriteDecision<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

/// Priority levels by index, as bind values that live long enough.
const PRIORITY_LEVELS: [i16; 5] = [0, 1, 2, 3, 4];

/// Pushes `, column = $value` for a case column that changed.
macro_rules! set_if_changed {
    ($out:ident, $before:ident, $case:ident, $column:literal, $field:ident, $sql:ty) => {
        if $before.$field != $case.$field {
            $out.push_sql(concat!(", ", $column, " = "));
            $out.push_bind_param::<$sql, _>(&$case.$field)?;
        }
    };
}

impl QueryFragment<Pg> for WriteDecision<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let case = self.case;
        match self.before {
            None => {
                out.push_sql(
                    "WITH c AS (INSERT INTO invoice_cases (id, number, state, account_id, \
                     contact_id, invoice_number, request_source, short_description, \
                     description, priority, currency_code, opened_by, create_time, \
                     update_time, revision) VALUES (",
                );
                out.push_bind_param::<SqlUuid, _>(&case.id)?;
                out.push_sql(", ");
                out.push_bind_param::<Text, _>(&case.number)?;
                out.push_sql(", ");
                out.push_bind_param::<Text, _>(case.state.as_str())?;
                out.push_sql(", ");
                out.push_bind_param::<Text, _>(&case.account_id)?;
                out.push_sql(", ");
                out.push_bind_param::<Nullable<Text>, _>(&case.contact_id)?;
                out.push_sql(", ");
                out.push_bind_param::<Nullable<Text>, _>(&case.invoice_number)?;
                out.push_sql(", ");
                out.push_bind_param::<Text, _>(case.request_source.as_str())?;
                out.push_sql(", ");
                out.push_bind_param::<Text, _>(&case.short_description)?;
                out.push_sql(", ");
                out.push_bind_param::<Nullable<Text>, _>(&case.description)?;
                out.push_sql(", ");
                out.push_bind_param::<SmallInt, _>(
                    &PRIORITY_LEVELS[case.priority.level() as usize],
                )?;
                out.push_sql(", ");
                out.push_bind_param::<Text, _>(&case.currency_code)?;
                out.push_sql(", ");
                out.push_bind_param::<Text, _>(&case.opened_by)?;
                out.push_sql(", ");
                out.push_bind_param::<Timestamptz, _>(&case.create_time)?;
                out.push_sql(", ");
                out.push_bind_param::<Timestamptz, _>(&case.update_time)?;
                out.push_sql(", ");
                out.push_bind_param::<BigInt, _>(&case.revision)?;
                out.push_sql(") RETURNING id)");
            }
            Some(before) => {
                // The lock before the row is written: see the module doc.
                out.push_sql(
                    "WITH case_lock AS MATERIALIZED (SELECT \
                     pg_advisory_xact_lock(470441472, hashtext(",
                );
                out.push_bind_param::<SqlUuid, _>(&case.id)?;
                out.push_sql("::text)) AS taken), c AS (UPDATE invoice_cases SET update_time = ");
                out.push_bind_param::<Timestamptz, _>(&case.update_time)?;
                out.push_sql(", revision = ");
                out.push_bind_param::<BigInt, _>(&case.revision)?;
                if before.state != case.state {
                    out.push_sql(", state = ");
                    out.push_bind_param::<Text, _>(case.state.as_str())?;
                }
                if before.priority != case.priority {
                    out.push_sql(", priority = ");
                    out.push_bind_param::<SmallInt, _>(
                        &PRIORITY_LEVELS[case.priority.level() as usize],
                    )?;
                }
                if before.request_source != case.request_source {
                    out.push_sql(", request_source = ");
                    out.push_bind_param::<Text, _>(case.request_source.as_str())?;
                }
                set_if_changed!(out, before, case, "currency_code", currency_code, Text);
                if before.resolution_code != case.resolution_code {
                    out.push_sql(", resolution_code = ");
                    out.push_bind_param::<Nullable<Text>, _>(&self.resolution_code)?;
                }
                set_if_changed!(out, before, case, "contact_id", contact_id, Nullable<Text>);
                set_if_changed!(
                    out,
                    before,
                    case,
                    "invoice_number",
                    invoice_number,
                    Nullable<Text>
                );
                set_if_changed!(
                    out,
                    before,
                    case,
                    "short_description",
                    short_description,
                    Text
                );
                set_if_changed!(
                    out,
                    before,
                    case,
                    "description",
                    description,
                    Nullable<Text>
                );
                set_if_changed!(
                    out,
                    before,
                    case,
                    "assigned_to",
                    assigned_to,
                    Nullable<Text>
                );
                set_if_changed!(
                    out,
                    before,
                    case,
                    "resolution_notes",
                    resolution_notes,
                    Nullable<Text>
                );
                set_if_changed!(
                    out,
                    before,
                    case,
                    "submit_time",
                    submit_time,
                    Nullable<Timestamptz>
                );
                set_if_changed!(
                    out,
                    before,
                    case,
                    "resolve_time",
                    resolve_time,
                    Nullable<Timestamptz>
                );
                set_if_changed!(
                    out,
                    before,
                    case,
                    "close_time",
                    close_time,
                    Nullable<Timestamptz>
                );
                set_if_changed!(
                    out,
                    before,
                    case,
                    "assignment_group",
                    assignment_group,
                    Nullable<Text>
                );
                out.push_sql(" FROM case_lock WHERE invoice_cases.id = ");
                out.push_bind_param::<SqlUuid, _>(&case.id)?;
                out.push_sql(" AND invoice_cases.revision = ");
                out.push_bind_param::<BigInt, _>(&before.revision)?;
                out.push_sql(" RETURNING invoice_cases.id)");
            }
        }
        if !self.removed.is_empty() {
            out.push_sql(
                ", removed AS (DELETE FROM case_lines l USING c \
                 WHERE l.case_id = c.id AND l.id = ANY(",
            );
            out.push_bind_param::<Array<SqlUuid>, _>(&self.removed)?;
            out.push_sql("))");
        }
        if let Some(added) = &self.added {
            added.walk(&mut out, &case.update_time)?;
        }
        if let Some(changed) = &self.changed {
            changed.walk(&mut out, &case.update_time)?;
        }
        out.push_sql(
            ", event AS (INSERT INTO case_events (case_id, case_number, account_id, action, \
             actor, occur_time, etag, changes, comment, details) SELECT c.id, ",
        );
        out.push_bind_param::<Text, _>(&case.number)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&case.account_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.action)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.record.actor)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamptz, _>(&case.update_time)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.etag)?;
        out.push_sql(", ");
        out.push_bind_param::<Jsonb, _>(&self.changes)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.record.comment)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Jsonb>, _>(&self.details)?;
        out.push_sql(" FROM c)");
        if let (Some(key), Some(response)) = (self.record.idempotency, &self.response) {
            out.push_sql(
                ", reply AS (INSERT INTO idempotency_records (request_id, actor, method, \
                 fingerprint, case_id, reply) SELECT ",
            );
            out.push_bind_param::<SqlUuid, _>(&key.request_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(self.record.actor)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(key.method)?;
            out.push_sql(", ");
            out.push_bind_param::<Bytea, _>(&key.fingerprint)?;
            out.push_sql(", c.id, ");
            out.push_bind_param::<Bytea, _>(response)?;
            out.push_sql(" FROM c)");
        }
        if self.record.notify {
            out.push_sql(
                ", wake AS (SELECT pg_notify('invoice_case_events', '') FROM c) \
                 SELECT (SELECT count(*) FROM c) + 0 * (SELECT count(*) FROM wake) AS written",
            );
        } else {
            out.push_sql(" SELECT (SELECT count(*) FROM c) AS written");
        }
        Ok(())
    }
}

/// The lines a decision added, as column arrays.
struct AddedLines<'a> {
    id: Vec<Uuid>,
    position: Vec<i32>,
    number: Vec<&'a str>,
    state: Vec<&'a str>,
    dispute_code: Vec<&'a str>,
    invoice_line_ref: Vec<Option<&'a str>>,
    invoice_number: Vec<Option<&'a str>>,
    short_description: Vec<&'a str>,
    invoiced_amount: Vec<&'a BigDecimal>,
    disputed_amount: Vec<&'a BigDecimal>,
    invoiced_quantity: Vec<Option<&'a BigDecimal>>,
    disputed_quantity: Vec<Option<&'a BigDecimal>>,
}

impl<'a> AddedLines<'a> {
    fn new(lines: &[&'a Line]) -> Self {
        AddedLines {
            id: lines.iter().map(|l| l.id).collect(),
            position: lines.iter().map(|l| l.position).collect(),
            number: lines.iter().map(|l| l.number.as_str()).collect(),
            state: lines.iter().map(|l| l.state.as_str()).collect(),
            dispute_code: lines.iter().map(|l| l.dispute_code.as_str()).collect(),
            invoice_line_ref: lines
                .iter()
                .map(|l| l.invoice_line_ref.as_deref())
                .collect(),
            invoice_number: lines.iter().map(|l| l.invoice_number.as_deref()).collect(),
            short_description: lines.iter().map(|l| l.short_description.as_str()).collect(),
            invoiced_amount: lines
                .iter()
                .map(|l| l.invoiced_amount.as_big_decimal())
                .collect(),
            disputed_amount: lines
                .iter()
                .map(|l| l.disputed_amount.as_big_decimal())
                .collect(),
            invoiced_quantity: lines
                .iter()
                .map(|l| l.invoiced_quantity.as_ref().map(|d| d.as_big_decimal()))
                .collect(),
            disputed_quantity: lines
                .iter()
                .map(|l| l.disputed_quantity.as_ref().map(|d| d.as_big_decimal()))
                .collect(),
        }
    }

    fn walk<'b>(
        &'b self,
        out: &mut AstPass<'_, 'b, Pg>,
        now: &'b DateTime<Utc>,
    ) -> QueryResult<()> {
        out.push_sql(
            ", added AS (INSERT INTO case_lines (id, case_id, position, number, state, \
             dispute_code, invoice_line_ref, invoice_number, short_description, \
             invoiced_amount, disputed_amount, invoiced_quantity, disputed_quantity, \
             create_time, update_time) \
             SELECT a.id, c.id, a.position, a.number, a.state, a.dispute_code, \
             a.invoice_line_ref, a.invoice_number, a.short_description, a.invoiced_amount, \
             a.disputed_amount, a.invoiced_quantity, a.disputed_quantity, ",
        );
        out.push_bind_param::<Timestamptz, _>(now)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamptz, _>(now)?;
        out.push_sql(" FROM c, unnest(");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.id)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Integer>, _>(&self.position)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.number)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.state)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.dispute_code)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.invoice_line_ref)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.invoice_number)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.short_description)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Numeric>, _>(&self.invoiced_amount)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Numeric>, _>(&self.disputed_amount)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Numeric>>, _>(&self.invoiced_quantity)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Numeric>>, _>(&self.disputed_quantity)?;
        out.push_sql(
            ") AS a(id, position, number, state, dispute_code, invoice_line_ref, \
             invoice_number, short_description, invoiced_amount, disputed_amount, \
             invoiced_quantity, disputed_quantity))",
        );
        Ok(())
    }
}

/// The lines an action changed: the columns any of them changed, as
/// arrays (`None`: no line changed that column).
struct ChangedLines<'a> {
    id: Vec<Uuid>,
    state: Option<Vec<&'a str>>,
    dispute_code: Option<Vec<&'a str>>,
    invoice_line_ref: Option<Vec<Option<&'a str>>>,
    invoice_number: Option<Vec<Option<&'a str>>>,
    short_description: Option<Vec<&'a str>>,
    invoiced_amount: Option<Vec<&'a BigDecimal>>,
    disputed_amount: Option<Vec<&'a BigDecimal>>,
    approved_amount: Option<Vec<Option<&'a BigDecimal>>>,
    invoiced_quantity: Option<Vec<Option<&'a BigDecimal>>>,
    disputed_quantity: Option<Vec<Option<&'a BigDecimal>>>,
    resolution_code: Option<Vec<Option<&'a str>>>,
    resolution_notes: Option<Vec<Option<&'a str>>>,
}

impl<'a> ChangedLines<'a> {
    /// From (line before, line after) pairs.
    fn new(pairs: &[(&'a Line, &'a Line)]) -> Self {
        /// The column's values when any line changed it.
        fn column<'a, T: PartialEq + ?Sized + 'a, V>(
            pairs: &[(&'a Line, &'a Line)],
            field: impl Fn(&'a Line) -> &'a T,
            value: impl Fn(&'a Line) -> V,
        ) -> Option<Vec<V>> {
            pairs
                .iter()
                .any(|(before, after)| field(before) != field(after))
                .then(|| pairs.iter().map(|(_, after)| value(after)).collect())
        }
        let big = |d: &'a crate::domain::Decimal| d.as_big_decimal();
        ChangedLines {
            id: pairs.iter().map(|(_, after)| after.id).collect(),
            state: column(pairs, |l| &l.state, |l| l.state.as_str()),
            dispute_code: column(pairs, |l| &l.dispute_code, |l| l.dispute_code.as_str()),
            invoice_line_ref: column(
                pairs,
                |l| &l.invoice_line_ref,
                |l| l.invoice_line_ref.as_deref(),
            ),
            invoice_number: column(
                pairs,
                |l| &l.invoice_number,
                |l| l.invoice_number.as_deref(),
            ),
            short_description: column(
                pairs,
                |l| &l.short_description,
                |l| l.short_description.as_str(),
            ),
            invoiced_amount: column(pairs, |l| &l.invoiced_amount, |l| big(&l.invoiced_amount)),
            disputed_amount: column(pairs, |l| &l.disputed_amount, |l| big(&l.disputed_amount)),
            approved_amount: column(
                pairs,
                |l| &l.approved_amount,
                |l| l.approved_amount.as_ref().map(big),
            ),
            invoiced_quantity: column(
                pairs,
                |l| &l.invoiced_quantity,
                |l| l.invoiced_quantity.as_ref().map(big),
            ),
            disputed_quantity: column(
                pairs,
                |l| &l.disputed_quantity,
                |l| l.disputed_quantity.as_ref().map(big),
            ),
            resolution_code: column(
                pairs,
                |l| &l.resolution_code,
                |l| l.resolution_code.map(|c| c.as_str()),
            ),
            resolution_notes: column(
                pairs,
                |l| &l.resolution_notes,
                |l| l.resolution_notes.as_deref(),
            ),
        }
    }

    fn walk<'b>(
        &'b self,
        out: &mut AstPass<'_, 'b, Pg>,
        now: &'b DateTime<Utc>,
    ) -> QueryResult<()> {
        // Columns of the unnest and of the SET list, in one order.
        let mut names: Vec<&'static str> = vec!["id"];
        macro_rules! named {
            ($($field:ident),*) => {$(
                if self.$field.is_some() {
                    names.push(stringify!($field));
                }
            )*};
        }
        named!(
            state,
            dispute_code,
            invoice_line_ref,
            invoice_number,
            short_description,
            invoiced_amount,
            disputed_amount,
            approved_amount,
            invoiced_quantity,
            disputed_quantity,
            resolution_code,
            resolution_notes
        );
        out.push_sql(", changed AS (UPDATE case_lines l SET update_time = ");
        out.push_bind_param::<Timestamptz, _>(now)?;
        for name in &names[1..] {
            out.push_sql(", ");
            out.push_sql(name);
            out.push_sql(" = s.");
            out.push_sql(name);
        }
        out.push_sql(" FROM c, unnest(");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.id)?;
        macro_rules! array {
            ($($field:ident: $sql:ty),*) => {$(
                if let Some(values) = &self.$field {
                    out.push_sql(", ");
                    out.push_bind_param::<Array<$sql>, _>(values)?;
                }
            )*};
        }
        array!(
            state: Text,
            dispute_code: Text,
            invoice_line_ref: Nullable<Text>,
            invoice_number: Nullable<Text>,
            short_description: Text,
            invoiced_amount: Numeric,
            disputed_amount: Numeric,
            approved_amount: Nullable<Numeric>,
            invoiced_quantity: Nullable<Numeric>,
            disputed_quantity: Nullable<Numeric>,
            resolution_code: Nullable<Text>,
            resolution_notes: Nullable<Text>
        );
        out.push_sql(") AS s(");
        out.push_sql(&names.join(", "));
        out.push_sql(") WHERE l.id = s.id AND l.case_id = c.id)");
        Ok(())
    }
}
