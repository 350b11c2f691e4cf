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

/// Encode `value`, describing it as `what` in errors. Byte strings (`Vec<u8>`, `&[u8]`) are
/// written as MessagePack `bin`, one length and the bytes, not as an array of integers (up to
/// two bytes each, and one call per byte to write and to read): the payloads nested in frames,
/// Raft entries and requests are byte strings. [`decode`] reads either form.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut bytes = Vec::new();
    let mut serializer = rmp_serde::Serializer::new(&mut bytes)
        .with_bytes(rmp_serde::config::BytesMode::ForceIterables);
    value
        .serialize(&mut serializer)
        .map_err(|e| CodecError::Encode {
            what,
            reason: e.to_string(),
        })?;
    Ok(bytes)
}

/// Decode a `T` from `bytes`, describing it as `what` in errors.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    rmp_serde::from_slice(bytes).map_err(|e| CodecError::Decode {
        what,
        len: bytes.len(),
        reason: e.to_string(),
    })
}

/// `#[serde(with = "understudy_actors::codec::bin")]` on a `Vec<u8>` field: written as one
/// MessagePack `bin` (a length and a copy of the bytes, not a call per byte), read from `bin`
/// or from an array of integers (what an earlier node, or a plain `Vec<u8>`, wrote).
pub mod bin {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::Serializer;
    use std::fmt;

    /// Writes `bytes` as one byte string.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    /// Reads a byte string, or an array of integers 0..=255.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // A hostile length must not make us allocate: grow as elements arrive.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
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

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Framed {
        Frame(Vec<u8>),
        Ask { body: Vec<u8>, ids: Vec<u64> },
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct WithBin {
        #[serde(with = "super::bin")]
        bytes: Vec<u8>,
    }

    #[derive(serde::Serialize)]
    struct Plain {
        bytes: Vec<u8>,
    }

    #[test]
    fn a_bin_field_is_one_byte_string_and_reads_the_old_form_too() {
        let bytes: Vec<u8> = (0..=255).collect();
        let value = WithBin {
            bytes: bytes.clone(),
        };
        let encoded = rmp_serde::to_vec_named(&value).expect("encodes");
        assert!(encoded.len() < 270, "{} bytes", encoded.len());
        assert_eq!(decode::<WithBin>("bin", &encoded), Ok(value));
        let old = rmp_serde::to_vec_named(&Plain {
            bytes: bytes.clone(),
        })
        .expect("encodes");
        assert_eq!(decode::<WithBin>("bin", &old), Ok(WithBin { bytes }));
        let wrong = rmp_serde::to_vec_named(&Plain2 { bytes: vec![300] }).expect("encodes");
        assert!(decode::<WithBin>("bin", &wrong).is_err());
    }

    #[derive(serde::Serialize)]
    struct Plain2 {
        bytes: Vec<u16>,
    }

    #[test]
    fn byte_strings_travel_as_bin_and_decode_in_either_form() {
        let body: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let value = Framed::Ask {
            body: body.clone(),
            ids: vec![3, 1_000, 7],
        };
        let bytes = encode("framed", &value).expect("encodes");
        // 1000 bytes as bin: the length and the bytes, not up to two bytes per element.
        assert!(bytes.len() < 1020, "{} bytes", bytes.len());
        assert_eq!(decode::<Framed>("framed", &bytes), Ok(value));
        // What an earlier node sent (an array of integers) still decodes.
        let old = rmp_serde::to_vec(&Framed::Frame(body.clone())).expect("encodes");
        assert!(old.len() > 1300);
        assert_eq!(decode::<Framed>("framed", &old), Ok(Framed::Frame(body)));
        let empty = encode("framed", &Framed::Frame(Vec::new())).expect("encodes");
        assert_eq!(
            decode::<Framed>("framed", &empty),
            Ok(Framed::Frame(Vec::new()))
        );
    }
}
