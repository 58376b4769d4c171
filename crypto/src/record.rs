//! Records of the control stream after the handshake: each frame carries
//! one message, sealed with ChaCha20-Poly1305 under a per-direction key and
//! a nonce that counts records. Both sides count, so a record that was
//! dropped, replayed, reordered or cut fails to authenticate. On meshes
//! without a password the frames carry messages as they are.

use crate::{
    frame::{self, LEN_PREFIX},
    key::{AeadKey, NONCE_LEN, SecretKey, TAG_LEN},
};

/// The largest message a record carries: topology and IPAM state of large
/// meshes fit, a hostile length does not make us allocate gigabytes.
pub const MAX_MESSAGE: usize = 16 << 20;
/// The largest frame that can hold a record.
pub const MAX_FRAME: usize = MAX_MESSAGE + TAG_LEN;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("message of {0} bytes exceeds the limit of {MAX_MESSAGE}")]
    TooLarge(usize),
    #[error("record failed authentication: it was altered, replayed, reordered or cut")]
    Forged,
    #[error("record shorter than its tag")]
    TooShort,
}

fn nonce(counter: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// Turns messages into frames.
pub struct RecordSender {
    key: Option<AeadKey>,
    counter: u64,
}

impl RecordSender {
    /// Frames for a mesh without encryption.
    pub fn plain() -> RecordSender {
        RecordSender {
            key: None,
            counter: 0,
        }
    }

    pub(crate) fn sealed(secret: &SecretKey) -> RecordSender {
        RecordSender {
            key: Some(AeadKey::new(secret)),
            counter: 0,
        }
    }

    pub fn is_encrypted(&self) -> bool {
        self.key.is_some()
    }

    /// The frame (length prefix included) that carries `message`.
    pub fn seal(&mut self, message: &[u8]) -> Result<Vec<u8>, RecordError> {
        if message.len() > MAX_MESSAGE {
            return Err(RecordError::TooLarge(message.len()));
        }
        let Some(key) = &self.key else {
            return Ok(frame::encode(message));
        };
        let body_len = message.len() + TAG_LEN;
        let mut out = Vec::with_capacity(LEN_PREFIX + body_len);
        out.extend_from_slice(&(body_len as u32).to_be_bytes());
        out.extend_from_slice(message);
        let (prefix, body) = out.split_at_mut(LEN_PREFIX);
        let tag = key.seal(nonce(self.counter), prefix, body);
        self.counter += 1;
        out.extend_from_slice(&tag);
        Ok(out)
    }
}

/// Turns frames back into messages.
pub struct RecordReceiver {
    key: Option<AeadKey>,
    counter: u64,
}

impl RecordReceiver {
    pub fn plain() -> RecordReceiver {
        RecordReceiver {
            key: None,
            counter: 0,
        }
    }

    pub(crate) fn sealed(secret: &SecretKey) -> RecordReceiver {
        RecordReceiver {
            key: Some(AeadKey::new(secret)),
            counter: 0,
        }
    }

    /// The message in `frame` (a payload from the frame decoder).
    pub fn open(&mut self, mut frame: Vec<u8>) -> Result<Vec<u8>, RecordError> {
        let Some(key) = &self.key else {
            return Ok(frame);
        };
        if frame.len() < TAG_LEN {
            return Err(RecordError::TooShort);
        }
        let prefix = (frame.len() as u32).to_be_bytes();
        let tag: [u8; TAG_LEN] = frame[frame.len() - TAG_LEN..].try_into().expect("16 bytes");
        frame.truncate(frame.len() - TAG_LEN);
        key.open(nonce(self.counter), &prefix, &mut frame, &tag)
            .map_err(|_| RecordError::Forged)?;
        self.counter += 1;
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;

    fn pair() -> (RecordSender, RecordReceiver) {
        let key = SecretKey::from_bytes([3; 32]);
        (RecordSender::sealed(&key), RecordReceiver::sealed(&key))
    }

    fn payload(frame: &[u8]) -> Vec<u8> {
        let mut d = FrameDecoder::new(MAX_FRAME);
        d.push(frame);
        d.next_frame().unwrap().unwrap()
    }

    #[test]
    fn records_round_trip_in_order() {
        let (mut tx, mut rx) = pair();
        for msg in [&b"one"[..], b"", &[7u8; 5000][..]] {
            let frame = tx.seal(msg).unwrap();
            assert!(!frame.windows(3).any(|w| w == b"one"), "plaintext leaked");
            assert_eq!(rx.open(payload(&frame)).unwrap(), msg);
        }
    }

    #[test]
    fn replay_reorder_drop_and_tamper_are_refused() {
        let (mut tx, _) = pair();
        let frames: Vec<Vec<u8>> = (0..3)
            .map(|i| payload(&tx.seal(&[i; 10]).unwrap()))
            .collect();

        let (_, mut rx) = pair();
        assert!(rx.open(frames[0].clone()).is_ok());
        assert_eq!(
            rx.open(frames[0].clone()),
            Err(RecordError::Forged),
            "replay"
        );

        let (_, mut rx) = pair();
        assert_eq!(
            rx.open(frames[1].clone()),
            Err(RecordError::Forged),
            "reordered / dropped first"
        );

        let (_, mut rx) = pair();
        let mut bent = frames[0].clone();
        bent[2] ^= 0x40;
        assert_eq!(rx.open(bent), Err(RecordError::Forged), "tampered");

        let (_, mut rx) = pair();
        let cut = frames[0][..frames[0].len() - 1].to_vec();
        assert_eq!(rx.open(cut), Err(RecordError::Forged), "cut short");
        assert_eq!(rx.open(vec![0; 5]), Err(RecordError::TooShort));
    }

    #[test]
    fn oversized_messages_are_refused() {
        let (mut tx, _) = pair();
        assert_eq!(
            tx.seal(&vec![0; MAX_MESSAGE + 1]),
            Err(RecordError::TooLarge(MAX_MESSAGE + 1))
        );
    }

    #[test]
    fn plain_records_are_just_frames() {
        let mut tx = RecordSender::plain();
        let frame = tx.seal(b"clear").unwrap();
        assert_eq!(frame, frame::encode(b"clear"));
        assert_eq!(
            RecordReceiver::plain().open(payload(&frame)).unwrap(),
            b"clear"
        );
    }
}
