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

/// Two damaged copies of a valid encoding, as the property tests of every decoder feed them:
/// `bytes` cut short to `cut` bytes (at most all of them), and `bytes` with the byte at `at`
/// (modulo its length) changed by `flip`. Public so that every crate's tests damage encodings
/// the same way.
#[doc(hidden)]
pub fn damaged(bytes: &[u8], cut: usize, at: usize, flip: u8) -> [Vec<u8>; 2] {
    let truncated = bytes[..cut.min(bytes.len())].to_vec();
    let mut flipped = bytes.to_vec();
    if !flipped.is_empty() {
        let i = at % flipped.len();
        flipped[i] ^= flip;
    }
    [truncated, flipped]
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

#[cfg(test)]
mod fuzz {
    //! Property tests of [`decode`] on what crosses a node boundary: envelopes (frames),
    //! stimulus requests, stimuli and peer messages (what a copy decodes), byte strings.

    use super::*;
    use crate::envelope::{Envelope, ManagerCast, NodeCast, StimulusAsk};
    use proptest::prelude::*;
    use understudy_runtime::sim::unit::{SetResponse, SetStimulus, SetUnit, SetUpdate};
    use understudy_runtime::{
        BatchSeq, ClientId, CopyId, DedupeLimits, DedupeTable, Directive, Entry, Epoch, NodeName,
        PeerMsg, Report, Seq, StartAs, StimulusId, Time, TraceId, UnitName,
    };

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    fn unit() -> impl Strategy<Value = UnitName> {
        "[a-z0-9_-]{1,12}".prop_map(UnitName::new)
    }

    fn node() -> impl Strategy<Value = NodeName> {
        "[a-z0-9_-]{1,12}".prop_map(NodeName::new)
    }

    fn copy() -> impl Strategy<Value = CopyId> {
        any::<u64>().prop_map(CopyId)
    }

    fn epoch() -> impl Strategy<Value = Epoch> {
        any::<u64>().prop_map(Epoch)
    }

    fn stimulus_id() -> impl Strategy<Value = StimulusId> {
        (any::<u64>(), any::<u64>()).prop_map(|(c, s)| StimulusId {
            client: ClientId(c),
            seq: Seq(s),
        })
    }

    fn start_as() -> impl Strategy<Value = StartAs> {
        prop_oneof![
            epoch().prop_map(|epoch| StartAs::Initial { epoch }),
            (epoch(), copy()).prop_map(|(epoch, primary)| StartAs::Standby { epoch, primary }),
        ]
    }

    fn directive() -> impl Strategy<Value = Directive> {
        prop_oneof![
            (epoch(), proptest::option::of(copy()))
                .prop_map(|(epoch, standby)| Directive::AssignStandby { epoch, standby }),
            (epoch(), any::<u64>(), any::<u32>()).prop_map(|(epoch, at, ms)| Directive::Lease {
                epoch,
                requested_at: Time(at),
                duration: std::time::Duration::from_millis(u64::from(ms)),
            }),
        ]
    }

    fn report() -> impl Strategy<Value = Report> {
        prop_oneof![
            (unit(), copy(), epoch(), any::<u64>()).prop_map(|(unit, copy, epoch, at)| {
                Report::LeaseRequest {
                    unit,
                    copy,
                    epoch,
                    requested_at: Time(at),
                }
            }),
            (unit(), copy(), epoch()).prop_map(|(unit, copy, epoch)| Report::StandbyReady {
                unit,
                copy,
                epoch
            }),
            (unit(), copy(), epoch()).prop_map(|(unit, copy, current)| Report::Fenced {
                unit,
                copy,
                current
            }),
        ]
    }

    fn node_cast() -> impl Strategy<Value = NodeCast> {
        prop_oneof![
            (unit(), copy(), start_as(), proptest::option::of(node())).prop_map(
                |(unit, copy, start_as, peer_node)| NodeCast::StartCopy {
                    unit,
                    copy,
                    start_as,
                    peer_node
                }
            ),
            (unit(), copy()).prop_map(|(unit, copy)| NodeCast::StopCopy { unit, copy }),
            (unit(), copy(), directive(), proptest::option::of(node())).prop_map(
                |(unit, copy, directive, peer_node)| NodeCast::Direct {
                    unit,
                    copy,
                    directive,
                    peer_node
                }
            ),
            (unit(), copy()).prop_map(|(unit, copy)| NodeCast::InjectPanic { unit, copy }),
            (unit(), copy(), node(), bytes(64)).prop_map(|(unit, to, from_node, bytes)| {
                NodeCast::Peer {
                    unit,
                    to,
                    from_node,
                    bytes,
                }
            }),
        ]
    }

    fn manager_cast() -> impl Strategy<Value = ManagerCast> {
        prop_oneof![
            (node(), any::<u64>())
                .prop_map(|(node, incarnation)| ManagerCast::NodeUp { node, incarnation }),
            (
                node(),
                any::<u64>(),
                proptest::collection::vec((unit(), copy()), 0..4),
                any::<u64>()
            )
                .prop_map(|(node, incarnation, running, at)| ManagerCast::NodeAlive {
                    node,
                    incarnation,
                    running,
                    sent_at: Time(at),
                }),
            (
                unit(),
                copy(),
                any::<bool>(),
                any::<Option<(u64, u64)>>(),
                ".{0,40}"
            )
                .prop_map(|(unit, copy, known_dead, during, why)| {
                    ManagerCast::CopyDown {
                        unit,
                        copy,
                        known_dead,
                        during: during.map(|(client, seq)| StimulusId {
                            client: ClientId(client),
                            seq: Seq(seq),
                        }),
                        why,
                    }
                }),
            (unit(), copy()).prop_map(|(unit, copy)| ManagerCast::CopyStarted { unit, copy }),
            report().prop_map(ManagerCast::Report),
            (
                unit(),
                stimulus_id(),
                any::<(u64, u64)>(),
                proptest::collection::vec((unit(), any::<u64>()), 0..4)
            )
                .prop_map(|(unit, root, (took_us, t_max_us), spent)| {
                    ManagerCast::SlowThread(Box::new(understudy_runtime::global::SlowThread {
                        group: String::new(),
                        unit,
                        kind: "incr".into(),
                        trace: TraceId::root(root),
                        took_us,
                        t_max_us,
                        spent,
                    }))
                }),
        ]
    }

    fn envelope() -> impl Strategy<Value = Envelope> {
        prop_oneof![
            node_cast().prop_map(Envelope::Node),
            ("[a-z]{1,8}", manager_cast())
                .prop_map(|(group, cast)| Envelope::Manager { group, cast }),
        ]
    }

    fn stimulus_ask() -> impl Strategy<Value = StimulusAsk> {
        (
            unit(),
            copy(),
            stimulus_id(),
            any::<u64>(),
            epoch(),
            bytes(64),
            proptest::option::of(stimulus_id()),
        )
            .prop_map(
                |(unit, copy, id, low_water, bound_at, body, trace)| StimulusAsk {
                    unit,
                    copy,
                    id,
                    low_water: Seq(low_water),
                    bound_at,
                    body,
                    trace: trace.map(TraceId::root),
                },
            )
    }

    fn set_stimulus() -> impl Strategy<Value = SetStimulus> {
        prop_oneof![
            any::<u64>().prop_map(|tag| SetStimulus::Add { tag }),
            Just(SetStimulus::Read)
        ]
    }

    fn peer_msg() -> impl Strategy<Value = PeerMsg<SetUnit>> {
        let served = (stimulus_id(), any::<u64>(), any::<u64>()).prop_map(|(id, lw, tag)| Entry::<
            SetUnit,
        >::Served {
            id,
            low_water: Seq(lw),
            updates: vec![SetUpdate::Part { tag, half: 0 }],
            response: SetResponse::Added { tag },
        });
        prop_oneof![
            (
                epoch(),
                copy(),
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                proptest::collection::vec(served, 0..4)
            )
                .prop_map(|(epoch, from, seq, part, parts, entries)| {
                    PeerMsg::Replicate {
                        epoch,
                        from,
                        seq: BatchSeq(seq),
                        part,
                        parts,
                        entries,
                    }
                }),
            (
                epoch(),
                copy(),
                any::<u64>(),
                proptest::collection::btree_map(any::<u64>(), any::<u32>(), 0..8),
                proptest::collection::btree_set(unit(), 0..3)
            )
                .prop_map(|(epoch, from, seq, state, deps_down)| PeerMsg::Snapshot {
                    epoch,
                    from,
                    seq: BatchSeq(seq),
                    state,
                    dedupe: DedupeTable::new(DedupeLimits::default()),
                    open: Vec::new(),
                    deps_down,
                }),
            (epoch(), copy(), any::<u64>()).prop_map(|(epoch, from, upto)| PeerMsg::Ack {
                epoch,
                from,
                upto: BatchSeq(upto)
            }),
            (epoch(), copy()).prop_map(|(current, from)| PeerMsg::Refuse { current, from }),
        ]
    }

    /// An undecodable input is refused as malformed `what`, with its length: the error names
    /// what was being decoded.
    fn decodes_or_is_refused_as<T: DeserializeOwned>(
        what: &'static str,
        bytes: &[u8],
    ) -> Result<(), TestCaseError> {
        if let Err(e) = decode::<T>(what, bytes) {
            prop_assert!(
                matches!(&e, CodecError::Decode { what: w, len, .. } if *w == what && *len == bytes.len()),
                "{e:?}"
            );
            let message = e.to_string();
            prop_assert!(
                message.starts_with(&format!("malformed {what} (")),
                "{message}"
            );
        }
        Ok(())
    }

    /// `bytes` cut short at `cut`, and `bytes` with byte `at` changed by `flip` (not 0).
    fn damaged(
        bytes: &[u8],
        cut: prop::sample::Index,
        at: prop::sample::Index,
        flip: u8,
    ) -> [Vec<u8>; 2] {
        super::damaged(bytes, cut.index(bytes.len()), at.index(bytes.len()), flip)
    }

    /// Encodes, decodes, and encodes again: the same bytes (for types without `PartialEq`).
    fn round_trips<T: Serialize + DeserializeOwned>(
        what: &'static str,
        value: &T,
    ) -> Result<Vec<u8>, TestCaseError> {
        let bytes = encode(what, value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let read: T = decode(what, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let again = encode(what, &read).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&again, &bytes);
        Ok(bytes)
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_bytes_are_refused_as_a_malformed_frame_naming_what_was_expected(
            input in bytes(256),
        ) {
            decodes_or_is_refused_as::<Envelope>("envelope", &input)?;
            decodes_or_is_refused_as::<StimulusAsk>("stimulus request", &input)?;
            decodes_or_is_refused_as::<SetStimulus>("stimulus", &input)?;
            decodes_or_is_refused_as::<SetResponse>("response", &input)?;
            decodes_or_is_refused_as::<PeerMsg<SetUnit>>("peer message", &input)?;
        }

        #[test]
        fn a_valid_envelope_stimulus_or_peer_message_round_trips(
            envelope in envelope(),
            ask in stimulus_ask(),
            stimulus in set_stimulus(),
            peer in peer_msg(),
        ) {
            let bytes = encode("envelope", &envelope).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decode::<Envelope>("envelope", &bytes), Ok(envelope));
            let bytes = encode("stimulus request", &ask).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decode::<StimulusAsk>("stimulus request", &bytes), Ok(ask));
            let bytes = encode("stimulus", &stimulus).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decode::<SetStimulus>("stimulus", &bytes), Ok(stimulus));
            round_trips("peer message", &peer)?;
        }

        #[test]
        fn a_truncated_or_damaged_frame_decodes_or_is_refused_never_a_panic(
            envelope in envelope(),
            ask in stimulus_ask(),
            peer in peer_msg(),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            flip in 1..=255u8,
        ) {
            let bytes = encode("envelope", &envelope).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for input in damaged(&bytes, cut, at, flip) {
                decodes_or_is_refused_as::<Envelope>("envelope", &input)?;
            }
            let bytes = encode("stimulus request", &ask).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for input in damaged(&bytes, cut, at, flip) {
                decodes_or_is_refused_as::<StimulusAsk>("stimulus request", &input)?;
            }
            let bytes = round_trips("peer message", &peer)?;
            for input in damaged(&bytes, cut, at, flip) {
                decodes_or_is_refused_as::<PeerMsg<SetUnit>>("peer message", &input)?;
            }
        }

        #[test]
        fn a_bin_field_reads_any_byte_string_and_refuses_anything_else_clearly(
            value in bytes(300),
            input in bytes(64),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            flip in 1..=255u8,
        ) {
            let bin = WithBin { bytes: value.clone() };
            let encoded = rmp_serde::to_vec_named(&bin).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decode::<WithBin>("bin", &encoded), Ok(bin));
            // The older form, an array of integers, reads too.
            let old = rmp_serde::to_vec_named(&Plain { bytes: value.clone() })
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decode::<WithBin>("bin", &old), Ok(WithBin { bytes: value }));
            decodes_or_is_refused_as::<WithBin>("bin", &input)?;
            for input in damaged(&encoded, cut, at, flip).into_iter().chain(damaged(&old, cut, at, flip)) {
                decodes_or_is_refused_as::<WithBin>("bin", &input)?;
            }
        }
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
}
