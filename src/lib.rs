//! The invoice case service: invoice disputes run through their states,
//! stored in PostgreSQL, streamed to subscribers.

pub mod domain;
