//! Sealing of data packets for the userspace path.
//!
//! Each sealed packet is `header || ciphertext || tag` with a 12-byte header
//! that is also the nonce:
//!
//! ```text
//! +----------------+--------------------------------+------------+---------+
//! | epoch (u32 BE) | counter (u64 BE)               | ciphertext | tag(16) |
//! +----------------+--------------------------------+------------+---------+
//! ```
//!
//! Each direction has its own key. Every `rekey_after_packets` packets or
//! `rekey_after` time the sender moves to the next epoch, whose key is
//! derived from the previous one (so an old key cannot be recomputed from a
//! new one); the receiver follows when it authenticates a packet of a newer
//! epoch, and keeps the previous epoch's key briefly for packets still in
//! flight. Sealing and opening work in place on caller buffers and never
//! allocate.

use std::{
    ops::Range,
    time::{Duration, Instant},
};

use arrayvec::ArrayVec;

use crate::{
    kdf::hkdf,
    key::{AeadKey, Job, NONCE_LEN, SecretKey, TAG_LEN},
    replay::{Replay, ReplayWindow},
};

pub const HEADER_LEN: usize = NONCE_LEN;
/// Bytes a sealed packet adds to its payload.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// How many epochs a receiver follows a sender ahead of it, e.g. after a
/// long outage during which the sender rekeyed.
const MAX_EPOCH_SKIP: u32 = 8;
/// Packets sealed or opened together at most: their state is on the stack.
const RUN: usize = 64;

/// When to move to a new key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RekeyPolicy {
    pub after_packets: u64,
    pub after: Duration,
    /// How long a receiver still accepts the previous epoch.
    pub keep_previous: Duration,
}

impl Default for RekeyPolicy {
    fn default() -> Self {
        RekeyPolicy {
            after_packets: 1 << 32,
            after: Duration::from_secs(120),
            keep_previous: Duration::from_secs(10),
        }
    }
}

/// Why a packet was not opened. Each is a reason to drop the packet, never
/// to tear down the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("packet shorter than header and tag")]
    TooShort,
    #[error("packet of an epoch this receiver has no key for")]
    UnknownEpoch,
    #[error("packet replayed")]
    Replayed,
    #[error("packet too old for the replay window")]
    TooOld,
    #[error("packet failed authentication")]
    Forged,
}

/// Why a packet could not be sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("buffer of {0} bytes has no room for header and tag")]
    NoRoom(usize),
}

fn next_epoch_key(secret: &SecretKey, epoch: u32) -> SecretKey {
    hkdf(
        b"weft datagram rekey",
        secret.expose(),
        &[&epoch.to_be_bytes()],
    )
}

fn header(epoch: u32, counter: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&epoch.to_be_bytes());
    h[4..].copy_from_slice(&counter.to_be_bytes());
    h
}

/// Seals packets in one direction.
pub struct Sealer {
    secret: SecretKey,
    key: AeadKey,
    epoch: u32,
    counter: u64,
    epoch_started: Instant,
    policy: RekeyPolicy,
}

impl Sealer {
    pub fn new(secret: SecretKey, now: Instant, policy: RekeyPolicy) -> Sealer {
        Sealer {
            key: AeadKey::new(&secret),
            secret,
            epoch: 0,
            counter: 0,
            epoch_started: now,
            policy,
        }
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Seals `packet` in place. Its layout is `[header room][payload][tag
    /// room]`: the first [`HEADER_LEN`] and last [`TAG_LEN`] bytes are
    /// overwritten, the payload between them is encrypted. `aad` is
    /// authenticated but not sent (the caller's own header, for instance).
    pub fn seal(&mut self, now: Instant, aad: &[u8], packet: &mut [u8]) -> Result<(), SealError> {
        self.seal_each(now, [(aad, packet)])
    }

    /// [`Sealer::seal`] for each packet of a batch, with the same `aad`.
    pub fn seal_batch<B: AsMut<[u8]>>(
        &mut self,
        now: Instant,
        aad: &[u8],
        packets: &mut [B],
    ) -> Result<(), SealError> {
        self.seal_each(now, packets.iter_mut().map(|p| (aad, p.as_mut())))
    }

    /// [`Sealer::seal`] for each `(aad, packet)`, in order, up to the first
    /// packet that cannot be sealed. Packets sealed together are sealed
    /// faster than one by one.
    pub fn seal_each<'p>(
        &mut self,
        now: Instant,
        packets: impl IntoIterator<Item = (&'p [u8], &'p mut [u8])>,
    ) -> Result<(), SealError> {
        let mut jobs = ArrayVec::<Job, RUN>::new();
        let mut result = Ok(());
        for (aad, packet) in packets {
            if packet.len() < OVERHEAD {
                result = Err(SealError::NoRoom(packet.len()));
                break;
            }
            if self.counter >= self.policy.after_packets
                || now >= self.epoch_started + self.policy.after
            {
                self.key.seal_many(&mut jobs);
                jobs.clear();
                self.rekey(now);
            }
            let nonce = header(self.epoch, self.counter);
            self.counter += 1;
            let (head, rest) = packet.split_at_mut(HEADER_LEN);
            let (data, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
            head.copy_from_slice(&nonce);
            let tag = tag.try_into().expect("TAG_LEN bytes");
            jobs.push(Job::new(nonce, aad, data, tag));
            if jobs.is_full() {
                self.key.seal_many(&mut jobs);
                jobs.clear();
            }
        }
        self.key.seal_many(&mut jobs);
        result
    }

    fn rekey(&mut self, now: Instant) {
        self.epoch += 1;
        self.secret = next_epoch_key(&self.secret, self.epoch);
        self.key = AeadKey::new(&self.secret);
        self.counter = 0;
        self.epoch_started = now;
    }
}

struct EpochKey {
    epoch: u32,
    secret: SecretKey,
    key: AeadKey,
    window: ReplayWindow,
}

impl EpochKey {
    fn new(epoch: u32, secret: SecretKey) -> EpochKey {
        EpochKey {
            epoch,
            key: AeadKey::new(&secret),
            secret,
            window: ReplayWindow::default(),
        }
    }

    fn open(
        &mut self,
        counter: u64,
        nonce: [u8; HEADER_LEN],
        aad: &[u8],
        body: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), OpenError> {
        self.window.check(counter)?;
        self.key
            .open(nonce, aad, body, tag)
            .map_err(|_| OpenError::Forged)?;
        self.window.accept(counter);
        Ok(())
    }

    /// Opens the packets of `run`, which passed the replay check, and
    /// empties it: a result is changed only for a packet that fails.
    fn open_run(&mut self, run: &mut Run, results: &mut [Result<Range<usize>, OpenError>]) {
        self.key.open_many(&mut run.jobs);
        for (job, &(i, counter)) in run.jobs.iter().zip(&run.packets) {
            if !job.authentic {
                results[i] = Err(OpenError::Forged);
            } else if let Err(replay) = self.window.check(counter) {
                results[i] = Err(replay.into());
            } else {
                self.window.accept(counter);
            }
        }
        run.jobs.clear();
        run.packets.clear();
    }
}

/// Opens packets of one direction.
pub struct Opener {
    current: EpochKey,
    previous: Option<(EpochKey, Instant)>,
    policy: RekeyPolicy,
}

impl Opener {
    pub fn new(secret: SecretKey, policy: RekeyPolicy) -> Opener {
        Opener {
            current: EpochKey::new(0, secret),
            previous: None,
            policy,
        }
    }

    pub fn epoch(&self) -> u32 {
        self.current.epoch
    }

    /// Authenticates and decrypts `packet` in place; returns the range of
    /// the payload within it. On error the packet must be dropped (its
    /// bytes may have been changed).
    pub fn open(
        &mut self,
        now: Instant,
        aad: &[u8],
        packet: &mut [u8],
    ) -> Result<Range<usize>, OpenError> {
        let mut results = [Err(OpenError::TooShort)];
        self.open_each(now, [(aad, packet)], &mut results);
        let [result] = results;
        result
    }

    /// [`Opener::open`] for each packet of a batch, with the same `aad`
    /// and a result per packet.
    pub fn open_batch<B: AsMut<[u8]>>(
        &mut self,
        now: Instant,
        aad: &[u8],
        packets: &mut [B],
        results: &mut [Result<Range<usize>, OpenError>],
    ) {
        self.open_each(now, packets.iter_mut().map(|p| (aad, p.as_mut())), results)
    }

    /// [`Opener::open`] for each `(aad, packet)` in order, the result of
    /// packet i in `results[i]` (packets beyond `results` are left alone).
    /// Packets of the current epoch are opened together, faster than one
    /// by one, with the same outcome.
    pub fn open_each<'p>(
        &mut self,
        now: Instant,
        packets: impl IntoIterator<Item = (&'p [u8], &'p mut [u8])>,
        results: &mut [Result<Range<usize>, OpenError>],
    ) {
        if let Some((_, since)) = &self.previous
            && now >= *since + self.policy.keep_previous
        {
            self.previous = None;
        }
        let mut run = Run::default();
        for (i, (aad, packet)) in packets.into_iter().enumerate().take(results.len()) {
            if packet.len() < OVERHEAD {
                results[i] = Err(OpenError::TooShort);
                continue;
            }
            let nonce: [u8; HEADER_LEN] = packet[..HEADER_LEN].try_into().expect("length checked");
            let epoch = u32::from_be_bytes(nonce[..4].try_into().expect("4 bytes"));
            let counter = u64::from_be_bytes(nonce[4..].try_into().expect("8 bytes"));
            let payload = HEADER_LEN..packet.len() - TAG_LEN;
            let (data, tag) = packet[HEADER_LEN..].split_at_mut(payload.len());
            let tag: &mut [u8; TAG_LEN] = tag.try_into().expect("TAG_LEN bytes");
            if epoch == self.current.epoch {
                // A first check spares the work on replays; the run checks
                // again before accepting, for a packet twice in one run.
                results[i] = match self.current.window.check(counter) {
                    Ok(()) => Ok(payload),
                    Err(replay) => Err(replay.into()),
                };
                if results[i].is_ok() {
                    run.jobs.push(Job::new(nonce, aad, data, tag));
                    run.packets.push((i, counter));
                    if run.jobs.is_full() {
                        self.current.open_run(&mut run, results);
                    }
                }
                continue;
            }
            // Keep the order: a packet of a newer epoch moves `current`.
            self.current.open_run(&mut run, results);
            results[i] = self
                .open_other_epoch(now, counter, nonce, aad, data, tag)
                .map(|()| payload);
        }
        self.current.open_run(&mut run, results);
    }

    /// Opens a packet of an epoch other than the current one.
    fn open_other_epoch(
        &mut self,
        now: Instant,
        counter: u64,
        nonce: [u8; HEADER_LEN],
        aad: &[u8],
        body: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), OpenError> {
        let epoch = u32::from_be_bytes(nonce[..4].try_into().expect("4 bytes"));
        if epoch < self.current.epoch {
            return match &mut self.previous {
                Some((prev, _)) if prev.epoch == epoch => prev.open(counter, nonce, aad, body, tag),
                _ => Err(OpenError::UnknownEpoch),
            };
        }
        if epoch - self.current.epoch > MAX_EPOCH_SKIP {
            return Err(OpenError::UnknownEpoch);
        }
        // A newer epoch: derive its key, and move to it only once a packet
        // has proven it.
        let mut secret = self.current.secret.clone();
        for e in self.current.epoch + 1..=epoch {
            secret = next_epoch_key(&secret, e);
        }
        let mut next = EpochKey::new(epoch, secret);
        next.open(counter, nonce, aad, body, tag)?;
        let old = std::mem::replace(&mut self.current, next);
        self.previous = Some((old, now));
        Ok(())
    }
}

/// Packets of one epoch waiting to be opened together: each job with its
/// index among the caller's packets and its counter.
#[derive(Default)]
struct Run<'p> {
    jobs: ArrayVec<Job<'p>, RUN>,
    packets: ArrayVec<(usize, u64), RUN>,
}

impl From<Replay> for OpenError {
    fn from(r: Replay) -> OpenError {
        match r {
            Replay::Duplicate => OpenError::Replayed,
            Replay::TooOld => OpenError::TooOld,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(policy: RekeyPolicy, now: Instant) -> (Sealer, Opener) {
        let secret = SecretKey::from_bytes([9; 32]);
        (
            Sealer::new(secret.clone(), now, policy),
            Opener::new(secret, policy),
        )
    }

    fn packet(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        p.extend_from_slice(payload);
        p.extend_from_slice(&[0u8; TAG_LEN]);
        p
    }

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 8439 section 2.8.2: the header of our packets is the nonce, so
    /// epoch 0x07000000 and counter 0x4041424344454647 give its nonce.
    #[test]
    fn rfc8439_aead_test_vector() {
        let key: [u8; 32] =
            unhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
                .try_into()
                .unwrap();
        let now = Instant::now();
        let policy = RekeyPolicy {
            after_packets: u64::MAX,
            ..RekeyPolicy::default()
        };
        let mut sealer = Sealer::new(SecretKey::from_bytes(key), now, policy);
        sealer.epoch = 0x0700_0000;
        sealer.counter = 0x4041_4243_4445_4647;
        let aad = unhex("50515253c0c1c2c3c4c5c6c7");
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let mut p = packet(plaintext);
        sealer.seal(now, &aad, &mut p).unwrap();
        let expected_ct = unhex(
            "d31a8d34648e60db7b86afbc53ef7ec2 a4aded51296e08fea9e2b5a736ee62d6 3dbea45e8ca9671282fafb69da92728b
             1a71de0a9e060b2905d6a5b67ecd3b36 92ddbd7f2d778b8c9803aee328091b58 fab324e4fad675945585808b4831d7bc
             3ff4def08e4b7a9de576d26586cec64b 6116",
        );
        assert_eq!(&p[..HEADER_LEN], unhex("07000000 4041424344454647"));
        assert_eq!(&p[HEADER_LEN..p.len() - TAG_LEN], expected_ct);
        assert_eq!(
            &p[p.len() - TAG_LEN..],
            unhex("1ae10b594f09e26a7e902ecbd0600691")
        );

        let mut opener = Opener::new(SecretKey::from_bytes(key), RekeyPolicy::default());
        opener.current.epoch = 0x0700_0000;
        let range = opener.open(now, &aad, &mut p).unwrap();
        assert_eq!(&p[range], plaintext);
    }

    #[test]
    fn tampering_anywhere_is_detected() {
        let now = Instant::now();
        let (mut s, _) = pair(RekeyPolicy::default(), now);
        let mut sealed = packet(b"payload of a frame");
        s.seal(now, b"aad", &mut sealed).unwrap();
        for at in 0..sealed.len() {
            let (_, mut o) = pair(RekeyPolicy::default(), now);
            let mut bent = sealed.clone();
            bent[at] ^= 1;
            assert!(
                o.open(now, b"aad", &mut bent).is_err(),
                "flip at byte {at} accepted"
            );
        }
        let (_, mut o) = pair(RekeyPolicy::default(), now);
        assert_eq!(
            o.open(now, b"other aad", &mut sealed.clone()),
            Err(OpenError::Forged)
        );
        assert_eq!(
            o.open(now, b"aad", &mut sealed[..OVERHEAD - 1].to_vec()),
            Err(OpenError::TooShort)
        );
        assert!(o.open(now, b"aad", &mut sealed).is_ok());
    }

    #[test]
    fn replays_are_refused_and_reordering_within_the_window_is_fine() {
        let now = Instant::now();
        let (mut s, mut o) = pair(RekeyPolicy::default(), now);
        let mut sealed: Vec<Vec<u8>> = (0..100u8)
            .map(|i| {
                let mut p = packet(&[i; 40]);
                s.seal(now, b"", &mut p).unwrap();
                p
            })
            .collect();
        sealed.reverse();
        for p in &sealed {
            assert!(
                o.open(now, b"", &mut p.clone()).is_ok(),
                "reordered packet refused"
            );
        }
        for p in &sealed {
            assert_eq!(o.open(now, b"", &mut p.clone()), Err(OpenError::Replayed));
        }
    }

    #[test]
    fn rekeys_by_count_and_by_age_and_the_receiver_follows() {
        let t0 = Instant::now();
        let policy = RekeyPolicy {
            after_packets: 10,
            after: Duration::from_secs(60),
            keep_previous: Duration::from_secs(5),
        };
        let (mut s, mut o) = pair(policy, t0);
        let mut late = Vec::new();
        for i in 0..25u8 {
            let mut p = packet(&[i; 20]);
            s.seal(t0, b"", &mut p).unwrap();
            if i == 9 {
                late = p.clone(); // the last packet of epoch 0, delivered late
                continue;
            }
            assert!(o.open(t0, b"", &mut p).is_ok());
        }
        assert_eq!((s.epoch(), o.epoch()), (2, 2));
        let t1 = t0 + Duration::from_secs(61);
        let mut p = packet(b"after a minute");
        s.seal(t1, b"", &mut p).unwrap();
        assert_eq!(s.epoch(), 3, "rekeyed by age");
        assert!(o.open(t1, b"", &mut p).is_ok());
        assert_eq!(o.epoch(), 3);
        assert_eq!(
            o.open(t1, b"", &mut late),
            Err(OpenError::UnknownEpoch),
            "two epochs back is gone"
        );
    }

    #[test]
    fn the_previous_epoch_is_accepted_only_briefly() {
        let t0 = Instant::now();
        let policy = RekeyPolicy {
            after_packets: 1,
            ..RekeyPolicy::default()
        };
        let (mut s, mut o) = pair(policy, t0);
        let (mut a, mut b) = (packet(b"a"), packet(b"b"));
        s.seal(t0, b"", &mut a).unwrap();
        s.seal(t0, b"", &mut b).unwrap();
        assert!(o.open(t0, b"", &mut b).is_ok(), "epoch 1 first");
        let mut late = a.clone();
        assert!(
            o.open(t0 + Duration::from_secs(1), b"", &mut late).is_ok(),
            "epoch 0 still in grace"
        );
        assert_eq!(
            o.open(t0 + Duration::from_secs(11), b"", &mut a),
            Err(OpenError::UnknownEpoch),
            "epoch 0 after its grace"
        );
    }

    #[test]
    fn a_forged_packet_of_a_future_epoch_moves_nothing() {
        let now = Instant::now();
        let (_, mut o) = pair(RekeyPolicy::default(), now);
        let mut forged = packet(b"x");
        forged[3] = 1; // epoch 1, garbage tag
        assert_eq!(o.open(now, b"", &mut forged), Err(OpenError::Forged));
        assert_eq!(o.epoch(), 0);
        forged[2] = 1; // epoch 257: beyond what we follow
        assert_eq!(o.open(now, b"", &mut forged), Err(OpenError::UnknownEpoch));
    }

    /// Batches give each packet the result it would have alone: rekeying
    /// and the receiver's move to a newer epoch happen mid-batch, a packet
    /// twice in one batch is refused the second time, a forged one fails
    /// alone, and each packet has its own associated data.
    #[test]
    fn a_batch_opens_as_its_packets_would_one_by_one() {
        let now = Instant::now();
        let policy = RekeyPolicy {
            after_packets: 40,
            ..RekeyPolicy::default()
        };
        let (mut s, mut o) = pair(policy, now);
        let aads: Vec<[u8; 2]> = (0..100u8).map(|i| [i, 0xaa]).collect();
        let mut packets: Vec<Vec<u8>> = (0..100usize)
            .map(|i| packet(&vec![i as u8; i * 29 % 1500]))
            .collect();
        s.seal_each(
            now,
            aads.iter()
                .map(|a| &a[..])
                .zip(packets.iter_mut().map(|p| &mut p[..])),
        )
        .unwrap();
        assert_eq!(s.epoch(), 2, "rekeyed twice within the batch");
        let epochs: Vec<u8> = packets.iter().map(|p| p[3]).collect();
        assert_eq!((epochs[39], epochs[40], epochs[80]), (0, 1, 2));

        // Deliver packet 50 twice, and forge packet 60.
        let mut received = packets.clone();
        received.insert(51, packets[50].clone());
        let mut received_aads = aads.clone();
        received_aads.insert(51, aads[50]);
        received[61][HEADER_LEN] ^= 1;
        let mut results = vec![Err(OpenError::TooShort); received.len()];
        o.open_each(
            now,
            received_aads
                .iter()
                .map(|a| &a[..])
                .zip(received.iter_mut().map(|p| &mut p[..])),
            &mut results,
        );
        for (i, result) in results.iter().enumerate() {
            let expected = match i {
                51 => Err(OpenError::Replayed),
                61 => Err(OpenError::Forged),
                _ => Ok(HEADER_LEN..received[i].len() - TAG_LEN),
            };
            assert_eq!(*result, expected, "packet {i} of the batch");
        }
        for (i, p) in received
            .iter()
            .enumerate()
            .filter(|(i, _)| ![51, 61].contains(i))
        {
            let sent = if i < 51 { i } else { i - 1 };
            let len = sent * 29 % 1500;
            assert_eq!(
                p[HEADER_LEN..HEADER_LEN + len],
                vec![sent as u8; len],
                "packet {i}"
            );
        }
        assert_eq!(o.epoch(), 2, "the receiver followed within the batch");

        // The genuine packet 60 still opens: the forgery did not mark it seen.
        let mut genuine = packets[60].clone();
        assert!(o.open(now, &aads[60], &mut genuine).is_ok());
    }
}
