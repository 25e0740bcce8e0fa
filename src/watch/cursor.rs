//! Stream cursors: opaque strings naming a position in the event log.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::store::EventPosition;

const VERSION: u8 = 1;

/// The cursor of the event at `position`.
pub fn encode(position: EventPosition) -> String {
    let mut bytes = Vec::with_capacity(17);
    bytes.push(VERSION);
    bytes.extend_from_slice(&position.txid.to_be_bytes());
    bytes.extend_from_slice(&position.id.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads a cursor of [`encode`].
pub fn decode(cursor: &str) -> Result<EventPosition, String> {
    let invalid = || "is not a cursor of this service".to_owned();
    if cursor.len() > 64 {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    if bytes.len() != 17 || bytes[0] != VERSION {
        return Err(invalid());
    }
    let txid = i64::from_be_bytes(bytes[1..9].try_into().map_err(|_| invalid())?);
    let id = i64::from_be_bytes(bytes[9..17].try_into().map_err(|_| invalid())?);
    if txid < 0 || id < 0 {
        return Err(invalid());
    }
    Ok(EventPosition { txid, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let position = EventPosition {
            txid: 123_456,
            id: 42,
        };
        assert_eq!(decode(&encode(position)), Ok(position));
        assert!(decode("").is_err());
        assert!(decode("not a cursor").is_err());
        assert!(decode(&"A".repeat(100)).is_err());
    }
}
