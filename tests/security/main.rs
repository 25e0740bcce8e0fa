//! The security tests (SPEC §5 and §8): roles, account isolation, tokens
//! and keys, TLS and mutual TLS, limits, and hostile input, against the
//! real server and PostgreSQL.

#[path = "../api/helpers.rs"]
mod helpers;

mod accounts;
mod gate;
mod hostile;
mod keys;
mod limits;
mod locale;
mod roles;
mod streams;
mod support;
mod tls;
