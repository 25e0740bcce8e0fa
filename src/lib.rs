//! The invoice case service: invoice disputes run through their states,
//! stored in PostgreSQL, streamed to subscribers.

pub mod domain;
pub mod store;
pub mod auth;
pub mod api;
pub mod pb;
pub mod watch;
pub mod embedded;
pub mod config;
pub mod server;
