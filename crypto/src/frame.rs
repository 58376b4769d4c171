//! Framing of the control stream: every message, handshake or record, is
//! a 4-byte big-endian length followed by that many bytes.

pub const LEN_PREFIX: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("the stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
}

/// Prefixes `payload` with its length.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(LEN_PREFIX + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Cuts a byte stream into frames. A frame larger than the limit is an
/// error as soon as its length arrives, before any of it is buffered, so a
/// hostile length cannot make us allocate.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max: usize,
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max: max_frame,
        }
    }

    /// Changes the limit, e.g. from handshake-sized to record-sized frames.
    pub fn set_max(&mut self, max_frame: usize) {
        self.max = max_frame;
    }

    pub fn push(&mut self, bytes: &[u8]) {
        // Reclaim consumed space before growing, so a long-lived stream's
        // buffer stays the size of what is pending.
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's payload, if one has fully arrived.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let pending = &self.buf[self.start..];
        if pending.len() < LEN_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes(pending[..LEN_PREFIX].try_into().expect("4 bytes")) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if pending.len() < LEN_PREFIX + len {
            return Ok(None);
        }
        let frame = pending[LEN_PREFIX..LEN_PREFIX + len].to_vec();
        self.start += LEN_PREFIX + len;
        Ok(Some(frame))
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Call when the stream ends: an unfinished frame means truncation.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(FrameError::Truncated { buffered }),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_huge_length_is_refused_before_buffering() {
        let mut d = FrameDecoder::new(1 << 20);
        d.push(&(100u32 << 20).to_be_bytes());
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge {
                len: 100 << 20,
                max: 1 << 20
            })
        );
    }

    #[test]
    fn truncation_is_reported_at_the_end() {
        let mut d = FrameDecoder::new(100);
        let frame = encode(b"hello");
        d.push(&frame[..6]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated { buffered: 6 }));
        d.push(&frame[6..]);
        assert_eq!(d.next_frame(), Ok(Some(b"hello".to_vec())));
        assert_eq!(d.finish(), Ok(()));
    }

    proptest! {
        /// However the stream is cut into reads, the same frames come out.
        #[test]
        fn any_split_gives_the_same_frames(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
            cuts in prop::collection::vec(1usize..64, 1..50),
        ) {
            let stream: Vec<u8> = payloads.iter().flat_map(|p| encode(p)).collect();
            let mut d = FrameDecoder::new(1000);
            let mut out = Vec::new();
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                if at >= stream.len() { break; }
                let end = (at + cut).min(stream.len());
                d.push(&stream[at..end]);
                at = end;
                while let Some(f) = d.next_frame().unwrap() { out.push(f); }
            }
            prop_assert_eq!(out, payloads);
            prop_assert_eq!(d.finish(), Ok(()));
        }
    }
}
