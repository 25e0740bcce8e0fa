//! Durable named subscriptions: a watch whose position PostgreSQL keeps.
//!
//! A subscription is created by the first watch that names it, with that
//! watch's filters and start; its subscriber acknowledges cursors, and a
//! later watch resumes after the last one. Every operation is one
//! statement, but creation (a transaction of two round trips: the owner's
//! lock, then the limit's count and the insert, so that concurrent
//! creations by one owner cannot pass the limit together).
//!
//! Positions are stream positions (see `event_log.rs`). The snapshot part
//! of a start after a snapshot (with_snapshot, from now) belongs to the
//! start and never changes; acknowledging moves only `(txid, id)`, and only
//! forward: the UPDATE's own condition compares the stored position with
//! the new one, so that concurrent acknowledgements through any replicas
//! can only move it forward. Two cursors of one subscription's stream
//! compare by their `(txid, id)` alone: they carry the same snapshot part
//! (until the stream has passed the snapshot, after which they carry none),
//! so the events behind a cursor grow with its `(txid, id)`. A cursor that
//! carries another snapshot (another stream's) is refused; a plain cursor
//! (a ListStateChanges event's, say) counts as the subscription's start
//! moved there.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use diesel::{
    QueryableByName,
    sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid},
};
use uuid::Uuid;

use super::{
    EventPosition, Store, StoreError, StreamPosition,
    session::{Mode, Session},
    stored::StartColumnsV1,
};

/// Most subscriptions one owner (token `sub`) may have.
pub const MAX_SUBSCRIPTIONS_PER_OWNER: usize = 100;

/// The notification channel a deletion notifies, with the deleted
/// subscription's id as payload: every replica's watch listener hears it
/// and ends the subscription's streams.
pub const SUBSCRIPTIONS_CHANNEL: &str = "invoice_case_subscriptions";

/// The advisory lock namespace of creating an owner's subscriptions (next
/// to the event log's 470441472-470441474).
const OWNER_LOCK: i32 = 470_441_475;

/// A durable subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: Uuid,
    pub name: String,
    /// The token `sub` that created it.
    pub owner: String,
    /// The case filter it was created with.
    pub case_id: Option<Uuid>,
    /// The account filter it was created with.
    pub account_id: Option<String>,
    /// Where its stream starts when nothing was acknowledged.
    pub start: StreamPosition,
    /// Where a watch of it resumes: after the last acknowledged position
    /// (its start when nothing was).
    pub position: StreamPosition,
    pub create_time: DateTime<Utc>,
    /// When a cursor was last acknowledged.
    pub acknowledge_time: Option<DateTime<Utc>>,
}

/// What the first watch naming a subscription creates.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub name: String,
    pub owner: String,
    pub case_id: Option<Uuid>,
    pub account_id: Option<String>,
    pub start: StreamPosition,
}

/// What creating a subscription came to.
#[derive(Debug, Clone)]
pub enum Creation {
    /// Created as asked.
    Created(Subscription),
    /// The same owner created it meanwhile (another first watch).
    Existing(Subscription),
}

/// A page of subscriptions, by name.
#[derive(Debug, Clone)]
pub struct SubscriptionPage {
    pub subscriptions: Vec<Subscription>,
    /// The last name of the page, when more follow.
    pub next_after: Option<String>,
}

/// Why a subscription operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// No such subscription, or one of another owner.
    #[error("subscription not found")]
    NotFound,
    /// The owner has the most subscriptions it may have.
    #[error("the owner has {limit} subscriptions, the most it may have")]
    LimitReached { limit: usize },
    /// The cursor lies before the subscription's start.
    #[error("the cursor is before the subscription's start")]
    CursorBeforeStart,
    /// The cursor lies past every transaction the database has started.
    #[error("the cursor is ahead of the event log")]
    CursorAhead,
    /// The cursor carries the snapshot of another stream.
    #[error("the cursor belongs to another stream")]
    CursorOfAnotherStream,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The columns of a subscription, in the order every statement here
/// selects them (`$p` prefixes each).
macro_rules! columns {
    ($p:literal) => {
        concat!(
            $p,
            "id, ",
            $p,
            "name, ",
            $p,
            "owner, ",
            $p,
            "case_id, ",
            $p,
            "account_id, ",
            $p,
            "start_txid, ",
            $p,
            "start_id, ",
            $p,
            "snapshot_xmax, ",
            $p,
            "snapshot_in_progress, ",
            $p,
            "position_txid, ",
            $p,
            "position_id, ",
            $p,
            "create_time, ",
            $p,
            "acknowledge_time"
        )
    };
}

#[derive(QueryableByName, Debug)]
struct SubscriptionRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    owner: String,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    case_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    account_id: Option<String>,
    #[diesel(sql_type = BigInt)]
    start_txid: i64,
    #[diesel(sql_type = BigInt)]
    start_id: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    snapshot_xmax: Option<i64>,
    #[diesel(sql_type = Array<BigInt>)]
    snapshot_in_progress: Vec<i64>,
    #[diesel(sql_type = BigInt)]
    position_txid: i64,
    #[diesel(sql_type = BigInt)]
    position_id: i64,
    #[diesel(sql_type = Timestamptz)]
    create_time: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    acknowledge_time: Option<DateTime<Utc>>,
}

impl SubscriptionRow {
    fn into_subscription(self) -> Result<Subscription, StoreError> {
        let start = StartColumnsV1 {
            start_txid: self.start_txid,
            start_id: self.start_id,
            snapshot_xmax: self.snapshot_xmax,
            snapshot_in_progress: self.snapshot_in_progress,
        };
        Ok(Subscription {
            id: self.id,
            name: self.name,
            owner: self.owner,
            case_id: self.case_id,
            account_id: self.account_id,
            position: start.position(self.position_txid, self.position_id)?,
            start: start.position(start.start_txid, start.start_id)?,
            create_time: self.create_time,
            acknowledge_time: self.acknowledge_time,
        })
    }
}

statement! {
    /// A subscription by name, with the event log's pruning mark.
    struct FindSubscription<'a> {
        name: Text = &'a str,
    }
    concat!(
        "SELECT ", columns!("s."), ", r.pruned_through_txid, r.pruned_through_id \
         FROM subscriptions s CROSS JOIN case_event_retention r \
         WHERE s.name = $name"
    )
}

#[derive(QueryableByName)]
struct FoundRow {
    #[diesel(embed)]
    subscription: SubscriptionRow,
    #[diesel(sql_type = BigInt)]
    pruned_through_txid: i64,
    #[diesel(sql_type = BigInt)]
    pruned_through_id: i64,
}

statement! {
    /// Holds the lock of creating `owner`'s subscriptions to the end of the
    /// transaction.
    struct LockOwner<'a> {
        namespace: diesel::sql_types::Integer = i32,
        owner: Text = &'a str,
    }
    "SELECT pg_advisory_xact_lock($namespace, hashtext($owner)) IS NULL AS locked"
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    #[allow(dead_code)]
    locked: bool,
}

statement! {
    /// Inserts a subscription unless its owner has `limit` or its name is
    /// taken; returns it when inserted.
    struct InsertSubscription<'a> {
        id: SqlUuid = Uuid,
        name: Text = &'a str,
        owner: Text = &'a str,
        case_id: Nullable<SqlUuid> = Option<Uuid>,
        account_id: Nullable<Text> = Option<&'a str>,
        start_txid: BigInt = i64,
        start_id: BigInt = i64,
        snapshot_xmax: Nullable<BigInt> = Option<i64>,
        snapshot_in_progress: Array<BigInt> = &'a [i64],
        create_time: Timestamptz = DateTime<Utc>,
        limit: BigInt = i64,
    }
    concat!(
        "WITH owned AS MATERIALIZED ( \
             SELECT count(*) AS n FROM subscriptions WHERE owner = $owner), \
         ins AS ( \
             INSERT INTO subscriptions (", columns!(""), ") \
             SELECT $id, $name, $owner, $case_id, $account_id, $start_txid, $start_id, \
                    $snapshot_xmax, $snapshot_in_progress, $start_txid, $start_id, \
                    $create_time, NULL \
             FROM owned WHERE owned.n < $limit \
             ON CONFLICT (name) DO NOTHING \
             RETURNING ", columns!(""), ") \
         SELECT ", columns!("ins."), " FROM ins"
    )
}

statement! {
    /// How many subscriptions `owner` has.
    struct OwnedCount<'a> {
        owner: Text = &'a str,
    }
    "SELECT count(*) AS n FROM subscriptions WHERE owner = $owner"
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

statement! {
    /// Moves `owner`'s subscription `name` forward to `(txid, id)` if that
    /// is after its position, not past the log's end, and (for a cursor
    /// with a snapshot part) of the subscription's own stream; returns the
    /// subscription as it is then, with why it did not move.
    struct Acknowledge<'a> {
        name: Text = &'a str,
        owner: Text = &'a str,
        txid: BigInt = i64,
        id: BigInt = i64,
        shown_xmax: Nullable<BigInt> = Option<i64>,
        shown_in_progress: Array<BigInt> = &'a [i64],
        now: Timestamptz = DateTime<Utc>,
    }
    concat!(
        "WITH b AS MATERIALIZED ( \
             SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next), \
         s AS MATERIALIZED ( \
             SELECT * FROM subscriptions WHERE name = $name AND owner = $owner), \
         u AS ( \
             UPDATE subscriptions t \
             SET position_txid = $txid, position_id = $id, acknowledge_time = $now \
             FROM b \
             WHERE t.name = $name AND t.owner = $owner \
               AND (t.position_txid, t.position_id) < ($txid, $id) \
               AND ($txid, $id) <= (b.next, 0) \
               AND ($shown_xmax::bigint IS NULL \
                    OR (t.snapshot_xmax = $shown_xmax \
                        AND $shown_in_progress::bigint[] = ARRAY( \
                            SELECT x FROM unnest(t.snapshot_in_progress) AS x \
                            WHERE x >= $txid ORDER BY x))) \
             RETURNING ", columns!("t."), ") \
         SELECT true AS acknowledged, false AS before_start, false AS ahead, \
                false AS foreign_snapshot, ", columns!("u."), " FROM u \
         UNION ALL \
         SELECT false, ($txid, $id) < (s.start_txid, s.start_id), ($txid, $id) > (b.next, 0), \
                $shown_xmax::bigint IS NOT NULL \
                AND NOT coalesce(s.snapshot_xmax = $shown_xmax \
                    AND $shown_in_progress::bigint[] = ARRAY( \
                        SELECT x FROM unnest(s.snapshot_in_progress) AS x \
                        WHERE x >= $txid ORDER BY x), false), ",
        columns!("s."), " FROM s CROSS JOIN b WHERE NOT EXISTS (SELECT FROM u)"
    )
}

#[derive(QueryableByName)]
struct AcknowledgedRow {
    #[diesel(sql_type = Bool)]
    acknowledged: bool,
    #[diesel(sql_type = Bool)]
    before_start: bool,
    #[diesel(sql_type = Bool)]
    ahead: bool,
    #[diesel(sql_type = Bool)]
    foreign_snapshot: bool,
    #[diesel(embed)]
    subscription: SubscriptionRow,
}

statement! {
    /// A page of subscriptions after `after` (by name).
    struct ListSubscriptions<'a> {
        after: Text = &'a str,
        limit: BigInt = i64,
    }
    concat!(
        "SELECT ", columns!(""), " FROM subscriptions WHERE name > $after \
         ORDER BY name LIMIT $limit"
    )
}

statement! {
    /// Deletes a subscription and tells every replica's listener.
    struct DeleteSubscription<'a> {
        name: Text = &'a str,
    }
    // The channel is SUBSCRIPTIONS_CHANNEL.
    "WITH gone AS (DELETE FROM subscriptions WHERE name = $name RETURNING id), \
     told AS (SELECT pg_notify('invoice_case_subscriptions', id::text) FROM gone) \
     SELECT count(*) + 0 * (SELECT count(*) FROM told) AS n FROM gone"
}

statement! {
    /// Whether the subscription `id` still exists.
    struct SubscriptionExists {
        id: SqlUuid = Uuid,
    }
    "SELECT count(*) AS n FROM subscriptions WHERE id = $id"
}

/// The server's clock, at the database's precision.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl Store {
    /// The subscription `name`, if there is one, with the event log's
    /// pruning mark (every event at or before it is gone): one indexed
    /// read.
    pub async fn find_subscription(
        &self,
        name: &str,
    ) -> Result<Option<(Subscription, EventPosition)>, StoreError> {
        let mut session = self.session(None, Mode::ReadOnly).await?;
        let rows: Result<Vec<FoundRow>, StoreError> = session.rows(FindSubscription { name }).await;
        let Some(row) = session.finish(rows).await?.into_iter().next() else {
            return Ok(None);
        };
        let pruned_through = EventPosition {
            txid: row.pruned_through_txid,
            id: row.pruned_through_id,
        };
        Ok(Some((
            row.subscription.into_subscription()?,
            pruned_through,
        )))
    }

    /// Creates `new`, unless its owner has [`MAX_SUBSCRIPTIONS_PER_OWNER`]
    /// subscriptions, or its name is taken: by the same owner meanwhile
    /// (then that one is returned), or by another owner (NotFound: the
    /// other's subscription is not told apart from none).
    pub async fn create_subscription(
        &self,
        new: &NewSubscription,
    ) -> Result<Creation, SubscriptionError> {
        let mut session = self.transaction().await?;
        match create_in(&mut session, new).await {
            Ok(creation) => Ok(session.finish(Ok(creation)).await?),
            Err(SubscriptionError::Store(e)) => Ok(session.finish(Err(e)).await?),
            // A refusal wrote nothing: end the transaction (and the lock).
            Err(refused) => {
                session.finish(Ok(())).await?;
                Err(refused)
            }
        }
    }

    /// Acknowledges `cursor` for `owner`'s subscription `name` (see the
    /// module's comment): one statement. A cursor at or before the
    /// position changes nothing; the subscription is returned as it is.
    pub async fn acknowledge(
        &self,
        name: &str,
        owner: &str,
        cursor: &StreamPosition,
        timeout: Option<Duration>,
    ) -> Result<Subscription, SubscriptionError> {
        let (shown_xmax, shown_in_progress) = match &cursor.shown {
            Some(shown) => (Some(shown.xmax), shown.in_progress.as_slice()),
            None => (None, &[][..]),
        };
        let mut session = self.session(timeout, Mode::ReadWrite).await?;
        let rows: Result<Vec<AcknowledgedRow>, StoreError> = session
            .rows(Acknowledge {
                name,
                owner,
                txid: cursor.after.txid,
                id: cursor.after.id,
                shown_xmax,
                shown_in_progress,
                now: now(),
            })
            .await;
        let Some(row) = session.finish(rows).await?.into_iter().next() else {
            return Err(SubscriptionError::NotFound);
        };
        if !row.acknowledged {
            if row.before_start {
                return Err(SubscriptionError::CursorBeforeStart);
            }
            if row.ahead {
                return Err(SubscriptionError::CursorAhead);
            }
            if row.foreign_snapshot {
                return Err(SubscriptionError::CursorOfAnotherStream);
            }
        }
        Ok(row.subscription.into_subscription()?)
    }

    /// Up to `limit` subscriptions after the name `after`, by name.
    pub async fn list_subscriptions(
        &self,
        after: Option<&str>,
        limit: usize,
        timeout: Option<Duration>,
    ) -> Result<SubscriptionPage, StoreError> {
        let mut session = self.session(timeout, Mode::ReadOnly).await?;
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let rows: Result<Vec<SubscriptionRow>, StoreError> = session
            .rows(ListSubscriptions {
                after: after.unwrap_or(""),
                limit: fetch,
            })
            .await;
        let mut subscriptions = session
            .finish(rows)
            .await?
            .into_iter()
            .map(SubscriptionRow::into_subscription)
            .collect::<Result<Vec<_>, _>>()?;
        let more = subscriptions.len() > limit;
        subscriptions.truncate(limit);
        let next_after = more
            .then(|| subscriptions.last().map(|s| s.name.clone()))
            .flatten();
        Ok(SubscriptionPage {
            subscriptions,
            next_after,
        })
    }

    /// Deletes the subscription `name`; every replica's watch listener is
    /// told in the same statement (a notification on
    /// [`SUBSCRIPTIONS_CHANNEL`]), and ends its streams.
    pub async fn delete_subscription(
        &self,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<(), SubscriptionError> {
        let mut session = self.session(timeout, Mode::ReadWrite).await?;
        let count: Result<Count, StoreError> = session.row(DeleteSubscription { name }).await;
        match session.finish(count).await?.n {
            0 => Err(SubscriptionError::NotFound),
            _ => Ok(()),
        }
    }

    /// Whether the subscription `id` still exists.
    pub async fn subscription_exists(&self, id: Uuid) -> Result<bool, StoreError> {
        let mut session = self.session(None, Mode::ReadOnly).await?;
        let count: Result<Count, StoreError> = session.row(SubscriptionExists { id }).await;
        Ok(session.finish(count).await?.n > 0)
    }
}

/// The statements of a creation, in its transaction.
async fn create_in(
    session: &mut Session,
    new: &NewSubscription,
) -> Result<Creation, SubscriptionError> {
    let start = StartColumnsV1::of(&new.start);
    let limit = i64::try_from(MAX_SUBSCRIPTIONS_PER_OWNER).unwrap_or(i64::MAX);
    // One round trip: the lock, then (on a snapshot taken after it, in READ
    // COMMITTED) the count and the insert.
    let (_, inserted): (Vec<Locked>, Vec<SubscriptionRow>) = session
        .rows2(
            LockOwner {
                namespace: OWNER_LOCK,
                owner: &new.owner,
            },
            InsertSubscription {
                id: Uuid::now_v7(),
                name: &new.name,
                owner: &new.owner,
                case_id: new.case_id,
                account_id: new.account_id.as_deref(),
                start_txid: start.start_txid,
                start_id: start.start_id,
                snapshot_xmax: start.snapshot_xmax,
                snapshot_in_progress: &start.snapshot_in_progress,
                create_time: now(),
                limit,
            },
        )
        .await?;
    if let Some(row) = inserted.into_iter().next() {
        return Ok(Creation::Created(row.into_subscription()?));
    }
    // Not inserted: the name is taken (by a creation that committed
    // meanwhile, which this statement sees), or the owner is at the limit.
    let (owned, found): (Vec<Count>, Vec<FoundRow>) = session
        .rows2(
            OwnedCount { owner: &new.owner },
            FindSubscription { name: &new.name },
        )
        .await?;
    match found.into_iter().next() {
        Some(row) if row.subscription.owner == new.owner => {
            Ok(Creation::Existing(row.subscription.into_subscription()?))
        }
        Some(_) => Err(SubscriptionError::NotFound),
        None if owned.first().is_some_and(|c| c.n >= limit) => {
            Err(SubscriptionError::LimitReached {
                limit: MAX_SUBSCRIPTIONS_PER_OWNER,
            })
        }
        // Taken and deleted again meanwhile: the caller may try again.
        None => Err(SubscriptionError::Store(StoreError::Contention)),
    }
}
