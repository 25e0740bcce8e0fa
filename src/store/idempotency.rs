//! Idempotency records: the first response to a request id, stored in the
//! action's transaction.

use diesel::prelude::*;
use uuid::Uuid;

use diesel::sql_types::{BigInt, Timestamptz};

use super::stored::StoredResponse;
use super::{
    StoreError,
    schema::idempotency_records,
    session::{Mode, Session},
    statement::statement,
};
use crate::domain::Case;

/// A mutating request's request id, what it must match on a retry, and how
/// its response is stored.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub request_id: Uuid,
    /// The RPC, e.g. `SubmitCase`.
    pub method: &'static str,
    /// A hash of the request message.
    pub fingerprint: Vec<u8>,
    /// The bytes of the response to a call that answers with `case`:
    /// stored with the action, and sent as they are on a retry.
    pub encode_response: fn(&Case) -> Vec<u8>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = idempotency_records, check_for_backend(diesel::pg::Pg))]
struct Record {
    actor: String,
    method: String,
    fingerprint: Vec<u8>,
    reply: Option<Vec<u8>>,
    response: Option<serde_json::Value>,
}

/// The stored response of an earlier request with this id, if any. A
/// record of another caller, RPC or request is refused.
pub(super) async fn find_in(
    session: &mut Session,
    key: &Idempotency,
    actor: &str,
) -> Result<Option<StoredResponse>, StoreError> {
    let records: Vec<Record> = session
        .rows(
            idempotency_records::table
                .find(key.request_id)
                .select(Record::as_select()),
        )
        .await?;
    let Some(record) = records.into_iter().next() else {
        return Ok(None);
    };
    if record.actor != actor || record.method != key.method || record.fingerprint != key.fingerprint
    {
        return Err(StoreError::RequestIdReused(key.request_id));
    }
    super::stored::response_from_columns(record.reply, record.response).map(Some)
}

statement! {
    /// Deletes at most `batch` records created before `cutoff`.
    struct PruneBatch {
        cutoff: Timestamptz = chrono::DateTime<chrono::Utc>,
        batch: BigInt = i64,
    }
    "WITH gone AS (DELETE FROM idempotency_records WHERE request_id IN ( \
         SELECT request_id FROM idempotency_records WHERE create_time < $cutoff \
         LIMIT $batch) RETURNING 1) \
     SELECT count(*) AS deleted FROM gone"
}

#[derive(QueryableByName)]
struct Pruned {
    #[diesel(sql_type = BigInt)]
    deleted: i64,
}

impl super::Store {
    /// Forgets request ids older than `retention`, in transactions of at
    /// most `batch` records; returns how many.
    pub async fn prune_idempotency_records(
        &self,
        retention: std::time::Duration,
        batch: usize,
    ) -> Result<usize, StoreError> {
        let cutoff = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|retention| chrono::Utc::now().checked_sub_signed(retention))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let mut deleted = 0;
        loop {
            let mut session = self.session(None, Mode::ReadWrite).await?;
            let round: Pruned = session.row(PruneBatch { cutoff, batch }).await?;
            deleted += usize::try_from(round.deleted).unwrap_or(0);
            if round.deleted < batch {
                return Ok(deleted);
            }
        }
    }
}
