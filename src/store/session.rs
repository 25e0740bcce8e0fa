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
//! A database that does not answer at all (the network black-holes its
//! packets: no reset, no refusal) cannot end a statement by its
//! `statement_timeout`, so every round trip also runs under a timer of the
//! process's own: with a deadline, the whole session must be answered by
//! about 95% of it (the statement timeout, 90%, comes first when the
//! database is alive); without one, a round trip may take its statements'
//! `statement_timeout` plus [`ROUND_TRIP_MARGIN`]. When the timer fires the
//! connection is discarded, not returned to the pool, and the call fails
//! with UNAVAILABLE — or DEADLINE_EXCEEDED when another connection of the
//! process was answered meanwhile (the database is up, only slow).
//!
//! A database error is classified without reading its message (which
//! follows the server's `lc_messages`), and without its SQLSTATE, which
//! diesel does not expose: a statement that failed once the session's
//! statement timeout had run out was cancelled by it (DEADLINE_EXCEEDED),
//! and one after which the connection no longer answers was ended by the
//! server (UNAVAILABLE: a restart, an administrator); anything else is the
//! database's own error.

use std::{
    sync::Arc,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{
    AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection, methods::LoadQuery,
    pooled_connection::deadpool::Object,
};
use futures::future::BoxFuture;
use tokio::time::Instant;

use super::StoreError;

/// Added to the statement timeout(s) of a round trip without a client
/// deadline: the time for the answer to travel.
pub(super) const ROUND_TRIP_MARGIN: Duration = Duration::from_secs(2);

/// How long the database may take to answer a session whose statements
/// may each run for `budget` (the client's deadline less 10%, see the API's
/// `statement_budget`): half of the remaining tenth more, about 95% of the
/// deadline, so that UNAVAILABLE still reaches the client in time.
pub(super) fn answer_within(budget: Duration) -> Duration {
    budget + budget / 18
}

/// Shared by every session of a store: the connections' statement timeout,
/// and when the database last answered (to tell a dead database from a
/// slow statement).
#[derive(Debug)]
pub(super) struct Watchdog {
    statement_timeout: Duration,
    epoch: Instant,
    /// Milliseconds after `epoch` of the last answer.
    answered: AtomicU64,
}

impl Watchdog {
    pub fn new(statement_timeout: Duration) -> Self {
        Watchdog {
            statement_timeout,
            epoch: Instant::now(),
            answered: AtomicU64::new(0),
        }
    }

    /// The connections' statement timeout.
    pub fn statement_timeout(&self) -> Duration {
        self.statement_timeout
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The database answered (a row, an error of its own: anything but
    /// silence or a closed connection).
    pub fn answered(&self) {
        self.answered
            .fetch_max(self.millis(Instant::now()), Ordering::Relaxed);
    }

    /// Whether the database answered any connection after `since`.
    fn answered_since(&self, since: Instant) -> bool {
        AtomicU64::load(&self.answered, Ordering::Relaxed) > self.millis(since)
    }
}

/// The timer of a session's round trips.
struct Guard {
    /// When a session bounded by a client deadline must have been answered.
    expires: Option<Instant>,
    watchdog: Arc<Watchdog>,
    /// A round trip went unanswered: the connection's state is unknown.
    broken: AtomicBool,
}

impl Guard {
    fn is_broken(&self) -> bool {
        // Not `.load`: diesel's `RunQueryDsl::load` is in scope.
        AtomicBool::load(&self.broken, Ordering::Relaxed)
    }

    /// Runs one round trip of `statements` statements under the timer.
    async fn run<T>(
        &self,
        statements: u32,
        round_trip: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if self.is_broken() {
            return Err(StoreError::Unavailable(
                "an earlier statement of this call went unanswered".into(),
            ));
        }
        let started = Instant::now();
        let until = self.expires.unwrap_or_else(|| {
            started + self.watchdog.statement_timeout * statements + ROUND_TRIP_MARGIN
        });
        match tokio::time::timeout_at(until, round_trip).await {
            Ok(result) => {
                if !matches!(result, Err(StoreError::Unavailable(_))) {
                    self.watchdog.answered();
                }
                result
            }
            Err(_) => {
                self.broken.store(true, Ordering::Relaxed);
                if self.expires.is_some() && self.watchdog.answered_since(started) {
                    Err(StoreError::DeadlineExceeded)
                } else {
                    Err(StoreError::Unavailable(format!(
                        "the database did not answer within {:?}",
                        until - started
                    )))
                }
            }
        }
    }
}

/// What a failed statement's error means (see the module's comment):
/// `budget` is how long each statement of the session may run.
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
    guard: Guard,
    /// When the session began, and how long any one statement of it may
    /// run: an error after that is the statement timeout's.
    started: Instant,
    budget: Duration,
}

impl Session {
    /// A session on `conn`; with a `timeout` (the statement budget of a
    /// client deadline), its statements run in a transaction bounded by it,
    /// and the database must have answered them all by `expires`.
    pub fn new(
        conn: Object<AsyncPgConnection>,
        timeout: Option<Duration>,
        mode: Mode,
        expires: Option<Instant>,
        watchdog: Arc<Watchdog>,
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
            budget: timeout.unwrap_or(watchdog.statement_timeout),
            guard: Guard {
                expires,
                watchdog,
                broken: AtomicBool::new(false),
            },
        }
    }

    /// A session whose statements share one repeatable-read, read-only
    /// snapshot (taken by its first statement).
    pub fn repeatable_read(conn: Object<AsyncPgConnection>, watchdog: Arc<Watchdog>) -> Self {
        Session {
            conn: Some(conn),
            pending_begin: Some("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".into()),
            in_transaction: false,
            started: Instant::now(),
            budget: watchdog.statement_timeout,
            guard: Guard {
                expires: None,
                watchdog,
                broken: AtomicBool::new(false),
            },
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
        let guard = &self.guard;
        let (started, budget) = (self.started, self.budget);
        Box::pin(async move {
            // Present until the session is dropped.
            let Some(mut conn) = conn else {
                return Err(StoreError::Unavailable(
                    "the session has no connection".into(),
                ));
            };
            guard
                .run(1, async move {
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
                .await
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
        let guard = &self.guard;
        let (started, budget) = (self.started, self.budget);
        Box::pin(async move {
            let Some(conn) = conn else {
                return Err(StoreError::Unavailable(
                    "the session has no connection".into(),
                ));
            };
            guard
                .run(2, async move {
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
                .await
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
        if !self.in_transaction || self.guard.is_broken() {
            // Unanswered: the connection is dropped with the session.
            return result;
        }
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let guard = &self.guard;
        let ended = match self.conn.as_deref_mut() {
            Some(conn) => {
                guard
                    .run(1, async move { Ok(conn.batch_execute(end).await?) })
                    .await
            }
            None => return result,
        };
        self.in_transaction = ended.is_err();
        match (result, ended) {
            (Ok(value), Ok(())) => Ok(value),
            (Ok(_), Err(e)) => Err(e),
            (Err(e), _) => Err(e),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if (self.in_transaction || self.guard.is_broken())
            && let Some(conn) = self.conn.take()
        {
            // Closing the connection rolls the transaction back; an
            // unanswered one must not serve another call.
            drop(Object::take(conn));
        }
    }
}
