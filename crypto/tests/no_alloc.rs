//! Sealing and opening a batch of packets allocates nothing: the hot path
//! of the userspace data path runs on buffers the caller owns.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use weft_crypto::{
    Opener, RekeyPolicy, Sealer, SecretKey,
    datagram::{HEADER_LEN, OVERHEAD},
};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Only the test's own thread counts: the harness's threads allocate
    // whenever they like (CI once saw one such allocation mid-test).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn batches_seal_and_open_without_allocating() {
    let now = Instant::now();
    let key = SecretKey::from_bytes([5; 32]);
    let policy = RekeyPolicy {
        after_packets: 40, // rekeys inside the batches, which must not allocate either
        ..RekeyPolicy::default()
    };
    let mut sealer = Sealer::new(key.clone(), now, policy);
    let mut opener = Opener::new(key, policy);
    let mut packets: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 1400 + OVERHEAD]).collect();
    let mut results = vec![Ok(0..0); packets.len()];

    COUNTING.with(|c| c.set(true));
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    drop(std::hint::black_box(Box::new(0u64)));
    let before = before + 1;
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        before,
        "the counter counts"
    );
    for _ in 0..10 {
        sealer.seal_batch(now, b"conn", &mut packets).unwrap();
        opener.open_batch(now, b"conn", &mut packets, &mut results);
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().is_ok_and(|range| range.start == HEADER_LEN))
        );
    }
    COUNTING.with(|c| c.set(false));
    let during = ALLOCATIONS.load(Ordering::SeqCst) - before;
    assert_eq!(during, 0, "{during} allocations while sealing and opening");
    assert!(sealer.epoch() >= 15, "the batches crossed rekeys");
}
