//! What the integration tests and the benchmarks share: PostgreSQL clusters
//! and databases ([`cluster`]), the server binary as a process
//! ([`process`]), tokens on clients ([`auth`]), and for benchmarks CPU and
//! PostgreSQL counters ([`measure`]) and pgbench ([`pgbench`]).

pub mod auth;
pub mod cluster;
pub mod measure;
pub mod pgbench;
pub mod process;

pub use auth::{Bearer, Client, authorized, new_secret, token};
pub use cluster::{Cluster, TestDatabase, shared};
pub use process::{
    LogLines, ServerProcess, connect, free_addr, free_port, health, serve_command, strip_ansi,
};
