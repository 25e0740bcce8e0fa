//! Reading cases with their lines in one statement: rows of several kinds
//! side by side (a case, its lines, a stored reply, a new line number), each
//! kind in columns of its own and the others NULL, so that nothing is sent
//! twice.

use diesel::{
    QueryResult,
    deserialize::{self, QueryableByName},
    pg::Pg,
    query_builder::{AstPass, QueryFragment, QueryId},
    row::NamedRow,
    sql_types::{Array, BigInt, Bytea, Jsonb, Nullable, SmallInt, Text, Uuid as SqlUuid},
};
use uuid::Uuid;

use super::{
    StoreError,
    rows::{CaseRow, Columns, LineRow},
};
use crate::domain::Case;

/// `t.`'s 21 case columns, in table order.
macro_rules! case_columns {
    ($t:literal) => {
        concat!(
            $t, ".id, ", $t, ".number, ", $t, ".state, ", $t, ".account_id, ",
            $t, ".contact_id, ", $t, ".invoice_number, ", $t, ".request_source, ",
            $t, ".short_description, ", $t, ".description, ", $t, ".priority, ",
            $t, ".currency_code, ", $t, ".assigned_to, ", $t, ".opened_by, ",
            $t, ".resolution_code, ", $t, ".resolution_notes, ", $t, ".create_time, ",
            $t, ".update_time, ", $t, ".submit_time, ", $t, ".resolve_time, ",
            $t, ".close_time, ", $t, ".revision"
        )
    };
}

/// `t.`'s 18 line columns, in table order.
macro_rules! line_columns {
    ($t:literal) => {
        concat!(
            $t, ".id, ", $t, ".case_id, ", $t, ".position, ", $t, ".number, ",
            $t, ".state, ", $t, ".dispute_code, ", $t, ".invoice_line_ref, ",
            $t, ".invoice_number, ", $t, ".short_description, ", $t, ".invoiced_amount, ",
            $t, ".disputed_amount, ", $t, ".approved_amount, ", $t, ".invoiced_quantity, ",
            $t, ".disputed_quantity, ", $t, ".resolution_code, ", $t, ".resolution_notes, ",
            $t, ".create_time, ", $t, ".update_time"
        )
    };
}

macro_rules! no_case {
    () => {
        "NULL::uuid, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, \
         NULL::text, NULL::text, NULL::smallint, NULL::text, NULL::text, NULL::text, NULL::text, \
         NULL::text, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, \
         NULL::timestamptz, NULL::timestamptz, NULL::bigint"
    };
}

macro_rules! no_line {
    () => {
        "NULL::uuid, NULL::uuid, NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, \
         NULL::text, NULL::text, NULL::numeric, NULL::numeric, NULL::numeric, NULL::numeric, \
         NULL::numeric, NULL::text, NULL::text, NULL::timestamptz, NULL::timestamptz"
    };
}

macro_rules! no_reply {
    () => {
        "NULL::text, NULL::text, NULL::bytea, NULL::jsonb"
    };
}

/// Column of the first case column (after `kind`).
const CASE_AT: usize = 1;
/// Column of the first line column.
const LINE_AT: usize = CASE_AT + 21;
/// Column of the first stored-reply column.
const REPLY_AT: usize = LINE_AT + 18;
/// Column of the new line number.
const SEQUENCE_AT: usize = REPLY_AT + 4;

/// A case (by id or number, if the caller may see it) with its lines; the
/// reply stored for `request_id`, if any; and a new line number when
/// `new_line`. One statement: one snapshot. The parts a call does not need
/// are left out of the statement (each shape is prepared once).
pub(super) struct LoadCase<'a> {
    pub id: Option<Uuid>,
    pub number: Option<&'a str>,
    pub accounts: Option<&'a [String]>,
    pub request_id: Option<Uuid>,
    pub new_line: bool,
}

impl QueryId for LoadCase<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for LoadCase<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl QueryFragment<Pg> for LoadCase<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH c AS MATERIALIZED (SELECT * FROM invoice_cases WHERE ");
        match (&self.id, &self.number) {
            (Some(id), _) => {
                out.push_sql("id = ");
                out.push_bind_param::<SqlUuid, _>(id)?;
            }
            (None, number) => {
                out.push_sql("number = ");
                out.push_bind_param::<Nullable<Text>, _>(number)?;
            }
        }
        if let Some(accounts) = &self.accounts {
            out.push_sql(" AND account_id = ANY(");
            out.push_bind_param::<Array<Text>, _>(accounts)?;
            out.push_sql(")");
        }
        out.push_sql(concat!(
            ") SELECT 0::smallint AS kind, ",
            case_columns!("c"),
            ", ",
            no_line!(),
            ", ",
            no_reply!(),
            ", NULL::bigint FROM c \
             UNION ALL \
             SELECT 1::smallint, ",
            no_case!(),
            ", ",
            line_columns!("l"),
            ", ",
            no_reply!(),
            ", NULL::bigint FROM case_lines l JOIN c ON l.case_id = c.id",
        ));
        if let Some(request_id) = &self.request_id {
            out.push_sql(concat!(
                " UNION ALL SELECT 2::smallint, ",
                no_case!(),
                ", ",
                no_line!(),
                ", r.actor, r.method, r.fingerprint, r.response, NULL::bigint \
                 FROM idempotency_records r WHERE r.request_id = "
            ));
            out.push_bind_param::<SqlUuid, _>(request_id)?;
            out.push_sql(" AND EXISTS (SELECT FROM c)");
        }
        if self.new_line {
            out.push_sql(concat!(
                " UNION ALL SELECT 3::smallint, ",
                no_case!(),
                ", ",
                no_line!(),
                ", ",
                no_reply!(),
                ", nextval('case_line_number_seq') FROM c"
            ));
        }
        Ok(())
    }
}

/// The reply stored for a request id.
#[derive(Debug, Clone)]
pub(super) struct StoredReply {
    pub actor: String,
    pub method: String,
    pub fingerprint: Vec<u8>,
    pub response: serde_json::Value,
}

/// One row of [`LoadCase`] (or of [`CasesWithLines`]).
pub(super) enum Loaded {
    Case(Box<CaseRow>),
    Line(Box<LineRow>),
    Reply(Box<StoredReply>),
    LineSequence(i64),
}

impl QueryableByName<Pg> for Loaded {
    fn build<'a>(row: &impl NamedRow<'a, Pg>) -> deserialize::Result<Self> {
        let kind: i16 = Columns::new(row, 0).next::<SmallInt, _>()?;
        Ok(match kind {
            0 => Loaded::Case(Box::new(CaseRow::read(&mut Columns::new(row, CASE_AT))?)),
            1 => Loaded::Line(Box::new(LineRow::read(&mut Columns::new(row, LINE_AT))?)),
            2 => {
                let mut c = Columns::new(row, REPLY_AT);
                Loaded::Reply(Box::new(StoredReply {
                    actor: c.next::<Text, _>()?,
                    method: c.next::<Text, _>()?,
                    fingerprint: c.next::<Bytea, _>()?,
                    response: c.next::<Jsonb, _>()?,
                }))
            }
            3 => Loaded::LineSequence(Columns::new(row, SEQUENCE_AT).next::<BigInt, _>()?),
            other => return Err(format!("unknown row kind {other}").into()),
        })
    }
}

/// What [`LoadCase`] found.
pub(super) struct LoadedCase {
    pub case: Option<Case>,
    pub reply: Option<StoredReply>,
    pub line_sequence: Option<i64>,
}

impl LoadedCase {
    pub fn from_rows(rows: Vec<Loaded>) -> Result<Self, StoreError> {
        let mut case_row = None;
        let mut lines = Vec::new();
        let mut reply = None;
        let mut line_sequence = None;
        for row in rows {
            match row {
                Loaded::Case(row) => case_row = Some(*row),
                Loaded::Line(row) => lines.push(*row),
                Loaded::Reply(row) => reply = Some(*row),
                Loaded::LineSequence(seq) => line_sequence = Some(seq),
            }
        }
        lines.sort_by_key(|line: &LineRow| line.position);
        Ok(LoadedCase {
            case: case_row.map(|row| row.into_case(lines)).transpose()?,
            reply,
            line_sequence,
        })
    }
}

/// The order of a page of cases.
#[derive(Debug, Clone, Copy)]
pub(super) enum PageOrder {
    /// Newest first (ListInvoiceCases).
    NewestFirst,
    /// By id (snapshots).
    ById,
}

/// The cases an inner `SELECT * FROM invoice_cases …` query picks, and
/// their lines, in one statement (in no particular order: see
/// [`cases_of`]).
pub(super) struct CasesWithLines<Q> {
    pub cases: Q,
}

impl<Q: QueryId> QueryId for CasesWithLines<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> diesel::query_builder::Query for CasesWithLines<Q> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for CasesWithLines<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH c AS MATERIALIZED (");
        self.cases.walk_ast(out.reborrow())?;
        out.push_sql(concat!(
            ") SELECT 0::smallint AS kind, ",
            case_columns!("c"),
            ", ",
            no_line!(),
            " FROM c \
             UNION ALL \
             SELECT 1::smallint, ",
            no_case!(),
            ", ",
            line_columns!("l"),
            " FROM case_lines l JOIN c ON l.case_id = c.id",
        ));
        Ok(())
    }
}

/// The cases of [`CasesWithLines`] rows, in `order`, each with its lines
/// in line order.
pub(super) fn cases_of(rows: Vec<Loaded>, order: PageOrder) -> Result<Vec<Case>, StoreError> {
    let mut case_rows = Vec::new();
    let mut lines: std::collections::HashMap<Uuid, Vec<LineRow>> = Default::default();
    for row in rows {
        match row {
            Loaded::Case(row) => case_rows.push(*row),
            Loaded::Line(line) => lines.entry(line.case_id).or_default().push(*line),
            Loaded::Reply(_) | Loaded::LineSequence(_) => {}
        }
    }
    match order {
        PageOrder::NewestFirst => case_rows.sort_by(|a, b| {
            (b.create_time, b.id).cmp(&(a.create_time, a.id))
        }),
        PageOrder::ById => case_rows.sort_by_key(|row| row.id),
    }
    case_rows
        .into_iter()
        .map(|row| {
            let mut lines = lines.remove(&row.id).unwrap_or_default();
            lines.sort_by_key(|line| line.position);
            row.into_case(lines)
        })
        .collect()
}
