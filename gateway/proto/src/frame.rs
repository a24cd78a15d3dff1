//! The frame codec of orderd's binary TCP protocol (`docs/PROTOCOL.md`): length-prefixed frames
//! with a version byte, an opcode and a request id. Pure functions over bytes, no I/O; the server
//! and the client both use it, and the fuzz target (`fuzz/fuzz_targets/frame_decoder.rs`) drives
//! [`FrameDecoder`] with arbitrary bytes.
//!
//! Layout of one frame (integers big-endian):
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 4 | `length`: bytes after this field, [`HEADER_AFTER_LENGTH`] ..= the maximum frame size |
//! | 4 | 1 | `version`: [`VERSION`] |
//! | 5 | 1 | `opcode` |
//! | 6 | 8 | `request_id`: chosen by the client, echoed by the reply |
//! | 14 | `length - 10` | `payload`: the opcode's body |
//!
//! A length outside its bounds is refused as soon as its 4 bytes arrive, so a hostile length
//! prefix never makes the decoder wait for, or buffer, more than the maximum frame size.

/// The only protocol version.
pub const VERSION: u8 = 1;
/// Bytes of the length field.
pub const LENGTH_BYTES: usize = 4;
/// Bytes after the length field that every frame has: version, opcode, request id.
pub const HEADER_AFTER_LENGTH: usize = 10;
/// Bytes of the whole header.
pub const HEADER_BYTES: usize = LENGTH_BYTES + HEADER_AFTER_LENGTH;
/// The default maximum of `length` (config `tcp.max_frame_bytes`): 64 KiB, as HTTP bodies.
pub const MAX_FRAME_BYTES_DEFAULT: usize = 64 * 1024;

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub opcode: u8,
    pub request_id: u64,
    pub payload: Vec<u8>,
}

/// Why bytes are not a frame. Every one of them ends the connection (after an error frame):
/// the stream can no longer be cut into frames reliably.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// `length` above the maximum frame size.
    TooLarge { length: usize, max: usize },
    /// `length` below the fixed header.
    TooShort { length: usize },
    /// A version this decoder does not speak.
    BadVersion(u8),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge { length, max } => {
                write!(f, "frame of {length} bytes is over the maximum of {max}")
            }
            FrameError::TooShort { length } => write!(
                f,
                "frame length {length} is below the {HEADER_AFTER_LENGTH}-byte header"
            ),
            FrameError::BadVersion(v) => {
                write!(
                    f,
                    "protocol version {v} is not spoken (this server speaks {VERSION})"
                )
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Appends `frame` to `out`. Panics if the payload makes the frame longer than `u32::MAX`
/// bytes (callers keep payloads under the maximum frame size).
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let length =
        u32::try_from(HEADER_AFTER_LENGTH + frame.payload.len()).expect("payload under 4 GiB");
    out.reserve(LENGTH_BYTES + length as usize);
    out.extend_from_slice(&length.to_be_bytes());
    out.push(VERSION);
    out.push(frame.opcode);
    out.extend_from_slice(&frame.request_id.to_be_bytes());
    out.extend_from_slice(&frame.payload);
}

/// The first frame in `bytes`, and how many bytes it took; `Ok(None)` while incomplete.
pub fn decode(bytes: &[u8], max_frame_bytes: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(prefix) = bytes.get(..LENGTH_BYTES) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
    if length > max_frame_bytes {
        return Err(FrameError::TooLarge {
            length,
            max: max_frame_bytes,
        });
    }
    if length < HEADER_AFTER_LENGTH {
        return Err(FrameError::TooShort { length });
    }
    // The version is checked as soon as it arrives, before the rest.
    if let Some(&version) = bytes.get(LENGTH_BYTES) {
        if version != VERSION {
            return Err(FrameError::BadVersion(version));
        }
    }
    let total = LENGTH_BYTES + length;
    let Some(frame) = bytes.get(..total) else {
        return Ok(None);
    };
    Ok(Some((
        Frame {
            opcode: frame[5],
            request_id: u64::from_be_bytes(frame[6..14].try_into().expect("8 bytes")),
            payload: frame[HEADER_BYTES..].to_vec(),
        },
        total,
    )))
}

/// Cuts a byte stream into frames: feed it what the socket gave, then take frames until `None`.
/// It holds at most one incomplete frame (bounded by the maximum frame size) plus the bytes fed
/// since; after an error it holds nothing and refuses everything.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
    buf: Vec<u8>,
    start: usize,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    pub fn new(max_frame_bytes: usize) -> FrameDecoder {
        FrameDecoder {
            max_frame_bytes,
            buf: Vec::new(),
            start: 0,
            failed: None,
        }
    }

    /// Adds bytes read from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.max_frame_bytes {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame; `Ok(None)` until one is complete. An error is final.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        match decode(&self.buf[self.start..], self.max_frame_bytes) {
            Ok(Some((frame, used))) => {
                self.start += used;
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(error) => {
                self.failed = Some(error.clone());
                self.buf = Vec::new();
                self.start = 0;
                Err(error)
            }
        }
    }

    /// Bytes fed and not yet taken as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(opcode: u8, request_id: u64, payload: &[u8]) -> Frame {
        Frame {
            opcode,
            request_id,
            payload: payload.to_vec(),
        }
    }

    fn bytes_of(frames: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            encode(f, &mut out);
        }
        out
    }

    #[test]
    fn a_frame_has_the_documented_layout() {
        let bytes = bytes_of(&[frame(0x10, 0x0102030405060708, b"ab")]);
        assert_eq!(
            bytes,
            [0, 0, 0, 12, VERSION, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, b'a', b'b']
        );
        assert_eq!(
            decode(&bytes, 64),
            Ok(Some((frame(0x10, 0x0102030405060708, b"ab"), 16)))
        );
        assert_eq!(decode(&bytes[..15], 64), Ok(None));
    }

    #[test]
    fn hostile_lengths_are_refused_as_soon_as_they_arrive() {
        // A 4 GiB prefix: refused on its 4 bytes, nothing else waited for.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], 1024),
            Err(FrameError::TooLarge {
                length: u32::MAX as usize,
                max: 1024
            })
        );
        assert_eq!(
            decode(&[0, 0, 0, 9], 1024),
            Err(FrameError::TooShort { length: 9 })
        );
        assert_eq!(
            decode(&[0, 0, 0, 10, 2], 1024),
            Err(FrameError::BadVersion(2))
        );
        // At the limit exactly: accepted.
        let at_limit = frame(1, 1, &[7; 54]);
        let bytes = bytes_of(std::slice::from_ref(&at_limit));
        assert_eq!(decode(&bytes, 64), Ok(Some((at_limit, 68))));
        assert!(decode(&bytes, 63).is_err());
    }

    #[test]
    fn the_decoder_stays_failed_and_empty_after_an_error() {
        let mut decoder = FrameDecoder::new(64);
        decoder.feed(&[0, 0, 1, 0]);
        assert!(decoder.next_frame().is_err());
        decoder.feed(&bytes_of(&[frame(1, 1, b"")]));
        assert!(decoder.next_frame().is_err());
        assert_eq!(decoder.buffered(), 0);
    }

    proptest! {
        /// Any frames, cut into any pieces, come out whole and in order.
        #[test]
        fn frames_survive_any_split(
            frames in prop::collection::vec(
                (any::<u8>(), any::<u64>(), prop::collection::vec(any::<u8>(), 0..200))
                    .prop_map(|(o, id, p)| frame(o, id, &p)),
                0..20,
            ),
            cuts in prop::collection::vec(1usize..50, 0..100),
        ) {
            let bytes = bytes_of(&frames);
            let mut decoder = FrameDecoder::new(256);
            let mut out = Vec::new();
            let mut at = 0;
            let mut cuts = cuts.into_iter();
            while at < bytes.len() {
                let step = cuts.next().unwrap_or(bytes.len()).min(bytes.len() - at);
                decoder.feed(&bytes[at..at + step]);
                at += step;
                while let Some(f) = decoder.next_frame().unwrap() {
                    out.push(f);
                }
                // Never more than one frame's worth of bytes waits.
                prop_assert!(decoder.buffered() <= 256 + LENGTH_BYTES);
            }
            prop_assert_eq!(out, frames);
            prop_assert_eq!(decoder.buffered(), 0);
        }

        /// Arbitrary bytes never panic, and whatever decodes re-encodes to the same bytes.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let mut decoder = FrameDecoder::new(128);
            decoder.feed(&bytes);
            let mut taken = Vec::new();
            while let Ok(Some(f)) = decoder.next_frame() {
                encode(&f, &mut taken);
            }
            prop_assert_eq!(&bytes[..taken.len()], &taken[..]);
        }
    }
}
