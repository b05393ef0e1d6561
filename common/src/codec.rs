//! The one place that turns values into bytes and back (bincode 2 through serde).
//!
//! Every decode is capped: callers say how many bytes they accept, and a payload that claims
//! more is refused before anything is allocated for it.

use serde::{de::DeserializeOwned, Serialize};

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("could not encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The bytes are not a valid encoding of the expected type.
    #[error("could not decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The input is longer than the caller's cap.
    #[error("{len} bytes exceed the cap of {cap} bytes")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The cap the caller set.
        cap: usize,
    },
    /// Bytes were left over after the value.
    #[error("{extra} trailing bytes after the value")]
    Trailing {
        /// Number of unread bytes.
        extra: usize,
    },
}

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::NoLimit,
>;

fn config() -> Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
}

/// Encodes `value`.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Decodes exactly one `T` from `bytes`, refusing inputs longer than `cap`.
///
/// The cap also bounds every length prefix inside the value (strings, vectors), so a
/// hostile length cannot make the decoder allocate more than `cap` bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], cap: usize) -> Result<T, CodecError> {
    if bytes.len() > cap {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            cap,
        });
    }
    // bincode's limit is a const generic; 16 MiB is the largest payload any format allows,
    // and the explicit length check above applies the caller's tighter cap.
    let cfg = config().with_limit::<{ 16 * 1024 * 1024 }>();
    let (value, used) = bincode::serde::decode_from_slice(bytes, cfg)?;
    if used != bytes.len() {
        return Err(CodecError::Trailing {
            extra: bytes.len() - used,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_trailing_bytes() {
        let v = (7u32, String::from("host-a"));
        let mut bytes = encode(&v).unwrap();
        assert_eq!(decode::<(u32, String)>(&bytes, 1024).unwrap(), v);
        bytes.push(0);
        assert!(matches!(
            decode::<(u32, String)>(&bytes, 1024),
            Err(CodecError::Trailing { extra: 1 })
        ));
    }

    #[test]
    fn refuses_input_over_cap() {
        let bytes = encode(&vec![0u8; 100]).unwrap();
        assert!(matches!(
            decode::<Vec<u8>>(&bytes, 10),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn hostile_length_prefix_is_refused_not_allocated() {
        // A vector claiming u64::MAX elements in a few bytes.
        let mut bytes = vec![253u8];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<Vec<u8>>(&bytes, 1024).is_err());
    }
}
