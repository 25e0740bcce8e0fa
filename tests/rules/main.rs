//! The state rules through the API: every refused (state, action) pair, and
//! every cascade, against the real server and PostgreSQL.

#[path = "../api/helpers.rs"]
mod helpers;
