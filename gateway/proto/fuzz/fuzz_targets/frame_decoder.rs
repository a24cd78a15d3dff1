//! Fuzz target: arbitrary bytes, fed to the TCP frame decoder in arbitrary pieces, never panic;
//! what decodes re-encodes to the same bytes; the decoder never holds more than one frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orderd_proto::frame::{encode, FrameDecoder, LENGTH_BYTES};

const MAX: usize = 1024;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the piece size, the rest is the stream.
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let mut decoder = FrameDecoder::new(MAX);
    let mut taken = Vec::new();
    'feed: for chunk in stream.chunks(piece) {
        decoder.feed(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => encode(&frame, &mut taken),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
        assert!(decoder.buffered() <= MAX + LENGTH_BYTES + piece);
    }
    assert_eq!(&stream[..taken.len()], &taken[..]);
});
