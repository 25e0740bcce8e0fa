//! Cases: create, act (one read and one write statement per action), read
//! and list.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use diesel::{
    pg::Pg,
    prelude::*,
    query_builder::{AstPass, QueryFragment, QueryId},
    sql_types::{
        Array, BigInt, Bytea, Integer, Jsonb, Nullable, SmallInt, Text, Timestamptz,
        Uuid as SqlUuid,
    },
};
use uuid::Uuid;

use super::{
    Access, CaseKey, Store, StoreError, idempotency,
    idempotency::Idempotency,
    load::{
        CaseLineRow, CasesWithLines, FindReply, LoadCase, LoadedCase, PageOrder, StoredReply,
        cases_of,
    },
    schema::invoice_cases,
    session::{Mode, Session},
    statement::statement,
    stored::StoredResponse,
    write::{Record, WriteDecision, Written},
};
use crate::domain::{
    self, Action, Case, CaseIdentity, CaseState, Command, Context, LineIdentity, NewCase, NewLine,
    Priority,
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

statement! {
    /// The numbers of a new case and its lines, and the reply stored for
    /// `request_id`, if any.
    struct NewNumbers {
        line_count: Integer = i32,
        request_id: Nullable<SqlUuid> = Option<Uuid>,
    }
    "SELECT nextval('invoice_case_number_seq') AS case_seq, \
            ARRAY(SELECT nextval('case_line_number_seq') \
                  FROM generate_series(1, $line_count)) AS line_seqs, \
            r.actor, r.method, r.fingerprint, r.reply, r.response \
     FROM (SELECT 1) AS one \
     LEFT JOIN idempotency_records r ON r.request_id = $request_id"
}

#[derive(QueryableByName)]
struct Numbers {
    #[diesel(sql_type = BigInt)]
    case_seq: i64,
    #[diesel(sql_type = Array<BigInt>)]
    line_seqs: Vec<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    actor: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    method: Option<String>,
    #[diesel(sql_type = Nullable<Bytea>)]
    fingerprint: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Bytea>)]
    reply: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    response: Option<serde_json::Value>,
}

impl Numbers {
    fn reply(&mut self) -> Option<StoredReply> {
        Some(StoredReply {
            actor: self.actor.take()?,
            method: self.method.take()?,
            fingerprint: self.fingerprint.take()?,
            reply: self.reply.take(),
            response: self.response.take(),
        })
    }
}

/// How many times an action is decided again when its case changed
/// between the read and the write, before it gives up (ABORTED).
const MAX_ATTEMPTS: usize = 100;

/// What a mutating call answers.
#[derive(Debug, Clone)]
// Written is the common answer: boxing it would cost every call an
// allocation to shrink the rare replay.
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    /// The action was written, with its event: the case after it.
    Written(Case),
    /// The request id came back with the same request: the first call's
    /// response, as stored. Nothing was written.
    Replayed(StoredResponse),
    /// The action changed nothing (an edit to the values the case has):
    /// the case as it is. Nothing was written, not even the request id.
    Unchanged(Case),
}

/// What the transaction of a mutating call did.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    /// Wrote this action's decision (and its event).
    Written(Case, Action),
    /// Answered a repeated request id with the stored reply: nothing
    /// written.
    Replayed(StoredResponse),
    /// Decided that the action changes nothing: nothing written.
    Unchanged(Case),
}

impl Outcome {
    /// What the call answers, once the transaction committed; a written
    /// action is counted in `invoice_cases_transitions_total` under its
    /// event's name.
    fn committed(self) -> Answer {
        match self {
            Outcome::Written(case, action) => {
                metrics::counter!("invoice_cases_transitions_total", "action" => action.as_str())
                    .increment(1);
                Answer::Written(case)
            }
            Outcome::Replayed(reply) => Answer::Replayed(reply),
            Outcome::Unchanged(case) => Answer::Unchanged(case),
        }
    }
}

/// The server's clock, at the database's precision (microseconds), so that
/// what is returned equals what is read back.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl Store {
    /// Creates a case in DRAFT with its lines, its numbers, and its CREATE
    /// event: one statement for the numbers (and a stored reply), one that
    /// writes everything.
    pub async fn create_case(
        &self,
        new: NewCase,
        meta: &MutationMeta,
    ) -> Result<Answer, StoreError> {
        let mut session = self
            .session(meta.statement_timeout, Mode::ReadWrite)
            .await?;
        let result = self.create_in(&mut session, new, meta).await;
        let result = session.finish(result).await.map(Outcome::committed);
        self.after_write(result, meta).await
    }

    async fn create_in(
        &self,
        session: &mut Session,
        new: NewCase,
        meta: &MutationMeta,
    ) -> Result<Outcome, StoreError> {
        let line_count = i32::try_from(new.lines.len()).unwrap_or(i32::MAX);
        let mut numbers: Numbers = session
            .row(NewNumbers {
                line_count,
                request_id: meta.idempotency.as_ref().map(|key| key.request_id),
            })
            .await?;
        if let Some(reply) = numbers.reply() {
            return replay(reply, meta).map(Outcome::Replayed);
        }
        let identity = CaseIdentity {
            id: Uuid::now_v7(),
            number: case_number(numbers.case_seq),
        };
        let lines = numbers
            .line_seqs
            .iter()
            .map(|&seq| LineIdentity {
                id: Uuid::now_v7(),
                number: line_number(seq),
            })
            .collect();
        let ctx = Context {
            actor: &meta.actor,
            now: now(),
        };
        let decision = domain::machine::create(new, identity, lines, ctx)?;
        let record = self.record(meta);
        session
            .row::<_, Written>(WriteDecision::new(&decision, None, &record)?)
            .await?;
        Ok(Outcome::Written(decision.case, decision.action))
    }

    /// Runs one action on a case: read the case, its lines and any reply
    /// stored for the request id (one statement); answer a repeated request
    /// id; check the etag; let the domain decide; write the decision (one
    /// statement) if the case has not changed since it was read — else read
    /// and decide again.
    pub async fn act(
        &self,
        key: &CaseKey,
        access: &Access,
        request: Request,
        meta: &MutationMeta,
    ) -> Result<Answer, StoreError> {
        let mut session = self
            .session(meta.statement_timeout, Mode::ReadWrite)
            .await?;
        let result = self.act_in(&mut session, key, access, request, meta).await;
        let result = session.finish(result).await.map(Outcome::committed);
        match (result, &meta.idempotency) {
            // The request id was taken meanwhile by a call on another case.
            (Err(error), Some(key)) if is_request_id_conflict(&error) => {
                Err(StoreError::RequestIdReused(key.request_id))
            }
            (result, _) => {
                // Nothing committed when nothing changed: no reader to wake.
                if let Ok(answer) = &result
                    && !matches!(answer, Answer::Unchanged(_))
                {
                    self.committed();
                    if let Answer::Written(case) = answer {
                        self.recent().put(case.clone());
                    }
                }
                result
            }
        }
    }

    async fn act_in(
        &self,
        session: &mut Session,
        key: &CaseKey,
        access: &Access,
        request: Request,
        meta: &MutationMeta,
    ) -> Result<Outcome, StoreError> {
        let (id, number) = key_columns(key);
        // A copy of the case this process committed or read recently
        // spares the read; only a committed write trusts it (see
        // `recent.rs`). Request ids and new lines need the database anyway.
        let mut trust_copy = meta.idempotency.is_none() && !matches!(request, Request::AddLine(_));
        for _ in 0..MAX_ATTEMPTS {
            let copy = trust_copy
                .then(|| self.recent().get(id, number))
                .flatten()
                .filter(|case| access.allows(&case.account_id));
            let from_copy = copy.is_some();
            let (case, line_sequence) = match copy {
                Some(case) => (case, None),
                None => {
                    let load = LoadCase {
                        id,
                        number,
                        accounts: access.accounts.as_deref(),
                        new_line: matches!(request, Request::AddLine(_)),
                    };
                    let (rows, reply): (Vec<CaseLineRow>, Vec<StoredReply>) =
                        match &meta.idempotency {
                            Some(key) => {
                                session
                                    .rows2(
                                        load,
                                        FindReply {
                                            request_id: key.request_id,
                                        },
                                    )
                                    .await?
                            }
                            None => (session.rows(load).await?, Vec::new()),
                        };
                    let loaded = LoadedCase::from_rows(rows)?;
                    let Some(case) = loaded.case else {
                        return Err(StoreError::CaseNotFound);
                    };
                    if let Some(reply) = reply.into_iter().next() {
                        return replay(reply, meta).map(Outcome::Replayed);
                    }
                    (std::sync::Arc::new(case), loaded.line_sequence)
                }
            };
            let current = case.revision.to_string();
            if let Some(given) = &meta.etag
                && *given != current
            {
                if from_copy {
                    // The copy may be the stale one: ask the database.
                    trust_copy = false;
                    continue;
                }
                return Err(StoreError::StaleEtag {
                    given: given.clone(),
                    current,
                });
            }
            let command = match &request {
                Request::Command(command) => command.clone(),
                Request::AddLine(line) => {
                    let seq = line_sequence.ok_or_else(|| {
                        StoreError::Corrupt("no line number was drawn for a new line".into())
                    })?;
                    Command::AddLine {
                        line: line.clone(),
                        identity: LineIdentity {
                            id: Uuid::now_v7(),
                            number: line_number(seq),
                        },
                    }
                }
            };
            let ctx = Context {
                actor: &meta.actor,
                now: now(),
            };
            let decision = match domain::machine::decide(&case, command, ctx) {
                Ok(decision) => decision,
                // A refusal is answered from the database's case only.
                Err(_) if from_copy => {
                    trust_copy = false;
                    continue;
                }
                Err(refused) => return Err(refused.into()),
            };
            if decision.is_no_op() {
                // Answered from the database's case only, like a refusal.
                if from_copy {
                    trust_copy = false;
                    continue;
                }
                return Ok(Outcome::Unchanged(decision.case));
            }
            let record = self.record(meta);
            let written: Written = session
                .row(WriteDecision::new(&decision, Some(&case), &record)?)
                .await?;
            if written.written == 1 {
                return Ok(Outcome::Written(decision.case, decision.action));
            }
            // Another action changed the case since it was read.
            self.recent().forget(case.id);
            trust_copy = false;
        }
        Err(StoreError::Contention)
    }

    /// What a write records besides the decision.
    fn record<'a>(&self, meta: &'a MutationMeta) -> Record<'a> {
        Record {
            actor: &meta.actor,
            comment: meta.comment.as_deref(),
            idempotency: meta.idempotency.as_ref(),
            notify: self.notify_replicas(),
        }
    }

    /// The end of a create: a request id taken by a concurrent call is
    /// answered with that call's reply.
    async fn after_write(
        &self,
        result: Result<Answer, StoreError>,
        meta: &MutationMeta,
    ) -> Result<Answer, StoreError> {
        match (result, &meta.idempotency) {
            (Err(error), Some(key)) if is_request_id_conflict(&error) => {
                let mut session = self.session(meta.statement_timeout, Mode::ReadOnly).await?;
                let found = idempotency::find_in(&mut session, key, &meta.actor).await;
                session
                    .finish(found)
                    .await?
                    .map(Answer::Replayed)
                    .ok_or(StoreError::RequestIdReused(key.request_id))
            }
            (result, _) => {
                if let Ok(answer) = &result {
                    self.committed();
                    if let Answer::Written(case) = answer {
                        self.recent().put(case.clone());
                    }
                }
                result
            }
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
        let mut session = self.session(timeout, Mode::ReadOnly).await?;
        let (id, number) = key_columns(key);
        let rows = session
            .rows::<_, CaseLineRow>(LoadCase {
                id,
                number,
                accounts: access.accounts.as_deref(),
                new_line: false,
            })
            .await;
        let rows = session.finish(rows).await?;
        let case = LoadedCase::from_rows(rows)?
            .case
            .ok_or(StoreError::CaseNotFound)?;
        self.recent().put(case.clone());
        Ok(case)
    }

    /// A page of cases, newest first, with their lines, read in one
    /// statement; a `timeout` (the client's deadline) bounds it.
    pub async fn list_cases(
        &self,
        filter: &CaseFilter,
        access: &Access,
        after: Option<CasePageKey>,
        limit: usize,
        timeout: Option<Duration>,
    ) -> Result<CasePage, StoreError> {
        let mut session = self.session(timeout, Mode::ReadOnly).await?;
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let rows: Result<Vec<CaseLineRow>, StoreError> = session
            .rows(CasesWithLines {
                cases: ListCases {
                    filter,
                    accounts: access.accounts.as_deref(),
                    after,
                    limit: fetch,
                },
            })
            .await;
        let rows = session.finish(rows).await?;
        let mut cases = cases_of(rows, PageOrder::NewestFirst)?;
        let more = cases.len() > limit;
        cases.truncate(limit);
        let next = more
            .then(|| cases.last())
            .flatten()
            .map(|last| CasePageKey {
                create_time: last.create_time,
                id: last.id,
            });
        Ok(CasePage { cases, next })
    }

    /// The plan PostgreSQL chooses for a page of `list_cases` (`EXPLAIN`
    /// of the very statement, with its values), one line per element: for
    /// operators looking at a slow list, and for the test that checks every
    /// filter is served by an index.
    pub async fn explain_list_cases(
        &self,
        filter: &CaseFilter,
        access: &Access,
        after: Option<CasePageKey>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut session = self.session(None, Mode::ReadOnly).await?;
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let lines: Vec<PlanLine> = session
            .rows(Explain(CasesWithLines {
                cases: ListCases {
                    filter,
                    accounts: access.accounts.as_deref(),
                    after,
                    limit: fetch,
                },
            }))
            .await?;
        Ok(lines.into_iter().map(|line| line.0).collect())
    }

    /// Resolves a case key to the case id and account, if visible; bounded
    /// by `timeout` like every read of a call.
    pub async fn find_case(
        &self,
        key: &CaseKey,
        access: &Access,
        timeout: Option<Duration>,
    ) -> Result<(Uuid, String), StoreError> {
        let mut session = self.session(timeout, Mode::ReadOnly).await?;
        let rows: Result<Vec<(Uuid, String)>, StoreError> = session
            .rows(
                case_query(key, access)
                    .select((invoice_cases::id, invoice_cases::account_id))
                    .limit(1),
            )
            .await;
        session
            .finish(rows)
            .await?
            .into_iter()
            .next()
            .ok_or(StoreError::CaseNotFound)
    }
}

/// The id and number columns a key names.
fn key_columns(key: &CaseKey) -> (Option<Uuid>, Option<&str>) {
    match key {
        CaseKey::Id(id) => (Some(*id), None),
        CaseKey::Number(number) => (None, Some(number.as_str())),
    }
}

/// The stored reply of a repeated request id: the first response, if the
/// request is the same one.
fn replay(reply: StoredReply, meta: &MutationMeta) -> Result<StoredResponse, StoreError> {
    let Some(key) = &meta.idempotency else {
        return Err(StoreError::Corrupt("a reply without a request id".into()));
    };
    if reply.actor != meta.actor
        || reply.method != key.method
        || reply.fingerprint != key.fingerprint
    {
        return Err(StoreError::RequestIdReused(key.request_id));
    }
    super::stored::response_from_columns(reply.reply, reply.response)
}

/// ListInvoiceCases' query: the filter's conditions, the caller's
/// accounts, the page start, newest first. Its SQL depends only on which
/// conditions there are, so each shape is prepared once per connection.
struct ListCases<'a> {
    filter: &'a CaseFilter,
    accounts: Option<&'a [String]>,
    after: Option<CasePageKey>,
    limit: i64,
}

impl QueryId for ListCases<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl QueryFragment<Pg> for ListCases<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT * FROM invoice_cases WHERE true");
        if let Some(accounts) = &self.accounts {
            out.push_sql(" AND account_id = ANY(");
            out.push_bind_param::<Array<Text>, _>(accounts)?;
            out.push_sql(")");
        }
        for (cmp, state) in &self.filter.states {
            out.push_sql(comparison(" AND state", *cmp));
            out.push_bind_param::<Text, _>(state.as_str())?;
        }
        for (cmp, account) in &self.filter.accounts {
            out.push_sql(comparison(" AND account_id", *cmp));
            out.push_bind_param::<Text, _>(account)?;
        }
        for (cmp, assignee) in &self.filter.assignees {
            match (assignee, cmp) {
                (None, Comparison::Equal) => out.push_sql(" AND assigned_to IS NULL"),
                (None, Comparison::NotEqual) => out.push_sql(" AND assigned_to IS NOT NULL"),
                (Some(assignee), Comparison::Equal) => {
                    out.push_sql(" AND assigned_to = ");
                    out.push_bind_param::<Text, _>(assignee)?;
                }
                (Some(assignee), Comparison::NotEqual) => {
                    out.push_sql(" AND assigned_to IS DISTINCT FROM ");
                    out.push_bind_param::<Text, _>(assignee)?;
                }
            }
        }
        for (cmp, priority) in &self.filter.priorities {
            out.push_sql(comparison(" AND priority", *cmp));
            out.push_bind_param::<SmallInt, _>(&PRIORITIES[priority.level() as usize])?;
        }
        if let Some(after) = &self.after {
            // A row comparison: the index on (create_time, id) serves it.
            out.push_sql(" AND (create_time, id) < (");
            out.push_bind_param::<Timestamptz, _>(&after.create_time)?;
            out.push_sql(", ");
            out.push_bind_param::<SqlUuid, _>(&after.id)?;
            out.push_sql(")");
        }
        out.push_sql(" ORDER BY create_time DESC, id DESC LIMIT ");
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        Ok(())
    }
}

/// `EXPLAIN` of a query, run with the query's values.
struct Explain<Q>(Q);

impl<Q> QueryId for Explain<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> diesel::query_builder::Query for Explain<Q> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Explain<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("EXPLAIN ");
        self.0.walk_ast(out)
    }
}

/// One line of an `EXPLAIN`.
struct PlanLine(String);

impl diesel::deserialize::QueryableByName<Pg> for PlanLine {
    fn build<'a>(row: &impl diesel::row::NamedRow<'a, Pg>) -> diesel::deserialize::Result<Self> {
        use diesel::row::Field;
        let field = diesel::row::Row::get(row, 0usize).ok_or("EXPLAIN returned no column")?;
        <String as diesel::deserialize::FromSql<Text, Pg>>::from_nullable_sql(field.value())
            .map(PlanLine)
    }
}

/// Priority levels by index, as bind values that live long enough.
const PRIORITIES: [i16; 5] = [0, 1, 2, 3, 4];

fn comparison(column: &'static str, cmp: Comparison) -> &'static str {
    match (column, cmp) {
        (" AND state", Comparison::Equal) => " AND state = ",
        (" AND state", Comparison::NotEqual) => " AND state <> ",
        (" AND account_id", Comparison::Equal) => " AND account_id = ",
        (" AND account_id", Comparison::NotEqual) => " AND account_id <> ",
        (" AND priority", Comparison::Equal) => " AND priority = ",
        _ => " AND priority <> ",
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
