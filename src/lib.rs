//! The invoice case service: invoice disputes run through their states,
//! stored in PostgreSQL, streamed to subscribers.

pub mod api;
pub mod auth;
pub mod codec;
pub mod config;
pub mod convert;
pub mod domain;
pub mod drain;
pub mod embedded;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod pb;
pub mod routes;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod watch;
