//! Encoding of everything that may cross a node boundary: MessagePack via `rmp-serde`.
//! Decoding returns an error, never panics, whatever the bytes.

use serde::{de::DeserializeOwned, Serialize};

/// A payload could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded (a type that MessagePack cannot represent).
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The bytes are not a valid encoding of the expected type: the sender is broken or
    /// speaks another version; the message is dropped.
    #[error("malformed {what} ({len} bytes): {reason}")]
    Decode {
        /// What was expected.
        what: &'static str,
        /// How many bytes arrived.
        len: usize,
        /// Why decoding failed.
        reason: String,
    },
}

/// Encode `value`, describing it as `what` in errors.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    rmp_serde::to_vec(value).map_err(|e| CodecError::Encode {
        what,
        reason: e.to_string(),
    })
}

/// Decode a `T` from `bytes`, describing it as `what` in errors.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    rmp_serde::from_slice(bytes).map_err(|e| CodecError::Decode {
        what,
        len: bytes.len(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_decodes_to_an_error_not_a_panic() {
        let r: Result<(u64, String), _> = decode("pair", &[0xc1, 0xff, 0x00]);
        assert!(matches!(r, Err(CodecError::Decode { len: 3, .. })));
        let bytes = encode("pair", &(7u64, "x".to_string())).expect("encodes");
        assert_eq!(decode::<(u64, String)>("pair", &bytes), Ok((7, "x".into())));
    }
}
