//! Request semantics through the API: validation, errors, etags,
//! idempotency, lists, and concurrent clients.

#[path = "../api/helpers.rs"]
mod helpers;

mod concurrency;
mod edits;
mod errors;
mod idempotency;
mod listing;
mod plans;
mod replies;
