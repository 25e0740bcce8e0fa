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
    sql_types::{Array, BigInt, Bytea, Jsonb, Nullable, Text, Uuid as SqlUuid},
};
use uuid::Uuid;

use super::{
    StoreError,
    rows::{CaseRow, Columns, LineRow},
    statement::statement,
};
use crate::domain::Case;

/// `t.`'s 22 case columns, in table order.
macro_rules! case_columns {
    ($t:literal) => {
        concat!(
            $t,
            ".id, ",
            $t,
            ".number, ",
            $t,
            ".state, ",
            $t,
            ".account_id, ",
            $t,
            ".contact_id, ",
            $t,
            ".invoice_number, ",
            $t,
            ".request_source, ",
            $t,
            ".short_description, ",
            $t,
            ".description, ",
            $t,
            ".priority, ",
            $t,
            ".currency_code, ",
            $t,
            ".assigned_to, ",
            $t,
            ".opened_by, ",
            $t,
            ".resolution_code, ",
            $t,
            ".resolution_notes, ",
            $t,
            ".create_time, ",
            $t,
            ".update_time, ",
            $t,
            ".submit_time, ",
            $t,
            ".resolve_time, ",
            $t,
            ".close_time, ",
            $t,
            ".revision, ",
            $t,
            ".assignment_group"
        )
    };
}

/// `t.`'s 18 line columns, in table order.
macro_rules! line_columns {
    ($t:literal) => {
        concat!(
            $t,
            ".id, ",
            $t,
            ".case_id, ",
            $t,
            ".position, ",
            $t,
            ".number, ",
            $t,
            ".state, ",
            $t,
            ".dispute_code, ",
            $t,
            ".invoice_line_ref, ",
            $t,
            ".invoice_number, ",
            $t,
            ".short_description, ",
            $t,
            ".invoiced_amount, ",
            $t,
            ".disputed_amount, ",
            $t,
            ".approved_amount, ",
            $t,
            ".invoiced_quantity, ",
            $t,
            ".disputed_quantity, ",
            $t,
            ".resolution_code, ",
            $t,
            ".resolution_notes, ",
            $t,
            ".create_time, ",
            $t,
            ".update_time"
        )
    };
}

/// A case (by id or number, if the caller may see it) joined with its
/// lines (one row per line, or one row without a line), and a new line
/// number when `new_line`. One statement: one snapshot. The parts a call
/// does not need are left out of the statement (each shape is prepared once
/// per connection).
pub(super) struct LoadCase<'a> {
    pub id: Option<Uuid>,
    pub number: Option<&'a str>,
    pub accounts: Option<&'a [String]>,
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
        out.push_sql(concat!(
            "SELECT ",
            case_columns!("c"),
            ", ",
            line_columns!("l")
        ));
        if self.new_line {
            out.push_sql(", (SELECT nextval('case_line_number_seq')) AS line_seq");
        }
        out.push_sql(" FROM invoice_cases c LEFT JOIN case_lines l ON l.case_id = c.id WHERE ");
        match (&self.id, &self.number) {
            (Some(id), _) => {
                out.push_sql("c.id = ");
                out.push_bind_param::<SqlUuid, _>(id)?;
            }
            (None, number) => {
                out.push_sql("c.number = ");
                out.push_bind_param::<Nullable<Text>, _>(number)?;
            }
        }
        if let Some(accounts) = &self.accounts {
            out.push_sql(" AND c.account_id = ANY(");
            out.push_bind_param::<Array<Text>, _>(accounts)?;
            out.push_sql(")");
        }
        Ok(())
    }
}

statement! {
    /// The reply stored for a request id.
    pub(super) struct FindReply {
        request_id: SqlUuid = Uuid,
    }
    "SELECT actor, method, fingerprint, reply, response FROM idempotency_records \
     WHERE request_id = $request_id"
}

/// The reply stored for a request id.
#[derive(Debug, Clone, QueryableByName)]
pub(super) struct StoredReply {
    #[diesel(sql_type = Text)]
    pub actor: String,
    #[diesel(sql_type = Text)]
    pub method: String,
    #[diesel(sql_type = Bytea)]
    pub fingerprint: Vec<u8>,
    /// Version 2: the response's bytes.
    #[diesel(sql_type = Nullable<Bytea>)]
    pub reply: Option<Vec<u8>>,
    /// Version 1: the case as JSON (records written before version 2).
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub response: Option<serde_json::Value>,
}

/// One row of [`LoadCase`] or [`CasesWithLines`]: a case, one of its
/// lines (if it has any), and the new line number (when asked for).
pub(super) struct CaseLineRow {
    pub case: CaseRow,
    pub line: Option<LineRow>,
    pub line_sequence: Option<i64>,
}

/// Column of the first line column.
const LINE_AT: usize = 22;
/// Column of the new line number.
const SEQUENCE_AT: usize = LINE_AT + 18;

impl QueryableByName<Pg> for CaseLineRow {
    fn build<'a>(row: &impl NamedRow<'a, Pg>) -> deserialize::Result<Self> {
        let case = CaseRow::read(&mut Columns::new(row, 0))?;
        let line_id: Option<Uuid> = Columns::new(row, LINE_AT).next::<Nullable<SqlUuid>, _>()?;
        let line = match line_id {
            Some(_) => Some(LineRow::read(&mut Columns::new(row, LINE_AT))?),
            None => None,
        };
        let line_sequence = match diesel::row::Row::field_count(row) > SEQUENCE_AT {
            true => Columns::new(row, SEQUENCE_AT).next::<Nullable<BigInt>, _>()?,
            false => None,
        };
        Ok(CaseLineRow {
            case,
            line,
            line_sequence,
        })
    }
}

/// What [`LoadCase`] found.
pub(super) struct LoadedCase {
    pub case: Option<Case>,
    pub line_sequence: Option<i64>,
}

impl LoadedCase {
    pub fn from_rows(rows: Vec<CaseLineRow>) -> Result<Self, StoreError> {
        let mut case_row = None;
        let mut lines = Vec::with_capacity(rows.len());
        let mut line_sequence = None;
        for row in rows {
            line_sequence = line_sequence.or(row.line_sequence);
            lines.extend(row.line);
            case_row.get_or_insert(row.case);
        }
        lines.sort_by_key(|line: &LineRow| line.position);
        Ok(LoadedCase {
            case: case_row.map(|row| row.into_case(lines)).transpose()?,
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
            ") SELECT ",
            case_columns!("c"),
            ", ",
            line_columns!("l"),
            " FROM c LEFT JOIN case_lines l ON l.case_id = c.id",
        ));
        Ok(())
    }
}

/// The cases of [`CasesWithLines`] rows, in `order`, each with its lines
/// in line order.
pub(super) fn cases_of(rows: Vec<CaseLineRow>, order: PageOrder) -> Result<Vec<Case>, StoreError> {
    let mut cases: std::collections::HashMap<Uuid, (CaseRow, Vec<LineRow>)> = Default::default();
    for CaseLineRow { case, line, .. } in rows {
        let id = case.id;
        cases
            .entry(id)
            .or_insert_with(|| (case, Vec::new()))
            .1
            .extend(line);
    }
    let mut cases: Vec<(CaseRow, Vec<LineRow>)> = cases.into_values().collect();
    match order {
        PageOrder::NewestFirst => {
            cases.sort_by_key(|(row, _)| std::cmp::Reverse((row.create_time, row.id)))
        }
        PageOrder::ById => cases.sort_by_key(|(row, _)| row.id),
    }
    cases
        .into_iter()
        .map(|(row, mut lines)| {
            lines.sort_by_key(|line| line.position);
            row.into_case(lines)
        })
        .collect()
}
