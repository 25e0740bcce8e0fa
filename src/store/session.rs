//! A pooled connection for one call, bounded by the client's deadline.
//!
//! Without a deadline every statement runs on its own (autocommit), bounded
//! by the connection's `statement_timeout`. With one, the call's statements
//! run in a transaction whose `statement_timeout` is a little shorter than
//! the deadline: `BEGIN` and the timeout travel in the same round trip as
//! the first statement, so the bound costs no extra round trip until the
//! `COMMIT`. A session dropped inside its transaction (the client left)
//! takes its connection out of the pool, so that no later call inherits an
//! open transaction.
//!
//! A database error is classified without reading its message (which
//! follows the server's `lc_messages`), and without its SQLSTATE, which
//! diesel does not expose: a statement that failed once the session's
//! statement timeout had run out was cancelled by it (DEADLINE_EXCEEDED),
//! and one after which the connection no longer answers was ended by the
//! server (UNAVAILABLE: a restart, an administrator); anything else is the
//! database's own error.

use std::time::{Duration, Instant};

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{
    AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection, methods::LoadQuery,
    pooled_connection::deadpool::Object,
};
use futures::future::BoxFuture;

use super::StoreError;

/// Whether a bounded session's transaction may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    ReadWrite,
    ReadOnly,
}

/// The rows of two queries.
type Both<U1, U2> = Result<(Vec<U1>, Vec<U2>), StoreError>;

pub(super) struct Session {
    conn: Option<Object<AsyncPgConnection>>,
    /// `BEGIN …` still to be sent with the next statement.
    pending_begin: Option<String>,
    /// A transaction is open (or its `BEGIN` is on its way).
    in_transaction: bool,
    /// When the session began, and how long any one statement of it may
    /// run: an error after that is the statement timeout's.
    started: Instant,
    budget: Duration,
}

/// What a failed statement's error means (see the module's comment).
async fn classify(
    error: DieselError,
    started: Instant,
    budget: Duration,
    mut conn: &AsyncPgConnection,
) -> StoreError {
    let DieselError::DatabaseError(DatabaseErrorKind::Unknown, _) = &error else {
        return error.into();
    };
    if started.elapsed() >= budget {
        return StoreError::DeadlineExceeded;
    }
    // In a failed transaction this fails too, but with an answer.
    match conn.batch_execute("SELECT 1").await {
        Err(DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        )) => StoreError::Unavailable(format!("the server ended the connection: {error}")),
        _ => StoreError::Database(error),
    }
}

impl Session {
    /// `statement_timeout` is the connection's own, which bounds each
    /// statement when the session has no `timeout`.
    pub fn new(
        conn: Object<AsyncPgConnection>,
        timeout: Option<Duration>,
        statement_timeout: Duration,
        mode: Mode,
    ) -> Self {
        let pending_begin = timeout.map(|timeout| {
            let millis = timeout.as_millis().clamp(1, i32::MAX as u128);
            let mode = match mode {
                Mode::ReadWrite => "",
                Mode::ReadOnly => " READ ONLY",
            };
            format!("BEGIN{mode}; SET LOCAL statement_timeout = {millis}")
        });
        Session {
            conn: Some(conn),
            pending_begin,
            in_transaction: false,
            started: Instant::now(),
            budget: timeout.unwrap_or(statement_timeout),
        }
    }

    /// A session whose statements share one repeatable-read, read-only
    /// snapshot (taken by its first statement).
    pub fn repeatable_read(conn: Object<AsyncPgConnection>, statement_timeout: Duration) -> Self {
        Session {
            conn: Some(conn),
            pending_begin: Some("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".into()),
            in_transaction: false,
            started: Instant::now(),
            budget: statement_timeout,
        }
    }

    /// Runs `query` and returns its rows (after the pending `BEGIN`, in
    /// the same round trip).
    ///
    /// The future is boxed: diesel-async's futures name the connection's
    /// lifetime through associated types, and an `async fn` holding them
    /// across an await cannot be proven `Send` for every lifetime.
    pub fn rows<'s, Q, U>(&'s mut self, query: Q) -> BoxFuture<'s, Result<Vec<U>, StoreError>>
    where
        Q: LoadQuery<'s, &'s AsyncPgConnection, U> + Send + 's,
        U: Send + 's,
    {
        let begin = self.pending_begin.take();
        if begin.is_some() {
            self.in_transaction = true;
        }
        let conn: Option<&'s AsyncPgConnection> = self.conn.as_deref();
        let (started, budget) = (self.started, self.budget);
        Box::pin(async move {
            // Present until the session is dropped.
            let Some(mut conn) = conn else {
                return Err(StoreError::Unavailable(
                    "the session has no connection".into(),
                ));
            };
            let rows = match begin {
                Some(begin) => {
                    let mut begin_conn = conn;
                    let (begun, rows) = futures::join!(
                        begin_conn.batch_execute(&begin),
                        query.load::<U>(&mut conn)
                    );
                    begun.and(rows)
                }
                None => query.load::<U>(&mut conn).await,
            };
            match rows {
                Ok(rows) => Ok(rows),
                Err(e) => Err(classify(e, started, budget, conn).await),
            }
        })
    }

    /// Runs two queries in one round trip (each on its own snapshot, unless
    /// the session has a transaction) and returns both results.
    pub fn rows2<'s, Q1, U1, Q2, U2>(
        &'s mut self,
        first: Q1,
        second: Q2,
    ) -> BoxFuture<'s, Both<U1, U2>>
    where
        Q1: LoadQuery<'s, &'s AsyncPgConnection, U1> + Send + 's,
        U1: Send + 's,
        Q2: LoadQuery<'s, &'s AsyncPgConnection, U2> + Send + 's,
        U2: Send + 's,
    {
        let begin = self.pending_begin.take();
        if begin.is_some() {
            self.in_transaction = true;
        }
        let conn: Option<&'s AsyncPgConnection> = self.conn.as_deref();
        let (started, budget) = (self.started, self.budget);
        Box::pin(async move {
            let Some(conn) = conn else {
                return Err(StoreError::Unavailable(
                    "the session has no connection".into(),
                ));
            };
            let (mut begin_conn, mut first_conn, mut second_conn) = (conn, conn, conn);
            let begun = async {
                match &begin {
                    Some(begin) => begin_conn.batch_execute(begin).await,
                    None => Ok(()),
                }
            };
            let (begun, first, second) = futures::join!(
                begun,
                first.load::<U1>(&mut first_conn),
                second.load::<U2>(&mut second_conn)
            );
            match begun.and(first).and_then(|first| Ok((first, second?))) {
                Ok(both) => Ok(both),
                Err(e) => Err(classify(e, started, budget, conn).await),
            }
        })
    }

    /// Runs `query` and returns its one row.
    pub fn row<'s, Q, U>(&'s mut self, query: Q) -> BoxFuture<'s, Result<U, StoreError>>
    where
        Q: LoadQuery<'s, &'s AsyncPgConnection, U> + Send + 's,
        U: Send + 's,
    {
        let rows = self.rows(query);
        Box::pin(async move {
            rows.await?
                .into_iter()
                .next()
                .ok_or_else(|| StoreError::Corrupt("a statement returned no row".into()))
        })
    }

    /// Ends the session: commits an open transaction when `result` is a
    /// success (a failed commit fails the call), rolls it back otherwise.
    pub async fn finish<T>(mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if !self.in_transaction {
            return result;
        }
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = match self.conn.as_deref_mut() {
            Some(conn) => conn.batch_execute(end).await,
            None => return result,
        };
        self.in_transaction = ended.is_err();
        match (result, ended) {
            (Ok(value), Ok(())) => Ok(value),
            (Ok(_), Err(e)) => Err(e.into()),
            (Err(e), _) => Err(e),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.in_transaction
            && let Some(conn) = self.conn.take()
        {
            // Closing the connection rolls the transaction back.
            drop(Object::take(conn));
        }
    }
}
