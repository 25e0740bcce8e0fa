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
    sql_types::{Array, BigInt, Bool, Bytea, Jsonb, Nullable, SmallInt, Text, Uuid as SqlUuid},
};
use uuid::Uuid;

use super::{
    StoreError,
    rows::{CaseRow, Columns, LineRow},
    statement::statement,
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

statement! {
    /// A case (by id or number, if the caller may see it) with its lines
    /// in line order; the reply stored for `request_id`, if any; and a new
    /// line number when `new_line`. One statement: one snapshot.
    pub(super) struct LoadCase<'a> {
        id: Nullable<SqlUuid> = Option<Uuid>,
        number: Nullable<Text> = Option<&'a str>,
        accounts: Nullable<Array<Text>> = Option<&'a [String]>,
        request_id: Nullable<SqlUuid> = Option<Uuid>,
        new_line: Bool = bool,
    }
    concat!(
        "WITH c AS MATERIALIZED ( \
             SELECT * FROM invoice_cases \
             WHERE (id = $id OR number = $number) \
               AND ($accounts::text[] IS NULL OR account_id = ANY($accounts))) \
         SELECT 0::smallint AS kind, ", case_columns!("c"), ", ", no_line!(), ", ", no_reply!(),
        ", NULL::bigint FROM c \
         UNION ALL \
         SELECT 1::smallint, ", no_case!(), ", ", line_columns!("l"), ", ", no_reply!(),
        ", NULL::bigint FROM case_lines l JOIN c ON l.case_id = c.id \
         UNION ALL \
         SELECT 2::smallint, ", no_case!(), ", ", no_line!(),
        ", r.actor, r.method, r.fingerprint, r.response, NULL::bigint \
         FROM idempotency_records r \
         WHERE r.request_id = $request_id AND EXISTS (SELECT FROM c) \
         UNION ALL \
         SELECT 3::smallint, ", no_case!(), ", ", no_line!(), ", ", no_reply!(),
        ", nextval('case_line_number_seq') FROM c WHERE $new_line \
         ORDER BY 1, 25"
    )
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

/// The cases an inner `SELECT <case columns> FROM invoice_cases …` query
/// picks, each followed by its lines, in one statement.
pub(super) struct CasesWithLines<Q> {
    pub cases: Q,
    pub order: PageOrder,
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
            ", c.create_time AS sort_time, c.id AS sort_id FROM c \
             UNION ALL \
             SELECT 1::smallint, ",
            no_case!(),
            ", ",
            line_columns!("l"),
            ", c.create_time, c.id FROM case_lines l JOIN c ON l.case_id = c.id ",
        ));
        // kind, 21 case columns, 18 line columns, then the sort keys.
        out.push_sql(match self.order {
            PageOrder::NewestFirst => "ORDER BY 41 DESC, 42 DESC, 1, 25",
            PageOrder::ById => "ORDER BY 42, 1, 25",
        });
        Ok(())
    }
}

/// The cases of [`CasesWithLines`] rows, in order.
pub(super) fn cases_of(rows: Vec<Loaded>) -> Result<Vec<Case>, StoreError> {
    let mut cases = Vec::new();
    let mut current: Option<(CaseRow, Vec<LineRow>)> = None;
    for row in rows {
        match row {
            Loaded::Case(row) => {
                if let Some((case, lines)) = current.take() {
                    cases.push(case.into_case(lines)?);
                }
                current = Some((*row, Vec::new()));
            }
            Loaded::Line(line) => match &mut current {
                Some((_, lines)) => lines.push(*line),
                None => return Err(StoreError::Corrupt("a line before its case".into())),
            },
            Loaded::Reply(_) | Loaded::LineSequence(_) => {}
        }
    }
    if let Some((case, lines)) = current {
        cases.push(case.into_case(lines)?);
    }
    Ok(cases)
}
