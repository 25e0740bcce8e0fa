//! The event log: one row per committed action, and a case's history.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use uuid::Uuid;

use std::time::Duration;

use super::{
    MutationMeta, Store, StoreError,
    cases::set_local_timeout,
    rows::{EventRow, NewEventRow, StoredEvent},
    schema::case_events,
};
use crate::domain::Decision;

/// One page of a case's history.
#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    /// The id of the last event when more follow.
    pub next_after: Option<i64>,
}

/// Writes the event of a decision, in the action's transaction.
pub(super) async fn insert(
    conn: &mut AsyncPgConnection,
    decision: &Decision,
    meta: &MutationMeta,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let case = &decision.case;
    let changes = serde_json::to_value(&decision.changes)
        .map_err(|e| StoreError::Corrupt(format!("event changes: {e}")))?;
    diesel::insert_into(case_events::table)
        .values(NewEventRow {
            case_id: case.id,
            case_number: &case.number,
            account_id: &case.account_id,
            action: decision.action.as_str(),
            actor: &meta.actor,
            occur_time: now,
            etag: case.etag(),
            changes,
            comment: meta.comment.as_deref(),
        })
        .execute(conn)
        .await?;
    Ok(())
}

impl Store {
    /// A case's events in commit order, after the event `after` (an id from
    /// an earlier page). The caller has checked that it may see the case.
    /// A `timeout` (the client's deadline) bounds the read.
    pub async fn list_events(
        &self,
        case_id: Uuid,
        after: Option<i64>,
        limit: usize,
        timeout: Option<Duration>,
    ) -> Result<EventPage, StoreError> {
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let load = async |conn: &mut AsyncPgConnection| -> Result<Vec<EventRow>, StoreError> {
            Ok(case_events::table
                .filter(case_events::case_id.eq(case_id))
                .filter(case_events::id.gt(after.unwrap_or(0)))
                .order(case_events::id.asc())
                .limit(fetch)
                .select(EventRow::as_select())
                .load(conn)
                .await?)
        };
        let mut conn = self.conn().await?;
        let rows = match timeout {
            None => load(&mut conn).await?,
            Some(timeout) => {
                conn.build_transaction()
                    .read_only()
                    .run(async |conn| {
                        set_local_timeout(conn, timeout).await?;
                        load(conn).await
                    })
                    .await?
            }
        };
        let more = rows.len() > limit;
        let events = rows
            .into_iter()
            .take(limit)
            .map(EventRow::into_event)
            .collect::<Result<Vec<_>, _>>()?;
        let next_after = if more {
            events.last().map(|e| e.position.id)
        } else {
            None
        };
        Ok(EventPage { events, next_after })
    }
}
