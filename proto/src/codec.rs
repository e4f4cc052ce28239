//! The gRPC codec of `drover.agent.v1`: prost, with smaller per-stream
//! buffers than tonic's default.
//!
//! tonic allocates an encode and a decode buffer of 8 KiB for every stream
//! and keeps them for the stream's life. A manager holds one session stream
//! per agent, so at 10,000 agents those two buffers alone were 156 MiB of
//! its heap (docs/benchmarks.md, the heap profile). Most messages on a
//! session (heartbeats, status reports, acknowledgements) are a few hundred
//! bytes; a desired state with rendered files grows the buffer in
//! [`BUFFER_SIZE`] steps while it is encoded, as tonic's would.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The buffer a stream starts with, and the step it grows by.
pub const BUFFER_SIZE: usize = 1024;
/// tonic's default: how much encoded data is written before yielding.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER_SIZE`] buffers; the generated clients and
/// servers use it (`proto/build.rs`, `codec_path`).
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
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }
}
