//! Integration tests: the real server on a port, a real tonic client, a
//! real PostgreSQL (one cluster per test process, a database per test).

mod assign;
mod edits;
mod helpers;
mod lifecycle;
mod process;
mod subscriptions;
mod tools;
mod watch;
mod watch_helpers;
mod watch_robust;
