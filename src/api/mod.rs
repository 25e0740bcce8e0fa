//! The gRPC API: converts requests, calls the store, converts back, and
//! maps every error to a status with details.

mod authenticate;
mod convert;
mod filter;
mod paging;
mod requests;
mod service;
pub mod status;

pub use authenticate::AuthenticateLayer;
pub use convert::{event as event_message, invoice_case as case_message};
pub use requests::case_key;
pub use service::InvoiceCaseApi;
