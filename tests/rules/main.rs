//! The state rules through the API: every refused (state, action) pair, and
//! every cascade, against the real server and PostgreSQL.

mod cascades;
mod edits;
#[path = "../api/helpers.rs"]
mod helpers;
mod schema;
mod transitions;
