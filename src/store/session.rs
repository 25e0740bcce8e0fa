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

use std::time::Duration;

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
}

impl Session {
    pub fn new(conn: Object<AsyncPgConnection>, timeout: Option<Duration>, mode: Mode) -> Self {
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
        }
    }

    /// A session whose statements share one repeatable-read, read-only
    /// snapshot (taken by its first statement).
    pub fn repeatable_read(conn: Object<AsyncPgConnection>) -> Self {
        Session {
            conn: Some(conn),
            pending_begin: Some("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".into()),
            in_transaction: false,
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
                    begun?;
                    rows?
                }
                None => query.load::<U>(&mut conn).await?,
            };
            Ok(rows)
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
            begun?;
            Ok((first?, second?))
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
