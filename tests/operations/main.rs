//! Operations tests: configuration, logs, metrics, graceful shutdown, a
//! database outage, a black-holed database, crash recovery of the embedded
//! default, transport and the README's state diagram, mostly against the
//! real `invoice-cases` binary with its stderr captured.

#[path = "../api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "../api/process.rs"]
mod process;
#[allow(dead_code)]
#[path = "../api/watch_helpers.rs"]
mod watch_helpers;

mod binary;
mod blackhole;
mod config;
mod logs;
mod metrics;
mod outage;
mod readme;
mod recovery;
mod shutdown;
mod transport;
