//! Stream cursors: opaque strings naming a position in the event log.
//!
//! Version 1 is a position, `(txid, id)`. Version 2 adds what the snapshot
//! a stream started from shows of the transactions after that position (its
//! `xmax` and the transactions it saw in progress), for as long as the
//! stream has not passed the snapshot: a stream resumed from it skips
//! exactly what the snapshot showed. Every field is checked when a cursor
//! is read; [`crate::watch::WatchHub`] also checks it against the log.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::store::{EventPosition, Shown, StreamPosition};

const PLAIN: u8 = 1;
const WITH_SNAPSHOT: u8 = 2;

/// Most in-progress transactions a cursor carries (a snapshot lists at
/// most one per server connection).
pub const MAX_IN_PROGRESS: usize = 4096;

/// Longest cursor text accepted.
const MAX_CURSOR_CHARS: usize = (1 + 8 + 8 + 8 + 4 * MAX_IN_PROGRESS).div_ceil(3) * 4;

/// The cursor of a stream at `position`.
pub fn encode(position: &StreamPosition) -> String {
    let after = position.after;
    let mut bytes = Vec::with_capacity(17);
    match &position.shown {
        None => bytes.push(PLAIN),
        Some(_) => bytes.push(WITH_SNAPSHOT),
    }
    bytes.extend_from_slice(&after.txid.to_be_bytes());
    bytes.extend_from_slice(&after.id.to_be_bytes());
    if let Some(shown) = &position.shown {
        bytes.extend_from_slice(&shown.xmax.to_be_bytes());
        for txid in shown.in_progress.iter().take(MAX_IN_PROGRESS) {
            // Below xmax by construction: the distance fits in 32 bits for
            // any snapshot PostgreSQL takes (xids wrap at 2^32).
            let distance = u32::try_from(shown.xmax - txid).unwrap_or(u32::MAX);
            bytes.extend_from_slice(&distance.to_be_bytes());
        }
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The cursor of the event at `position`, for a stream with nothing else
/// to skip.
pub fn encode_event(position: EventPosition) -> String {
    encode(&StreamPosition::at(position))
}

/// Reads a cursor of [`encode`].
pub fn decode(cursor: &str) -> Result<StreamPosition, String> {
    let invalid = || "is not a cursor of this service".to_owned();
    if cursor.is_empty() || cursor.len() > MAX_CURSOR_CHARS {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let number = |at: usize| -> Result<i64, String> {
        let field: [u8; 8] = bytes
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(invalid)?;
        let value = i64::from_be_bytes(field);
        if value < 0 { Err(invalid()) } else { Ok(value) }
    };
    let after = EventPosition {
        txid: number(1)?,
        id: number(9)?,
    };
    match bytes.first() {
        Some(&PLAIN) if bytes.len() == 17 => Ok(StreamPosition::at(after)),
        Some(&WITH_SNAPSHOT) if bytes.len() >= 25 && (bytes.len() - 25) % 4 == 0 => {
            let xmax = number(17)?;
            let mut in_progress = Vec::with_capacity((bytes.len() - 25) / 4);
            for chunk in bytes[25..].chunks_exact(4) {
                let distance = u32::from_be_bytes(chunk.try_into().map_err(|_| invalid())?);
                let txid = xmax - i64::from(distance);
                // In progress at the snapshot: below its xmax, not behind
                // the position, each once and in order.
                if distance == 0
                    || txid < after.txid
                    || in_progress.last().is_some_and(|&last| last >= txid)
                {
                    return Err(invalid());
                }
                in_progress.push(txid);
            }
            if xmax <= after.txid {
                return Err(invalid());
            }
            let mut position = StreamPosition {
                after,
                shown: Some(Shown { xmax, in_progress }),
            };
            // Drops what is already behind (nothing, for cursors this
            // service wrote).
            position.advance(after);
            Ok(position)
        }
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_cursors_round_trip() {
        let position = EventPosition {
            txid: 123_456,
            id: 42,
        };
        assert_eq!(
            decode(&encode_event(position)),
            Ok(StreamPosition::at(position))
        );
        assert!(decode("").is_err());
        assert!(decode("not a cursor").is_err());
        assert!(decode(&"A".repeat(100)).is_err());
    }

    #[test]
    fn snapshot_cursors_round_trip_and_skip_what_the_snapshot_shows() {
        let position = StreamPosition::after_snapshot(100, 110, vec![104, 100, 107]);
        let decoded = decode(&encode(&position)).expect("a cursor");
        assert_eq!(decoded, position);
        // 101..=103 and 105, 106, 108, 109 were committed when the
        // snapshot was taken; 100, 104 and 107 were not.
        for (txid, wanted) in [
            (99, false),
            (100, true),
            (101, false),
            (104, true),
            (105, false),
            (107, true),
            (109, false),
            (110, true),
        ] {
            assert_eq!(
                decoded.wants(EventPosition { txid, id: 1 }),
                wanted,
                "txid {txid}"
            );
        }
        // Past xmax the cursor is a plain one again.
        let mut moved = decoded.clone();
        moved.advance(EventPosition { txid: 110, id: 0 });
        assert_eq!(moved.shown, None);
        assert_eq!(
            encode(&moved),
            encode_event(EventPosition { txid: 110, id: 0 })
        );
    }

    #[test]
    fn forged_snapshot_cursors_are_refused() {
        let valid = StreamPosition::after_snapshot(100, 110, vec![100, 104]);
        let bytes = URL_SAFE_NO_PAD.decode(encode(&valid)).expect("base64");
        // A truncated list, an xmax behind the position, an in-progress
        // transaction at xmax, and out of order.
        let mut truncated = bytes.clone();
        truncated.pop();
        let mut behind = bytes.clone();
        behind[17..25].copy_from_slice(&50i64.to_be_bytes());
        let mut at_xmax = bytes.clone();
        at_xmax[25..29].copy_from_slice(&0u32.to_be_bytes());
        let mut unordered = bytes.clone();
        unordered.swap(25, 29);
        unordered.swap(26, 30);
        unordered.swap(27, 31);
        unordered.swap(28, 32);
        for forged in [truncated, behind, at_xmax, unordered] {
            assert!(decode(&URL_SAFE_NO_PAD.encode(forged)).is_err());
        }
    }
}
