//! The codec: bincode 2 with little-endian, fixed-width integers and a size limit.
//!
//! Fixed-width integers make every message's layout a plain table of offsets (see
//! `docs/PROTOCOL.md`), so a client in any language can read it without a bincode
//! library, and `encode_into` writes into a caller-owned slice without allocating.
//! The limit caps what a decoder may allocate for a length it reads from the input.

use bincode::config::{Configuration, Fixint, Limit, LittleEndian};

pub use bincode::{Decode, Encode};

/// The largest control-stream message body either side accepts, in bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;

type Config = Configuration<LittleEndian, Fixint, Limit<MAX_MESSAGE_LEN>>;

const CONFIG: Config = bincode::config::standard()
    .with_little_endian()
    .with_fixed_int_encoding()
    .with_limit::<MAX_MESSAGE_LEN>();

/// Why bytes could not be encoded or decoded.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The output slice is too small for the value.
    #[error("output buffer too small: {0}")]
    Encode(String),
    /// The input is not a valid encoding of the expected message.
    #[error("malformed message: {0}")]
    Decode(String),
    /// The input decoded, but bytes were left over.
    #[error("malformed message: {extra} trailing byte(s)")]
    TrailingBytes {
        /// How many bytes followed the message.
        extra: usize,
    },
    /// A length prefix announced more than the protocol allows.
    #[error("message length {len} exceeds the limit of {max} bytes")]
    TooLong {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Encodes `value` at the start of `out`; returns the number of bytes written.
pub fn encode_into<T: Encode>(value: &T, out: &mut [u8]) -> Result<usize, WireError> {
    bincode::encode_into_slice(value, out, CONFIG).map_err(|e| WireError::Encode(e.to_string()))
}

/// Decodes one `T` from the start of `bytes`; returns it and the bytes it used.
pub fn decode_prefix<T: Decode<()>>(bytes: &[u8]) -> Result<(T, usize), WireError> {
    bincode::decode_from_slice(bytes, CONFIG).map_err(|e| WireError::Decode(e.to_string()))
}

/// Decodes exactly one `T` that must span all of `bytes`.
pub fn decode_exact<T: Decode<()>>(bytes: &[u8]) -> Result<T, WireError> {
    let (value, used) = decode_prefix(bytes)?;
    if used != bytes.len() {
        return Err(WireError::TrailingBytes {
            extra: bytes.len() - used,
        });
    }
    Ok(value)
}

/// Length of the prefix that frames messages on the control stream (`u16`, little endian).
pub const FRAME_PREFIX_LEN: usize = 2;

/// Encodes `value` as one control-stream frame (`u16` length, then the body) into `out`;
/// returns the frame's total length.
pub fn encode_frame<T: Encode>(value: &T, out: &mut [u8]) -> Result<usize, WireError> {
    if out.len() < FRAME_PREFIX_LEN {
        return Err(WireError::Encode("no room for the frame prefix".into()));
    }
    let (prefix, body) = out.split_at_mut(FRAME_PREFIX_LEN);
    let len = encode_into(value, body)?;
    let len16 = u16::try_from(len).map_err(|_| WireError::TooLong {
        len,
        max: MAX_MESSAGE_LEN,
    })?;
    prefix.copy_from_slice(&len16.to_le_bytes());
    Ok(FRAME_PREFIX_LEN + len)
}

/// Reads a frame's length prefix and checks it against [`MAX_MESSAGE_LEN`].
pub fn frame_len(prefix: [u8; FRAME_PREFIX_LEN]) -> Result<usize, WireError> {
    let len = usize::from(u16::from_le_bytes(prefix));
    if len > MAX_MESSAGE_LEN {
        return Err(WireError::TooLong {
            len,
            max: MAX_MESSAGE_LEN,
        });
    }
    Ok(len)
}
