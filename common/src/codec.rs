//! The gRPC codec of every Hearth service: prost's, with small starting buffers.
//!
//! Each open stream keeps an encode and a decode buffer for its life. At prost's default
//! (8 KiB each) a master holding 10,000 worker streams, each passing a heartbeat of a few bytes
//! every few seconds, keeps about 160 MiB of buffers the heartbeats cycle through; a larger
//! message still grows its buffer as far as it needs.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Where each stream's buffers start.
const BUFFER_BYTES: usize = 512;

/// How much an encoder buffers before it lets the stream send (tonic's default).
const YIELD_BYTES: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_BYTES)
}

/// Prost's codec with [`BUFFER_BYTES`] buffers.
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
