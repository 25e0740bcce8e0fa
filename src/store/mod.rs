//! PostgreSQL storage: every action reads its case (one statement), lets the
//! domain decide, and writes the changed rows, the event and the
//! idempotency record together (one statement, one transaction) — if the
//! case is still as it was read; else it reads and decides again.
//!
//! Error policy: queries return [`StoreError`]; the API layer maps it to a
//! gRPC status in one place. Database causes are kept for the log and never
//! sent to clients.

mod cases;
mod event_log;
mod events;
mod idempotency;
mod load;
mod pool;
mod recent;
pub mod rows;
pub mod schema;
mod session;
#[macro_use]
mod statement;
mod stored;
mod subscriptions;
mod write;

use diesel::result::DatabaseErrorKind;
use uuid::Uuid;

pub use cases::{Answer, CaseFilter, CasePage, CasePageKey, Comparison, MutationMeta, Request};
pub use event_log::{EventFilter, LogBounds, LogPage, Shown, Snapshot, StreamPosition};
pub use events::EventPage;
pub use idempotency::Idempotency;
pub use pool::{PoolSettings, Store, connect, connection_config, run_migrations};
pub use rows::{EventPosition, StoredEvent};
pub use stored::StoredResponse;
pub use subscriptions::{
    Creation, MAX_SUBSCRIPTIONS_PER_OWNER, NewSubscription, SUBSCRIPTIONS_CHANNEL, Subscription,
    SubscriptionError, SubscriptionPage,
};

use crate::domain::DomainError;

/// How a request names a case: by UUID or by number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseKey {
    Id(Uuid),
    Number(String),
}

impl std::fmt::Display for CaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaseKey::Id(id) => id.fmt(f),
            CaseKey::Number(number) => f.write_str(number),
        }
    }
}

/// Which cases a caller may see: all, or only those of some accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// `None`: every account.
    pub accounts: Option<Vec<String>>,
}

impl Access {
    /// Access to every account.
    pub fn all() -> Self {
        Access { accounts: None }
    }

    /// Whether a case of `account_id` is visible.
    pub fn allows(&self, account_id: &str) -> bool {
        self.accounts
            .as_ref()
            .is_none_or(|accounts| accounts.iter().any(|a| a == account_id))
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The domain refused the action.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// No such case (or not visible to the caller).
    #[error("case not found")]
    CaseNotFound,
    /// The caller's etag is not the case's.
    #[error("the case changed: etag {given:?} is stale, the case is at {current:?}")]
    StaleEtag { given: String, current: String },
    /// A request id came back with another request.
    #[error("request_id {0} was already used for a different request")]
    RequestIdReused(Uuid),
    /// The database cannot be reached.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The statement timeout (the client's deadline) ended the transaction.
    #[error("the deadline expired while the database was working")]
    DeadlineExceeded,
    /// The case kept changing between reading it and writing the action.
    #[error("the case changed too often while the action was decided")]
    Contention,
    /// Stored data this version cannot read.
    #[error("{0}")]
    Corrupt(String),
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(diesel::result::Error),
}

/// Only what the error's kind says for certain: a connection that is gone
/// is UNAVAILABLE. Sessions classify their statements' other errors further
/// (see `session.rs`); no error is classified by its message text, which
/// follows the server's `lc_messages`.
impl From<diesel::result::Error> for StoreError {
    fn from(error: diesel::result::Error) -> Self {
        use diesel::result::Error;
        match &error {
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => StoreError::Unavailable(info.message().to_owned()),
            Error::BrokenTransactionManager => StoreError::Unavailable(error.to_string()),
            _ => StoreError::Database(error),
        }
    }
}
