//! Watch messages encoded once for every stream.
//!
//! A committed event goes to every stream that watches it; encoding it once
//! and handing every stream the same bytes (as Kubernetes' API server does
//! for its watchers) makes the fan-out a copy per stream instead of a clone
//! and an encoding. [`Encoded`] is a protobuf message whose encoding is the
//! bytes it holds, so tonic sends them as they are: on the wire it is
//! exactly a `WatchStateChangesResponse`.

use prost::{
    Message,
    bytes::{Buf, BufMut, Bytes},
    encoding::{DecodeContext, WireType},
};

use crate::pb;

/// An encoded `WatchStateChangesResponse`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Encoded(Bytes);

impl Encoded {
    /// Encodes `message`.
    pub fn of(message: &pb::WatchStateChangesResponse) -> Self {
        Encoded(Bytes::from(message.encode_to_vec()))
    }

    /// The message again (for clients of the generated service trait).
    pub fn decode(&self) -> Result<pb::WatchStateChangesResponse, prost::DecodeError> {
        pb::WatchStateChangesResponse::decode(self.0.clone())
    }
}

impl Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Only ever sent: reading one skips its fields.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::watch_state_changes_response::Kind;

    #[test]
    fn the_bytes_are_the_message() {
        let message = pb::WatchStateChangesResponse {
            kind: Some(Kind::Event(pb::StateChangeEvent {
                cursor: "AQ".into(),
                case_number: "INVCS0001001".into(),
                ..Default::default()
            })),
        };
        let encoded = Encoded::of(&message);
        assert_eq!(encoded.encode_to_vec(), message.encode_to_vec());
        assert_eq!(encoded.encoded_len(), message.encoded_len());
        assert_eq!(encoded.decode().expect("decodes"), message);
    }
}
