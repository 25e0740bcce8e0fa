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
    QueryableByName,
    sql_types::{Array, BigInt, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use super::{
    Store, StoreError, cases,
    rows::{CaseRow, EventPosition, EventRow, StoredEvent},
};
use crate::domain::Case;

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

#[derive(QueryableByName)]
struct SnapshotXmax {
    #[diesel(sql_type = BigInt)]
    xmax: i64,
}

/// The advisory lock event writers hold shared (see `lock_for_event`).
const EVENT_WRITERS_LOCK: (i32, i32) = (470_441_473, 0);

impl Store {
    /// Up to `limit` events after `after` that pass `filter`, below the
    /// horizon, with the horizon and the pruning mark — one statement, so the
    /// horizon is the one the events were read below.
    ///
    /// `LIMIT 1` on the one-row retention table keeps the planner's row
    /// estimate (and so the plan's cost) honest: an unanalysed table counts
    /// as ~1800 rows, which once priced this short read like a report.
    pub async fn read_log(
        &self,
        after: EventPosition,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<LogPage, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<LogRow> = diesel::sql_query(
            "WITH h AS MATERIALIZED ( \
                 SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) \
             SELECT h.xmin::text::bigint AS horizon, \
                    r.pruned_through_txid, r.pruned_through_id, e.fetched, \
                    e.id, e.txid::text::bigint AS txid, e.case_id, e.case_number, \
                    e.account_id, e.action, e.actor, e.occur_time, e.etag, e.changes, \
                    e.comment \
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
                         WHERE (e.txid, e.id) > ($1::text::xid8, $2) \
                           AND e.txid < h.xmin \
                           AND ($3::uuid IS NULL OR e.case_id = $3) \
                           AND ($4::text IS NULL OR e.account_id = $4) \
                           AND ($5::text[] IS NULL OR e.account_id = ANY($5)) \
                         ORDER BY e.txid, e.id \
                         LIMIT $6) l) w \
                 WHERE w.bytes_before < $7) e ON true \
             ORDER BY e.txid, e.id",
        )
        .bind::<Text, _>(after.txid.to_string())
        .bind::<BigInt, _>(after.id)
        .bind::<Nullable<SqlUuid>, _>(filter.case_id)
        .bind::<Nullable<Text>, _>(filter.account_id.as_deref())
        .bind::<Nullable<Array<Text>>, _>(filter.accounts.as_deref())
        .bind::<BigInt, _>(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind::<BigInt, _>(LOG_PAGE_BYTES)
        .load(&mut conn)
        .await?;
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
        let mut conn = self.conn().await?;
        let row: Horizon = diesel::sql_query(
            "WITH s AS MATERIALIZED (SELECT pg_current_snapshot() AS s) \
             SELECT pg_snapshot_xmin(s.s)::text::bigint AS horizon, \
                    pg_snapshot_xmax(s.s)::text::bigint AS next, \
                    r.pruned_through_txid, r.pruned_through_id \
             FROM s CROSS JOIN case_event_retention r",
        )
        .get_result(&mut conn)
        .await?;
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

    /// The position of this instant: every event committed before the call
    /// is before it, every event committed after is at or after it. A
    /// stream "from now" starts here; starting at the horizon instead would
    /// replay events that committed before the stream opened whenever an
    /// older transaction (anywhere on the server) was still running.
    ///
    /// Like a snapshot, it holds the event writers' lock exclusively for an
    /// instant, so no event writer is in flight when the transaction id
    /// counter is read: writers wait for that one statement.
    pub async fn log_now(&self) -> Result<EventPosition, StoreError> {
        let mut conn = self.conn().await?;
        let (class, object) = EVENT_WRITERS_LOCK;
        conn.transaction(async |conn| {
            diesel::sql_query(format!("SELECT pg_advisory_xact_lock({class}, {object})"))
                .execute(conn)
                .await?;
            // A statement of its own: its snapshot is taken after the lock.
            let xmax: SnapshotXmax = diesel::sql_query(
                "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax",
            )
            .get_result(conn)
            .await?;
            Ok(EventPosition {
                txid: xmax.xmax,
                id: 0,
            })
        })
        .await
    }

    /// Reads the cases passing `filter` as of one snapshot, in pages of
    /// `page` cases handed to `sink`, and returns the log position that
    /// snapshot stands at: it shows exactly the events before it.
    ///
    /// The snapshot is taken while holding the event writers' lock
    /// exclusively, so no event writer is in flight: every event with a txid
    /// below the snapshot's xmax is in it, every later one is not. Writers
    /// wait only for that instant (one statement).
    pub async fn snapshot_cases<F, Fut>(
        &self,
        filter: &EventFilter,
        page: usize,
        mut sink: F,
    ) -> Result<EventPosition, StoreError>
    where
        F: FnMut(Vec<Case>) -> Fut + Send,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let mut conn = self.conn().await?;
        let (class, object) = EVENT_WRITERS_LOCK;
        diesel::sql_query(format!("SELECT pg_advisory_lock({class}, {object})"))
            .execute(&mut conn)
            .await?;
        let filter = filter.clone();
        let result = conn
            .build_transaction()
            .repeatable_read()
            .read_only()
            .run(async |conn| {
                // The first statement fixes the transaction's snapshot.
                let xmax: SnapshotXmax = diesel::sql_query(
                    "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax",
                )
                .get_result(conn)
                .await?;
                diesel::sql_query(format!("SELECT pg_advisory_unlock({class}, {object})"))
                    .execute(conn)
                    .await?;
                let mut after: Option<Uuid> = None;
                loop {
                    let cases = snapshot_page(conn, &filter, after, page).await?;
                    let done = cases.len() < page;
                    after = cases.last().map(|case| case.id);
                    if !cases.is_empty() && !sink(cases).await {
                        break;
                    }
                    if done {
                        break;
                    }
                }
                Ok::<_, StoreError>(EventPosition {
                    txid: xmax.xmax,
                    id: 0,
                })
            })
            .await;
        if result.is_err() {
            // The session lock may still be held: never give this
            // connection back to the pool.
            let _ = diesel_async::pooled_connection::deadpool::Object::take(conn);
        }
        result
    }

    /// Prunes events older than `cutoff` (only below the horizon, and only
    /// as a prefix of the stream order), and records how far it pruned.
    /// Returns the number of events deleted.
    pub async fn prune_events(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        #[derive(QueryableByName)]
        struct Deleted {
            #[diesel(sql_type = BigInt)]
            deleted: i64,
        }
        let mut conn = self.conn().await?;
        let deleted: Deleted = conn
            .transaction(async |conn| {
                diesel::sql_query(
                    "WITH last AS ( \
                         SELECT txid, id FROM case_events \
                         WHERE occur_time < $1 \
                           AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
                         ORDER BY txid DESC, id DESC LIMIT 1), \
                     gone AS ( \
                         DELETE FROM case_events e USING last \
                         WHERE (e.txid, e.id) <= (last.txid, last.id) \
                         RETURNING e.id), \
                     mark AS ( \
                         UPDATE case_event_retention r \
                         SET pruned_through_txid = last.txid::text::bigint, \
                             pruned_through_id = last.id \
                         FROM last \
                         WHERE (r.pruned_through_txid, r.pruned_through_id) \
                               < (last.txid::text::bigint, last.id) \
                         RETURNING 1) \
                     SELECT (SELECT count(*) FROM gone) AS deleted",
                )
                .bind::<Timestamptz, _>(cutoff)
                .get_result(conn)
                .await
            })
            .await?;
        Ok(usize::try_from(deleted.deleted).unwrap_or(0))
    }
}

/// One page of snapshot cases, ordered by id, with their lines.
async fn snapshot_page(
    conn: &mut diesel_async::AsyncPgConnection,
    filter: &EventFilter,
    after: Option<Uuid>,
    limit: usize,
) -> Result<Vec<Case>, StoreError> {
    use diesel::{ExpressionMethods, QueryDsl, SelectableHelper};

    use super::schema::invoice_cases;

    let mut query = invoice_cases::table
        .select(CaseRow::as_select())
        .into_boxed::<diesel::pg::Pg>();
    if let Some(id) = filter.case_id {
        query = query.filter(invoice_cases::id.eq(id));
    }
    if let Some(account) = &filter.account_id {
        query = query.filter(invoice_cases::account_id.eq(account.clone()));
    }
    if let Some(accounts) = &filter.accounts {
        query = query.filter(invoice_cases::account_id.eq_any(accounts.clone()));
    }
    if let Some(after) = after {
        query = query.filter(invoice_cases::id.gt(after));
    }
    let rows: Vec<CaseRow> = query
        .order(invoice_cases::id.asc())
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
        .load(conn)
        .await?;
    cases::with_lines(conn, rows).await
}
