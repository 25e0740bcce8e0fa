//! Reading the event log in stream order, for WatchStateChanges.
//!
//! Order and gaps: events are read in (txid, id) order and only below the
//! horizon, the oldest transaction still running
//! (`pg_snapshot_xmin(pg_current_snapshot())`). Ids alone would lose
//! events: a sequence value taken early can commit after a larger one was
//! already read. Every transaction below the horizon has ended, so once a
//! reader has passed a position nothing can appear before it. The cost: a
//! long transaction anywhere on the server (even one that writes no event)
//! holds delivery back until it ends; nothing is lost meanwhile. The
//! migration defining `lock_for_event` explains why (txid, id) is also
//! commit order for any one case.

use chrono::{DateTime, Utc};
use diesel::{
    QueryResult, QueryableByName,
    pg::Pg,
    query_builder::{AstPass, QueryFragment, QueryId},
    sql_types::{Array, BigInt, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid},
};
use uuid::Uuid;

use super::{
    Store, StoreError,
    load::{CaseLineRow, CasesWithLines, PageOrder, cases_of},
    rows::{EventPosition, EventRow, StoredEvent},
    session::{Mode, Session},
    statement::statement,
};
use crate::domain::Case;

/// What a snapshot shows of the transactions below its `xmax`: all of
/// them but those still in progress when it was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// The first transaction id the snapshot does not show.
    pub xmax: i64,
    /// Transactions below `xmax` still in progress, ascending.
    pub in_progress: Vec<i64>,
}

impl Shown {
    /// Whether the snapshot shows the events of transaction `txid`.
    pub fn shows(&self, txid: i64) -> bool {
        txid < self.xmax && self.in_progress.binary_search(&txid).is_err()
    }
}

/// Where a stream stands: every event up to `after` is behind it, and,
/// until the stream passes the snapshot it started from, so is every event
/// that snapshot shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    pub after: EventPosition,
    pub shown: Option<Shown>,
}

impl StreamPosition {
    /// After `position`, nothing else skipped.
    pub fn at(position: EventPosition) -> Self {
        StreamPosition {
            after: position,
            shown: None,
        }
    }

    /// The position of a snapshot (`xmin`, `xmax`, transactions in
    /// progress): after everything it shows.
    pub fn after_snapshot(xmin: i64, xmax: i64, mut in_progress: Vec<i64>) -> Self {
        in_progress.sort_unstable();
        in_progress.dedup();
        let mut position = StreamPosition {
            after: EventPosition { txid: xmin, id: 0 },
            shown: Some(Shown { xmax, in_progress }),
        };
        position.normalise();
        position
    }

    /// Whether a stream here still has to get the event at `position`.
    pub fn wants(&self, position: EventPosition) -> bool {
        position > self.after && !self.shown.as_ref().is_some_and(|s| s.shows(position.txid))
    }

    /// Moves past `position` (an event handed on or skipped, or a horizon).
    pub fn advance(&mut self, position: EventPosition) {
        if position > self.after {
            self.after = position;
            self.normalise();
        }
    }

    /// Forgets what is behind: in-progress transactions before the
    /// position, and the snapshot once the position has passed its `xmax`.
    fn normalise(&mut self) {
        let after = self.after;
        if let Some(shown) = &mut self.shown {
            if after
                >= (EventPosition {
                    txid: shown.xmax,
                    id: 0,
                })
            {
                self.shown = None;
            } else {
                shown.in_progress.retain(|&txid| txid >= after.txid);
            }
        }
    }
}

/// Which events a stream wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this case.
    pub case_id: Option<Uuid>,
    /// Only this account.
    pub account_id: Option<String>,
    /// Only these accounts (the caller's access).
    pub accounts: Option<Vec<String>>,
}

impl EventFilter {
    /// Whether an event passes the filter.
    pub fn matches(&self, case_id: Uuid, account_id: &str) -> bool {
        self.case_id.is_none_or(|id| id == case_id)
            && self.account_id.as_deref().is_none_or(|a| a == account_id)
            && self
                .accounts
                .as_ref()
                .is_none_or(|accounts| accounts.iter().any(|a| a == account_id))
    }
}

/// One read of the log.
#[derive(Debug, Clone)]
pub struct LogPage {
    /// The events after the position, below the horizon, in order: at most
    /// the number asked for, and about [`LOG_PAGE_BYTES`] of changes.
    pub events: Vec<StoredEvent>,
    /// Whether more events may follow right away (read again after the
    /// last one).
    pub more: bool,
    /// When `more` is false: every event before `(horizon, 0)` has been
    /// read.
    pub horizon: EventPosition,
    /// Every event at or before this position has been pruned.
    pub pruned_through: EventPosition,
}

/// About how many bytes of changes one read of the log returns (at least
/// one event, however large): a subscriber catching up never holds more.
pub const LOG_PAGE_BYTES: i64 = 1024 * 1024;

#[derive(QueryableByName)]
struct LogRow {
    #[diesel(sql_type = BigInt)]
    horizon: i64,
    /// Events the page held before the byte budget cut it.
    #[diesel(sql_type = Nullable<BigInt>)]
    fetched: Option<i64>,
    #[diesel(sql_type = BigInt)]
    pruned_through_txid: i64,
    #[diesel(sql_type = BigInt)]
    pruned_through_id: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    txid: Option<i64>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    case_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    case_number: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    account_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    action: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    actor: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    occur_time: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    etag: Option<String>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    changes: Option<serde_json::Value>,
    #[diesel(sql_type = Nullable<Text>)]
    comment: Option<String>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    details: Option<serde_json::Value>,
}

/// The text of a log read whose events also satisfy `$condition` (an
/// index serves each kind of filter: every event, one case, one account).
macro_rules! read_log_sql {
    ($condition:literal) => {
        concat!(
            "WITH h AS MATERIALIZED ( \
                 SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) \
             SELECT h.xmin::text::bigint AS horizon, \
                    r.pruned_through_txid, r.pruned_through_id, e.fetched, \
                    e.id, e.txid::text::bigint AS txid, e.case_id, e.case_number, \
                    e.account_id, e.action, e.actor, e.occur_time, e.etag, e.changes, \
                    e.comment, e.details \
             FROM h CROSS JOIN ( \
                 SELECT pruned_through_txid, pruned_through_id \
                 FROM case_event_retention LIMIT 1) r \
             LEFT JOIN LATERAL ( \
                 SELECT * FROM ( \
                     SELECT l.*, count(*) OVER () AS fetched, \
                            sum(pg_column_size(l.changes)) OVER (ORDER BY l.txid, l.id) \
                              - pg_column_size(l.changes) AS bytes_before \
                     FROM ( \
                         SELECT * FROM case_events e \
                         WHERE (e.txid, e.id) > ($after_txid::text::xid8, $after_id) \
                           AND e.txid < h.xmin ",
            $condition,
            " \
                           AND ($accounts::text[] IS NULL OR e.account_id = ANY($accounts)) \
                           AND ($shown_xmax::bigint IS NULL \
                                OR e.txid >= $shown_xmax::text::xid8 \
                                OR e.txid::text::bigint = ANY($shown_in_progress)) \
                         ORDER BY e.txid, e.id \
                         LIMIT $limit) l) w \
                 WHERE w.bytes_before < $bytes) e ON true \
             ORDER BY e.txid, e.id"
        )
    };
}

statement! {
    /// Every event after a position, below the horizon.
    struct ReadLog<'a> {
        after_txid: BigInt = i64,
        after_id: BigInt = i64,
        accounts: Nullable<Array<Text>> = Option<&'a [String]>,
        shown_xmax: Nullable<BigInt> = Option<i64>,
        shown_in_progress: Array<BigInt> = &'a [i64],
        limit: BigInt = i64,
        bytes: BigInt = i64,
    }
    read_log_sql!("")
}

statement! {
    /// One case's events after a position, below the horizon.
    struct ReadCaseLog<'a> {
        case_id: SqlUuid = Uuid,
        account_id: Nullable<Text> = Option<&'a str>,
        after_txid: BigInt = i64,
        after_id: BigInt = i64,
        accounts: Nullable<Array<Text>> = Option<&'a [String]>,
        shown_xmax: Nullable<BigInt> = Option<i64>,
        shown_in_progress: Array<BigInt> = &'a [i64],
        limit: BigInt = i64,
        bytes: BigInt = i64,
    }
    read_log_sql!("AND e.case_id = $case_id AND ($account_id::text IS NULL OR e.account_id = $account_id)")
}

statement! {
    /// One account's events after a position, below the horizon.
    struct ReadAccountLog<'a> {
        account_id: Text = &'a str,
        after_txid: BigInt = i64,
        after_id: BigInt = i64,
        accounts: Nullable<Array<Text>> = Option<&'a [String]>,
        shown_xmax: Nullable<BigInt> = Option<i64>,
        shown_in_progress: Array<BigInt> = &'a [i64],
        limit: BigInt = i64,
        bytes: BigInt = i64,
    }
    read_log_sql!("AND e.account_id = $account_id")
}

impl LogRow {
    fn event(self) -> Option<Result<StoredEvent, StoreError>> {
        Some(
            EventRow {
                id: self.id?,
                txid: self.txid?,
                case_id: self.case_id?,
                case_number: self.case_number?,
                account_id: self.account_id?,
                action: self.action?,
                actor: self.actor?,
                occur_time: self.occur_time?,
                etag: self.etag?,
                changes: self.changes?,
                comment: self.comment,
                details: self.details,
            }
            .into_event(),
        )
    }
}

/// Where the event log stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// Every transaction before it has ended: streams read below it.
    pub horizon: EventPosition,
    /// No event is at or after it yet (the next transaction id): a cursor
    /// past it was not issued by this database. Cursors between the
    /// horizon and here are valid — a snapshot's marker is one.
    pub next: EventPosition,
    /// Every event at or before this position has been pruned.
    pub pruned_through: EventPosition,
}

statement! {
    /// The log's horizon, end and pruning mark.
    struct Bounds {}
    "WITH s AS MATERIALIZED (SELECT pg_current_snapshot() AS s) \
     SELECT pg_snapshot_xmin(s.s)::text::bigint AS horizon, \
            pg_snapshot_xmax(s.s)::text::bigint AS next, \
            r.pruned_through_txid, r.pruned_through_id \
     FROM s CROSS JOIN case_event_retention r"
}

#[derive(QueryableByName)]
struct Horizon {
    #[diesel(sql_type = BigInt)]
    horizon: i64,
    #[diesel(sql_type = BigInt)]
    next: i64,
    #[diesel(sql_type = BigInt)]
    pruned_through_txid: i64,
    #[diesel(sql_type = BigInt)]
    pruned_through_id: i64,
}

statement! {
    /// This statement's snapshot (the transaction's, when it is the first
    /// statement of a repeatable-read transaction).
    struct CurrentSnapshot {}
    "WITH s AS MATERIALIZED (SELECT pg_current_snapshot() AS s) \
     SELECT pg_snapshot_xmin(s.s)::text::bigint AS xmin, \
            pg_snapshot_xmax(s.s)::text::bigint AS xmax, \
            ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(s.s) AS x ORDER BY 1) \
              AS in_progress \
     FROM s"
}

#[derive(QueryableByName)]
struct SnapshotRow {
    #[diesel(sql_type = BigInt)]
    xmin: i64,
    #[diesel(sql_type = BigInt)]
    xmax: i64,
    #[diesel(sql_type = Array<BigInt>)]
    in_progress: Vec<i64>,
}

impl SnapshotRow {
    /// The stream position of this snapshot: after everything it shows.
    fn position(self) -> StreamPosition {
        StreamPosition::after_snapshot(self.xmin, self.xmax, self.in_progress)
    }
}

/// A snapshot taken, whose cases are still to be read: it holds a
/// connection (and a repeatable-read transaction) until they are.
pub struct Snapshot {
    session: Session,
    position: StreamPosition,
}

impl Snapshot {
    /// The stream position of the snapshot: a stream from there gets
    /// exactly the events the snapshot does not show.
    pub fn position(&self) -> &StreamPosition {
        &self.position
    }

    /// Reads the cases passing `filter` as of the snapshot, in pages of
    /// `page` cases handed to `sink` (until it says stop), and returns the
    /// snapshot's stream position.
    pub async fn read_cases<F, Fut>(
        mut self,
        filter: &EventFilter,
        page: usize,
        mut sink: F,
    ) -> Result<StreamPosition, StoreError>
    where
        F: FnMut(Vec<Case>) -> Fut + Send,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let session = &mut self.session;
        let result = async {
            let mut after: Option<Uuid> = None;
            let limit = i64::try_from(page).unwrap_or(i64::MAX);
            loop {
                let rows: Vec<CaseLineRow> = session
                    .rows(CasesWithLines {
                        cases: SnapshotCases {
                            filter,
                            after,
                            limit,
                        },
                    })
                    .await?;
                let cases = cases_of(rows, PageOrder::ById)?;
                let done = cases.len() < page;
                after = cases.last().map(|case| case.id);
                if !cases.is_empty() && !sink(cases).await {
                    break;
                }
                if done {
                    break;
                }
            }
            Ok::<_, StoreError>(())
        }
        .await;
        let position = self.position;
        self.session.finish(result.map(|()| position)).await
    }

    /// Ends the snapshot without reading it.
    pub async fn abandon(self) {
        let _ = self.session.finish(Ok(())).await;
    }
}

impl Store {
    /// Up to `limit` events after `from` that pass `filter`, below the
    /// horizon, with the horizon and the pruning mark — one statement, so the
    /// horizon is the one the events were read below.
    ///
    /// `LIMIT 1` on the one-row retention table keeps the planner's row
    /// estimate (and so the plan's cost) honest: an unanalysed table counts
    /// as ~1800 rows, which once priced this short read like a report.
    pub async fn read_log(
        &self,
        from: &StreamPosition,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<LogPage, StoreError> {
        let mut session = self.session(None, Mode::ReadOnly).await?;
        let after = from.after;
        let accounts = filter.accounts.as_deref();
        let (shown_xmax, shown_in_progress) = match &from.shown {
            Some(shown) => (Some(shown.xmax), shown.in_progress.as_slice()),
            None => (None, &[][..]),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<LogRow> = match (filter.case_id, &filter.account_id) {
            (Some(case_id), _) => {
                session
                    .rows(ReadCaseLog {
                        case_id,
                        account_id: filter.account_id.as_deref(),
                        after_txid: after.txid,
                        after_id: after.id,
                        accounts,
                        shown_xmax,
                        shown_in_progress,
                        limit,
                        bytes: LOG_PAGE_BYTES,
                    })
                    .await?
            }
            (None, Some(account_id)) => {
                session
                    .rows(ReadAccountLog {
                        account_id,
                        after_txid: after.txid,
                        after_id: after.id,
                        accounts,
                        shown_xmax,
                        shown_in_progress,
                        limit,
                        bytes: LOG_PAGE_BYTES,
                    })
                    .await?
            }
            (None, None) => {
                session
                    .rows(ReadLog {
                        after_txid: after.txid,
                        after_id: after.id,
                        accounts,
                        shown_xmax,
                        shown_in_progress,
                        limit,
                        bytes: LOG_PAGE_BYTES,
                    })
                    .await?
            }
        };
        let Some(first) = <[LogRow]>::first(&rows) else {
            return Err(StoreError::Corrupt(
                "the event log read returned no row".into(),
            ));
        };
        let horizon = EventPosition {
            txid: first.horizon,
            id: 0,
        };
        let fetched = usize::try_from(first.fetched.unwrap_or(0)).unwrap_or(usize::MAX);
        let pruned_through = EventPosition {
            txid: first.pruned_through_txid,
            id: first.pruned_through_id,
        };
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let events = rows
            .into_iter()
            .filter_map(LogRow::event)
            .collect::<Result<Vec<_>, _>>()?;
        // More follow when the limit was reached or the byte budget cut the
        // page short.
        let more = !events.is_empty() && (fetched >= limit || events.len() < fetched);
        Ok(LogPage {
            events,
            more,
            horizon,
            pruned_through,
        })
    }

    /// The current horizon, end and pruning mark of the log.
    pub async fn log_bounds(&self) -> Result<LogBounds, StoreError> {
        let mut session = self.session(None, Mode::ReadOnly).await?;
        let row: Horizon = session.row(Bounds {}).await?;
        Ok(LogBounds {
            horizon: EventPosition {
                txid: row.horizon,
                id: 0,
            },
            next: EventPosition {
                txid: row.next,
                id: 0,
            },
            pruned_through: EventPosition {
                txid: row.pruned_through_txid,
                id: row.pruned_through_id,
            },
        })
    }

    /// The stream position of this instant: a stream from here gets every
    /// event committed after the call and none committed before — the
    /// events of this instant's snapshot are skipped, however their
    /// transaction ids interleave with those still running. No lock: writers
    /// never wait for a stream to open.
    pub async fn stream_now(&self) -> Result<StreamPosition, StoreError> {
        let mut session = self.session(None, Mode::ReadOnly).await?;
        let row: SnapshotRow = session.row(CurrentSnapshot {}).await?;
        Ok(row.position())
    }

    /// Reads the cases passing `filter` as of one snapshot, in pages of
    /// `page` cases handed to `sink`, and returns the stream position of
    /// that snapshot: a stream from there gets exactly the events the
    /// snapshot does not show. No lock: writers never wait for it.
    pub async fn snapshot_cases<F, Fut>(
        &self,
        filter: &EventFilter,
        page: usize,
        sink: F,
    ) -> Result<StreamPosition, StoreError>
    where
        F: FnMut(Vec<Case>) -> Fut + Send,
        Fut: std::future::Future<Output = bool> + Send,
    {
        self.begin_snapshot()
            .await?
            .read_cases(filter, page, sink)
            .await
    }

    /// Takes a snapshot (one statement, on a connection it keeps) whose
    /// cases [`Snapshot::read_cases`] reads: its stream position is known
    /// before any case is read.
    pub async fn begin_snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut session = self.snapshot_session().await?;
        // The first statement fixes the transaction's snapshot.
        match session.row::<_, SnapshotRow>(CurrentSnapshot {}).await {
            Ok(snapshot) => Ok(Snapshot {
                session,
                position: snapshot.position(),
            }),
            Err(e) => session.finish(Err(e)).await,
        }
    }

    /// Prunes events older than `cutoff`, as a prefix of the stream order
    /// below the horizon, in batches of at most `batch` events — each its
    /// own short transaction, so that pruning never holds the horizon (and
    /// every stream) back for long — and records how far it pruned.
    /// Returns the number of events deleted.
    pub async fn prune_events(
        &self,
        cutoff: DateTime<Utc>,
        batch: usize,
    ) -> Result<usize, StoreError> {
        let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let mut deleted = 0;
        loop {
            let mut session = self.session(None, Mode::ReadWrite).await?;
            let round: Pruned = session.row(PruneBatch { cutoff, batch }).await?;
            deleted += usize::try_from(round.deleted).unwrap_or(0);
            if round.deleted < batch || round.reached_cutoff {
                return Ok(deleted);
            }
        }
    }
}

statement! {
    /// Deletes the oldest events below the horizon, at most `batch`, up to
    /// the first one not older than `cutoff`, and moves the pruning mark.
    struct PruneBatch {
        cutoff: Timestamptz = DateTime<Utc>,
        batch: BigInt = i64,
    }
    "WITH candidates AS MATERIALIZED ( \
         SELECT txid, id, occur_time FROM case_events \
         WHERE txid < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY txid, id LIMIT $batch), \
     newer AS ( \
         SELECT txid, id FROM candidates WHERE occur_time >= $cutoff \
         ORDER BY txid, id LIMIT 1), \
     last AS ( \
         SELECT c.txid, c.id FROM candidates c \
         WHERE NOT EXISTS (SELECT FROM newer n WHERE (c.txid, c.id) >= (n.txid, n.id)) \
         ORDER BY c.txid DESC, c.id DESC LIMIT 1), \
     gone AS ( \
         DELETE FROM case_events e USING last \
         WHERE (e.txid, e.id) <= (last.txid, last.id) \
         RETURNING e.id), \
     mark AS ( \
         UPDATE case_event_retention r \
         SET pruned_through_txid = last.txid::text::bigint, pruned_through_id = last.id \
         FROM last \
         WHERE (r.pruned_through_txid, r.pruned_through_id) \
               < (last.txid::text::bigint, last.id) \
         RETURNING 1) \
     SELECT (SELECT count(*) FROM gone) AS deleted, \
            EXISTS (SELECT FROM newer) AS reached_cutoff"
}

#[derive(QueryableByName)]
struct Pruned {
    #[diesel(sql_type = BigInt)]
    deleted: i64,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    reached_cutoff: bool,
}

/// One page of snapshot cases (their case columns), by id.
struct SnapshotCases<'a> {
    filter: &'a EventFilter,
    after: Option<Uuid>,
    limit: i64,
}

impl QueryId for SnapshotCases<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl QueryFragment<Pg> for SnapshotCases<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT * FROM invoice_cases WHERE true");
        if let Some(id) = &self.filter.case_id {
            out.push_sql(" AND id = ");
            out.push_bind_param::<SqlUuid, _>(id)?;
        }
        if let Some(account) = &self.filter.account_id {
            out.push_sql(" AND account_id = ");
            out.push_bind_param::<Text, _>(account)?;
        }
        if let Some(accounts) = &self.filter.accounts {
            out.push_sql(" AND account_id = ANY(");
            out.push_bind_param::<Array<Text>, _>(accounts)?;
            out.push_sql(")");
        }
        if let Some(after) = &self.after {
            out.push_sql(" AND id > ");
            out.push_bind_param::<SqlUuid, _>(after)?;
        }
        out.push_sql(" ORDER BY id LIMIT ");
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        Ok(())
    }
}
