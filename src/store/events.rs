//! The event log: one row per committed action, and a case's history.

use std::time::Duration;

use diesel::sql_types::{BigInt, Uuid as SqlUuid};
use uuid::Uuid;

use super::{
    Store, StoreError,
    rows::{EventRow, StoredEvent},
    session::Mode,
    statement::statement,
};

/// One page of a case's history.
#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    /// The id of the last event when more follow.
    pub next_after: Option<i64>,
}

statement! {
    /// A page of a case's events, oldest first.
    struct CaseEvents {
        case_id: SqlUuid = Uuid,
        after: BigInt = i64,
        limit: BigInt = i64,
    }
    "SELECT id, txid::text::bigint AS txid, case_id, case_number, account_id, action, actor, \
            occur_time, etag, changes, comment, details \
     FROM case_events WHERE case_id = $case_id AND id > $after ORDER BY id LIMIT $limit"
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
        let mut session = self.session(timeout, Mode::ReadOnly).await?;
        let rows: Result<Vec<EventRow>, StoreError> = session
            .rows(CaseEvents {
                case_id,
                after: after.unwrap_or(0),
                limit: fetch,
            })
            .await;
        let rows = session.finish(rows).await?;
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
