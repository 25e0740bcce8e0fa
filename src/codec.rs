//! The protobuf codec of the generated service: prost's, except that a
//! request body that is not a valid message is the client's error
//! (INVALID_ARGUMENT with a fixed message and a `BadRequest` naming the
//! body), not an INTERNAL error that repeats the decoder's words.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Code, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt};

/// The codec named in `build.rs` (`codec_path`).
#[derive(Debug, Clone)]
pub struct ValidatingCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for ValidatingCodec<T, U> {
    fn default() -> Self {
        ValidatingCodec {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for ValidatingCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ValidatingDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ValidatingDecoder(ProstDecoder::default())
    }
}

/// Decodes with prost; a malformed message is INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct ValidatingDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for ValidatingDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|_| {
            Status::with_error_details(
                Code::InvalidArgument,
                "the message is not a valid protobuf encoding of its type",
                ErrorDetails::with_bad_request_violation(
                    "(request body)",
                    "not a valid protobuf encoding of the request message",
                ),
            )
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
