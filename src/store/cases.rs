//! Cases: create, act (one transaction per action), read and list.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use diesel::{
    IntoSql, OptionalExtension,
    pg::Pg,
    prelude::*,
    sql_types::{
        Array, BigInt, Bool, Integer, Nullable, Numeric, Text, Timestamptz, Uuid as SqlUuid,
    },
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{
    Access, CaseKey, Store, StoreError, events, idempotency,
    idempotency::Idempotency,
    rows::{CaseChanges, CaseRow, LineRow},
    schema::{case_lines, invoice_cases},
};
use crate::domain::{
    self, Case, CaseIdentity, CaseState, Command, Context, Decision, LineIdentity, NewCase,
    NewLine, Priority,
    case::{case_number, line_number},
};

/// What a mutating call carries besides its command.
#[derive(Debug, Clone)]
pub struct MutationMeta {
    /// The caller (token `sub`).
    pub actor: String,
    /// When given, the case must still be at this etag.
    pub etag: Option<String>,
    /// When given, a retry returns the first response.
    pub idempotency: Option<Idempotency>,
    /// Recorded on the event.
    pub comment: Option<String>,
    /// The client's deadline, as a bound on the transaction's statements:
    /// past it the transaction rolls back (DEADLINE_EXCEEDED), changing
    /// nothing.
    pub statement_timeout: Option<Duration>,
}

/// An action on an existing case. Adding a line is separate because the
/// store assigns the new line's identity inside the transaction.
#[derive(Debug, Clone)]
pub enum Request {
    AddLine(NewLine),
    Command(Command),
}

/// `=` or `!=` on a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Equal,
    NotEqual,
}

/// ListInvoiceCases' filter: every condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseFilter {
    pub states: Vec<(Comparison, CaseState)>,
    pub accounts: Vec<(Comparison, String)>,
    /// `None` is "not assigned".
    pub assignees: Vec<(Comparison, Option<String>)>,
    pub priorities: Vec<(Comparison, Priority)>,
}

/// Where a page of cases ends (newest first): the last case's creation
/// time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasePageKey {
    pub create_time: DateTime<Utc>,
    pub id: Uuid,
}

/// One page of cases.
#[derive(Debug, Clone)]
pub struct CasePage {
    pub cases: Vec<Case>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<CasePageKey>,
}

#[derive(QueryableByName)]
struct Numbers {
    #[diesel(sql_type = BigInt)]
    case_seq: i64,
    #[diesel(sql_type = Array<BigInt>)]
    line_seqs: Vec<i64>,
}

#[derive(QueryableByName)]
struct LineSeq {
    #[diesel(sql_type = BigInt)]
    line_seq: i64,
}

/// The server's clock, at the database's precision (microseconds), so that
/// what is returned equals what is read back.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl Store {
    /// Creates a case in DRAFT with its lines, its numbers, and its CREATE
    /// event.
    pub async fn create_case(&self, new: NewCase, meta: &MutationMeta) -> Result<Case, StoreError> {
        let mut conn = self.conn().await?;
        let result = conn
            .transaction(async |conn| {
                bound_by_deadline(conn, meta).await?;
                // Before the transaction has an id: see lock_for_event.
                diesel::sql_query("SELECT lock_for_event(NULL)")
                    .execute(conn)
                    .await?;
                if let Some(key) = &meta.idempotency
                    && let Some(first) = idempotency::find(conn, key, &meta.actor).await?
                {
                    return Ok(first);
                }
                let line_count = i32::try_from(new.lines.len()).unwrap_or(i32::MAX);
                let numbers: Numbers = diesel::sql_query(
                    "SELECT nextval('invoice_case_number_seq') AS case_seq, \
                     ARRAY(SELECT nextval('case_line_number_seq') \
                           FROM generate_series(1, $1)) AS line_seqs",
                )
                .bind::<Integer, _>(line_count)
                .get_result(conn)
                .await?;
                let identity = CaseIdentity {
                    id: Uuid::now_v7(),
                    number: case_number(numbers.case_seq),
                };
                let lines = numbers
                    .line_seqs
                    .into_iter()
                    .map(|seq| LineIdentity {
                        id: Uuid::now_v7(),
                        number: line_number(seq),
                    })
                    .collect();
                let ctx = Context {
                    actor: &meta.actor,
                    now: now(),
                };
                let decision = domain::machine::create(new, identity, lines, ctx)?;
                diesel::insert_into(invoice_cases::table)
                    .values(CaseRow::from_case(&decision.case))
                    .execute(conn)
                    .await?;
                write_lines(conn, &decision).await?;
                finish(conn, &decision, meta, ctx.now).await
            })
            .await;
        match (result, &meta.idempotency) {
            // Another call with the same request id committed first: its
            // response is the answer.
            (Err(error), Some(key)) if is_request_id_conflict(&error) => {
                idempotency::find(&mut conn, key, &meta.actor)
                    .await?
                    .ok_or(StoreError::RequestIdReused(key.request_id))
            }
            (result, _) => result,
        }
    }

    /// Runs one action on a case in one transaction: lock the case, answer a
    /// repeated request id, check the etag, load the lines, let the domain
    /// decide, write the changed rows, the event and the idempotency record.
    pub async fn act(
        &self,
        key: &CaseKey,
        access: &Access,
        request: Request,
        meta: &MutationMeta,
    ) -> Result<Case, StoreError> {
        let mut conn = self.conn().await?;
        let result = conn
            .transaction(async |conn| {
                bound_by_deadline(conn, meta).await?;
                let row = lock_case(conn, key, access).await?;
                if let Some(key) = &meta.idempotency
                    && let Some(first) = idempotency::find(conn, key, &meta.actor).await?
                {
                    return Ok(first);
                }
                let current = row.revision.to_string();
                if let Some(given) = &meta.etag
                    && *given != current
                {
                    return Err(StoreError::StaleEtag {
                        given: given.clone(),
                        current,
                    });
                }
                let lines = load_lines(conn, row.id).await?;
                let case = row.into_case(lines)?;
                let command = match request {
                    Request::Command(command) => command,
                    Request::AddLine(line) => {
                        let seq: LineSeq =
                            diesel::sql_query("SELECT nextval('case_line_number_seq') AS line_seq")
                                .get_result(conn)
                                .await?;
                        Command::AddLine {
                            line,
                            identity: LineIdentity {
                                id: Uuid::now_v7(),
                                number: line_number(seq.line_seq),
                            },
                        }
                    }
                };
                let ctx = Context {
                    actor: &meta.actor,
                    now: now(),
                };
                let decision = domain::machine::decide(&case, command, ctx)?;
                diesel::update(invoice_cases::table.find(case.id))
                    .set(CaseChanges::from_case(&decision.case))
                    .execute(conn)
                    .await?;
                write_lines(conn, &decision).await?;
                finish(conn, &decision, meta, ctx.now).await
            })
            .await;
        match (result, &meta.idempotency) {
            // The request id was taken meanwhile by a call on another case.
            (Err(error), Some(key)) if is_request_id_conflict(&error) => {
                Err(StoreError::RequestIdReused(key.request_id))
            }
            (result, _) => result,
        }
    }

    /// One case with its lines, read in one statement (one snapshot); a
    /// `timeout` (the client's deadline) bounds the read.
    pub async fn get_case(
        &self,
        key: &CaseKey,
        access: &Access,
        timeout: Option<Duration>,
    ) -> Result<Case, StoreError> {
        async fn load(
            conn: &mut AsyncPgConnection,
            key: &CaseKey,
            access: &Access,
        ) -> Result<Vec<(CaseRow, Option<LineRow>)>, StoreError> {
            Ok(case_query(key, access)
                .left_join(case_lines::table)
                .select((CaseRow::as_select(), Option::<LineRow>::as_select()))
                .order(case_lines::position.asc())
                .load(conn)
                .await?)
        }
        let mut conn = self.conn().await?;
        let rows = match timeout {
            None => load(&mut conn, key, access).await?,
            Some(timeout) => {
                conn.build_transaction()
                    .read_only()
                    .run(async |conn| {
                        set_local_timeout(conn, timeout).await?;
                        load(conn, key, access).await
                    })
                    .await?
            }
        };
        let mut rows = rows.into_iter();
        let Some((case_row, first_line)) = rows.next() else {
            return Err(StoreError::CaseNotFound);
        };
        let lines = first_line
            .into_iter()
            .chain(rows.filter_map(|(_, line)| line))
            .collect();
        case_row.into_case(lines)
    }

    /// A page of cases, newest first, with their lines, read in one
    /// read-only snapshot; a `timeout` (the client's deadline) bounds it.
    pub async fn list_cases(
        &self,
        filter: &CaseFilter,
        access: &Access,
        after: Option<CasePageKey>,
        limit: usize,
        timeout: Option<Duration>,
    ) -> Result<CasePage, StoreError> {
        let mut conn = self.conn().await?;
        let filter = filter.clone();
        let access = access.clone();
        conn.build_transaction()
            .read_only()
            .repeatable_read()
            .run(async |conn| {
                if let Some(timeout) = timeout {
                    set_local_timeout(conn, timeout).await?;
                }
                let mut query = invoice_cases::table
                    .select(CaseRow::as_select())
                    .into_boxed::<Pg>();
                if let Some(accounts) = &access.accounts {
                    query = query.filter(invoice_cases::account_id.eq_any(accounts));
                }
                for (cmp, state) in &filter.states {
                    query = match cmp {
                        Comparison::Equal => query.filter(invoice_cases::state.eq(state.as_str())),
                        Comparison::NotEqual => {
                            query.filter(invoice_cases::state.ne(state.as_str()))
                        }
                    };
                }
                for (cmp, account) in &filter.accounts {
                    query = match cmp {
                        Comparison::Equal => query.filter(invoice_cases::account_id.eq(account)),
                        Comparison::NotEqual => query.filter(invoice_cases::account_id.ne(account)),
                    };
                }
                for (cmp, assignee) in &filter.assignees {
                    query = match cmp {
                        Comparison::Equal => {
                            query.filter(invoice_cases::assigned_to.is_not_distinct_from(assignee))
                        }
                        Comparison::NotEqual => {
                            query.filter(invoice_cases::assigned_to.is_distinct_from(assignee))
                        }
                    };
                }
                for (cmp, priority) in &filter.priorities {
                    query = match cmp {
                        Comparison::Equal => {
                            query.filter(invoice_cases::priority.eq(priority.level()))
                        }
                        Comparison::NotEqual => {
                            query.filter(invoice_cases::priority.ne(priority.level()))
                        }
                    };
                }
                if let Some(after) = after {
                    query = query.filter(
                        invoice_cases::create_time.lt(after.create_time).or(
                            invoice_cases::create_time
                                .eq(after.create_time)
                                .and(invoice_cases::id.lt(after.id)),
                        ),
                    );
                }
                let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
                let mut case_rows: Vec<CaseRow> = query
                    .order((invoice_cases::create_time.desc(), invoice_cases::id.desc()))
                    .limit(fetch)
                    .load(conn)
                    .await?;
                let more = case_rows.len() > limit;
                case_rows.truncate(limit);
                let next = more
                    .then(|| case_rows.last())
                    .flatten()
                    .map(|last| CasePageKey {
                        create_time: last.create_time,
                        id: last.id,
                    });
                let cases = with_lines(conn, case_rows).await?;
                Ok::<_, StoreError>(CasePage { cases, next })
            })
            .await
    }

    /// Resolves a case key to the case id and account, if visible.
    pub async fn find_case(
        &self,
        key: &CaseKey,
        access: &Access,
    ) -> Result<(Uuid, String), StoreError> {
        let mut conn = self.conn().await?;
        case_query(key, access)
            .select((invoice_cases::id, invoice_cases::account_id))
            .first(&mut conn)
            .await
            .optional()?
            .ok_or(StoreError::CaseNotFound)
    }
}

/// Whether a transaction failed because a concurrent call committed an
/// idempotency record with the same request id.
fn is_request_id_conflict(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Database(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            info,
        )) if info.constraint_name() == Some("idempotency_records_pkey")
    )
}

/// Bounds the transaction's statements by the client's deadline.
async fn bound_by_deadline(
    conn: &mut AsyncPgConnection,
    meta: &MutationMeta,
) -> Result<(), StoreError> {
    match meta.statement_timeout {
        Some(timeout) => set_local_timeout(conn, timeout).await,
        None => Ok(()),
    }
}

/// Sets `statement_timeout` for the rest of the current transaction (the
/// pooled connection keeps its own setting afterwards).
pub(super) async fn set_local_timeout(
    conn: &mut AsyncPgConnection,
    timeout: Duration,
) -> Result<(), StoreError> {
    let millis = timeout.as_millis().clamp(1, i32::MAX as u128).to_string();
    diesel::sql_query("SELECT set_config('statement_timeout', $1, true)")
        .bind::<Text, _>(millis)
        .execute(conn)
        .await?;
    Ok(())
}

/// The cases of `rows` with their lines (one query for all of them).
pub(super) async fn with_lines(
    conn: &mut AsyncPgConnection,
    rows: Vec<CaseRow>,
) -> Result<Vec<Case>, StoreError> {
    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
    let line_rows: Vec<LineRow> = case_lines::table
        .filter(case_lines::case_id.eq_any(&ids))
        .order((case_lines::case_id, case_lines::position))
        .select(LineRow::as_select())
        .load(conn)
        .await?;
    let mut by_case: std::collections::HashMap<Uuid, Vec<LineRow>> =
        std::collections::HashMap::new();
    for line in line_rows {
        by_case.entry(line.case_id).or_default().push(line);
    }
    rows.into_iter()
        .map(|row| {
            let lines = by_case.remove(&row.id).unwrap_or_default();
            row.into_case(lines)
        })
        .collect()
}

/// The case named by `key`, if the caller may see it.
fn case_query<'a>(key: &'a CaseKey, access: &'a Access) -> invoice_cases::BoxedQuery<'a, Pg> {
    let mut query = invoice_cases::table.into_boxed();
    query = match key {
        CaseKey::Id(id) => query.filter(invoice_cases::id.eq(*id)),
        CaseKey::Number(number) => query.filter(invoice_cases::number.eq(number.as_str())),
    };
    if let Some(accounts) = &access.accounts {
        query = query.filter(invoice_cases::account_id.eq_any(accounts));
    }
    query
}

/// Locks the case row until the transaction ends (`SELECT … FOR UPDATE`):
/// actions on one case run one after the other. The row's filter first takes
/// the event-writer locks of `lock_for_event` (see the migration that
/// defines it): they are taken before the row lock gives the transaction its
/// id, which puts the ids of one case's transactions in commit order.
async fn lock_case(
    conn: &mut AsyncPgConnection,
    key: &CaseKey,
    access: &Access,
) -> Result<CaseRow, StoreError> {
    // Locking queries cannot be boxed, so the access rule is one expression
    // for both cases: every account, or the listed ones.
    let every_account = access.accounts.is_none();
    let accounts = access.accounts.clone().unwrap_or_default();
    let visible = invoice_cases::account_id
        .eq_any(accounts)
        .or(every_account.into_sql::<Bool>());
    let event_locks = diesel::dsl::sql::<Bool>("lock_for_event(invoice_cases.id)");
    let row = match key {
        CaseKey::Id(id) => {
            invoice_cases::table
                .filter(invoice_cases::id.eq(*id).and(visible).and(event_locks))
                .select(CaseRow::as_select())
                .for_update()
                .first(conn)
                .await
        }
        CaseKey::Number(number) => {
            invoice_cases::table
                .filter(
                    invoice_cases::number
                        .eq(number)
                        .and(visible)
                        .and(event_locks),
                )
                .select(CaseRow::as_select())
                .for_update()
                .first(conn)
                .await
        }
    };
    row.optional()?.ok_or(StoreError::CaseNotFound)
}

async fn load_lines(
    conn: &mut AsyncPgConnection,
    case_id: Uuid,
) -> Result<Vec<LineRow>, StoreError> {
    Ok(case_lines::table
        .filter(case_lines::case_id.eq(case_id))
        .order(case_lines::position.asc())
        .select(LineRow::as_select())
        .load(conn)
        .await?)
}

/// Writes the lines a decision added, removed or changed: one statement
/// for each kind, however many lines.
async fn write_lines(conn: &mut AsyncPgConnection, decision: &Decision) -> Result<(), StoreError> {
    let case = &decision.case;
    if !decision.removed_lines.is_empty() {
        diesel::delete(case_lines::table.filter(case_lines::id.eq_any(&decision.removed_lines)))
            .execute(conn)
            .await?;
    }
    if !decision.added_lines.is_empty() {
        let rows: Vec<LineRow> = case
            .lines
            .iter()
            .filter(|line| decision.added_lines.contains(&line.id))
            .map(|line| LineRow::from_line(case.id, line))
            .collect();
        diesel::insert_into(case_lines::table)
            .values(&rows)
            .execute(conn)
            .await?;
    }
    if !decision.updated_lines.is_empty() {
        let lines: Vec<&domain::Line> = case
            .lines
            .iter()
            .filter(|line| decision.updated_lines.contains(&line.id))
            .collect();
        diesel::sql_query(
            "UPDATE case_lines AS l SET \
                 state = u.state, \
                 approved_amount = u.approved_amount, \
                 resolution_code = u.resolution_code, \
                 resolution_notes = u.resolution_notes, \
                 update_time = u.update_time \
             FROM unnest($1, $2, $3, $4, $5, $6) \
                 AS u(id, state, approved_amount, resolution_code, resolution_notes, update_time) \
             WHERE l.id = u.id AND l.case_id = $7",
        )
        .bind::<Array<SqlUuid>, _>(lines.iter().map(|l| l.id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(lines.iter().map(|l| l.state.as_str()).collect::<Vec<_>>())
        .bind::<Array<Nullable<Numeric>>, _>(
            lines
                .iter()
                .map(|l| {
                    l.approved_amount
                        .as_ref()
                        .map(|a| a.as_big_decimal().clone())
                })
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(
            lines
                .iter()
                .map(|l| l.resolution_code.map(|c| c.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(
            lines
                .iter()
                .map(|l| l.resolution_notes.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Timestamptz>, _>(lines.iter().map(|l| l.update_time).collect::<Vec<_>>())
        .bind::<SqlUuid, _>(case.id)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Writes the event and the idempotency record; the case is the response.
async fn finish(
    conn: &mut AsyncPgConnection,
    decision: &Decision,
    meta: &MutationMeta,
    now: DateTime<Utc>,
) -> Result<Case, StoreError> {
    events::insert(conn, decision, meta, now).await?;
    if let Some(key) = &meta.idempotency {
        idempotency::insert(conn, key, &meta.actor, &decision.case).await?;
    }
    Ok(decision.case.clone())
}
