//! AIP-158 pagination: page sizes and opaque page tokens.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::DateTime;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::CasePageKey;

/// Cases per page when the request says 0.
pub const DEFAULT_CASE_PAGE: usize = 50;
/// Most cases per page.
pub const MAX_CASE_PAGE: usize = 500;
/// Events per page when the request says 0.
pub const DEFAULT_EVENT_PAGE: usize = 100;
/// Most events per page.
pub const MAX_EVENT_PAGE: usize = 1000;

const CASE_TOKEN: u8 = 1;
/// 0001-01-01T00:00:00Z, the earliest protobuf Timestamp, in Unix µs.
const MIN_TOKEN_MICROS: i64 = -62_135_596_800_000_000;
/// 9999-12-31T23:59:59.999999Z, the latest protobuf Timestamp, in Unix µs.
const MAX_TOKEN_MICROS: i64 = 253_402_300_799_999_999;
const EVENT_TOKEN: u8 = 2;

/// The page size to use: `default` for 0, capped at `max`; negative sizes
/// are an error.
pub fn page_size(requested: i32, default: usize, max: usize) -> Result<usize, String> {
    match requested {
        0 => Ok(default),
        n if n < 0 => Err("must not be negative".into()),
        n => Ok(usize::try_from(n).unwrap_or(max).min(max)),
    }
}

/// A short hash binding a token to the query it continues.
fn query_hash(query: &str) -> [u8; 8] {
    let digest = Sha256::digest(query.as_bytes());
    let mut hash = [0u8; 8];
    hash.copy_from_slice(&digest[..8]);
    hash
}

/// The token of the page after `key`, for the query `filter`.
pub fn case_token(key: CasePageKey, filter: &str) -> String {
    let mut bytes = vec![CASE_TOKEN];
    bytes.extend_from_slice(&key.create_time.timestamp_micros().to_be_bytes());
    bytes.extend_from_slice(key.id.as_bytes());
    bytes.extend_from_slice(&query_hash(filter));
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads a token of [`case_token`]; it must belong to `filter`.
pub fn parse_case_token(token: &str, filter: &str) -> Result<Option<CasePageKey>, String> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = decode(token, CASE_TOKEN, 8 + 16 + 8)?;
    if bytes[24..32] != query_hash(filter) {
        return Err("belongs to a different filter; start again without a page_token".into());
    }
    let micros = i64::from_be_bytes(bytes[0..8].try_into().map_err(|_| invalid())?);
    // Every case was created within protobuf's Timestamp range (years 1
    // to 9999), which PostgreSQL can represent; a forged time outside it
    // would fail in the database.
    if !(MIN_TOKEN_MICROS..=MAX_TOKEN_MICROS).contains(&micros) {
        return Err(invalid());
    }
    let create_time = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
    let id = Uuid::from_slice(&bytes[8..24]).map_err(|_| invalid())?;
    Ok(Some(CasePageKey { create_time, id }))
}

/// The token of the events after `after_id` of `case_id`.
pub fn event_token(case_id: Uuid, after_id: i64) -> String {
    let mut bytes = vec![EVENT_TOKEN];
    bytes.extend_from_slice(case_id.as_bytes());
    bytes.extend_from_slice(&after_id.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads a token of [`event_token`]; it must belong to `case_id`.
pub fn parse_event_token(token: &str, case_id: Uuid) -> Result<Option<i64>, String> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = decode(token, EVENT_TOKEN, 16 + 8)?;
    if bytes[0..16] != *case_id.as_bytes() {
        return Err("belongs to a different case".into());
    }
    Ok(Some(i64::from_be_bytes(
        bytes[16..24].try_into().map_err(|_| invalid())?,
    )))
}

fn invalid() -> String {
    "is not a page token of this service".into()
}

fn decode(token: &str, kind: u8, len: usize) -> Result<Vec<u8>, String> {
    if token.len() > 128 {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    match bytes.split_first() {
        Some((k, rest)) if *k == kind && rest.len() == len => Ok(rest.to_vec()),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0, 50, 500), Ok(50));
        assert_eq!(page_size(7, 50, 500), Ok(7));
        assert_eq!(page_size(100_000, 50, 500), Ok(500));
        assert!(page_size(-1, 50, 500).is_err());
    }

    #[test]
    fn case_tokens_round_trip_and_bind_their_filter() {
        let key = CasePageKey {
            create_time: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        let token = case_token(key, "state = NEW");
        assert_eq!(parse_case_token(&token, "state = NEW"), Ok(Some(key)));
        assert!(parse_case_token(&token, "state = DRAFT").is_err());
        assert!(parse_case_token("garbage", "").is_err());
        assert_eq!(parse_case_token("", ""), Ok(None));
        let event = event_token(key.id, 42);
        assert!(parse_case_token(&event, "").is_err());
    }

    #[test]
    fn case_tokens_with_times_outside_timestamps_are_refused() {
        let id = Uuid::new_v4();
        for (micros, valid) in [
            (MIN_TOKEN_MICROS, true),
            (MAX_TOKEN_MICROS, true),
            (MIN_TOKEN_MICROS - 1, false),
            (MAX_TOKEN_MICROS + 1, false),
            (i64::MIN, false),
            (i64::MAX, false),
        ] {
            // Built by hand: `case_token` takes a time chrono can hold.
            let mut bytes = vec![CASE_TOKEN];
            bytes.extend_from_slice(&micros.to_be_bytes());
            bytes.extend_from_slice(id.as_bytes());
            bytes.extend_from_slice(&query_hash(""));
            let token = URL_SAFE_NO_PAD.encode(bytes);
            assert_eq!(parse_case_token(&token, "").is_ok(), valid, "{micros}");
        }
        assert_eq!(
            DateTime::from_timestamp_micros(MIN_TOKEN_MICROS).map(|t| t.to_rfc3339()),
            Some("0001-01-01T00:00:00+00:00".to_owned())
        );
        assert_eq!(
            DateTime::from_timestamp_micros(MAX_TOKEN_MICROS).map(|t| t.to_rfc3339()),
            Some("9999-12-31T23:59:59.999999+00:00".to_owned())
        );
        // The forged token of the report.
        assert!(parse_case_token("Af0S2cJ8V3__AAAAAAAAAAAAAAAAAAAAAOOwxEKY_BwU", "").is_err());
    }

    #[test]
    fn event_tokens_round_trip_and_bind_their_case() {
        let case = Uuid::new_v4();
        let token = event_token(case, 42);
        assert_eq!(parse_event_token(&token, case), Ok(Some(42)));
        assert!(parse_event_token(&token, Uuid::new_v4()).is_err());
    }
}
