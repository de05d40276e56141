//! Request id allocation (PROTOCOL.md §B.5.1) and the pending-request table, driven by an
//! `Instant` base plus offsets (no sleeping).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use veltix_proto::ids::{CLIENT_ID_WINDOW, DEFAULT_SERVER_ID_WINDOW, SERVER_ID_OFFSET};
use veltix_proto::{Error, Generation, IdAllocator, PendingTable};

const NONE_PENDING: fn(u32) -> bool = |_| false;

#[test]
fn client_ids_count_0_to_32767_then_wrap_to_0() {
    let mut ids = IdAllocator::client();
    for expected in 0..32_768 {
        assert_eq!(ids.next(NONE_PENDING).unwrap(), expected);
    }
    assert_eq!(ids.next(NONE_PENDING).unwrap(), 0);
    assert_eq!(ids.next(NONE_PENDING).unwrap(), 1);
    assert_eq!(CLIENT_ID_WINDOW, 32_768);
}

#[test]
fn pending_ids_are_skipped() {
    let mut ids = IdAllocator::client();
    assert_eq!(ids.next(|id| id < 3).unwrap(), 3);
    assert_eq!(ids.next(|id| id == 4 || id == 5).unwrap(), 6);
    assert_eq!(ids.next(NONE_PENDING).unwrap(), 7);
}

#[test]
fn skipping_wraps_around_the_window() {
    let mut ids = IdAllocator::client();
    for _ in 0..32_767 {
        ids.next(NONE_PENDING).unwrap();
    }
    // The counter is at 32767: 32767, 0 and 1 are pending, so the next free id is 2.
    assert_eq!(ids.next(|id| id == 32_767 || id <= 1).unwrap(), 2);
    assert_eq!(ids.next(NONE_PENDING).unwrap(), 3);
}

#[test]
fn all_pending_is_ids_exhausted() {
    let mut ids = IdAllocator::client();
    assert_eq!(ids.next(NONE_PENDING).unwrap(), 0);
    assert_eq!(
        ids.next(|_| true),
        Err(Error::IdsExhausted { window: 32_768 })
    );
    // The allocator keeps working once an id is free again (one full lap was skipped).
    assert_eq!(ids.next(|id| id != 1).unwrap(), 1);
    assert_eq!(ids.next(NONE_PENDING).unwrap(), 2);

    let mut srv = IdAllocator::server(DEFAULT_SERVER_ID_WINDOW);
    assert_eq!(
        srv.next(|_| true),
        Err(Error::IdsExhausted { window: 30_000 })
    );
    let mut rnd = IdAllocator::random_seeded(1);
    assert_eq!(
        rnd.next(|_| true),
        Err(Error::IdsExhausted { window: u32::MAX })
    );
}

#[test]
fn server_ids_use_the_upper_half() {
    let mut ids = IdAllocator::server(DEFAULT_SERVER_ID_WINDOW);
    assert_eq!(SERVER_ID_OFFSET, 32_768);
    for expected in 32_768..32_768 + 30_000 {
        assert_eq!(ids.next(NONE_PENDING).unwrap(), expected);
    }
    // 62767 was the last one: wrap to 32768.
    assert_eq!(ids.next(NONE_PENDING).unwrap(), 32_768);
}

#[test]
fn server_id_window_is_clamped_to_32768() {
    let mut ids = IdAllocator::server(40_000);
    let mut seen = HashSet::new();
    for i in 0..32_768u32 {
        let id = ids.next(NONE_PENDING).unwrap();
        assert_eq!(id, 32_768 + i);
        assert!(id <= u32::from(u16::MAX), "{id} does not fit a Gen 3 frame");
        seen.insert(id);
    }
    assert_eq!(seen.len(), 32_768);
    assert_eq!(ids.next(NONE_PENDING).unwrap(), 32_768, "wraps after 65535");
    assert_eq!(
        IdAllocator::server(u32::MAX).next(|_| true),
        Err(Error::IdsExhausted { window: 32_768 })
    );
    // A window of 0 behaves as 1.
    let mut one = IdAllocator::server(0);
    assert_eq!(one.next(NONE_PENDING).unwrap(), 32_768);
    assert_eq!(one.next(NONE_PENDING).unwrap(), 32_768);
    assert_eq!(one.next(|_| true), Err(Error::IdsExhausted { window: 1 }));
}

#[test]
fn default_allocators_per_role() {
    assert_eq!(
        IdAllocator::for_role(Generation::Gen3, false)
            .next(NONE_PENDING)
            .unwrap(),
        0
    );
    assert_eq!(
        IdAllocator::for_role(Generation::Gen3, true)
            .next(NONE_PENDING)
            .unwrap(),
        32_768
    );
    // Gen 1: random ids; different allocators do not produce one fixed sequence.
    let a: Vec<u32> = {
        let mut r = IdAllocator::for_role(Generation::Gen1, false);
        (0..8).map(|_| r.next(NONE_PENDING).unwrap()).collect()
    };
    let b: Vec<u32> = {
        let mut r = IdAllocator::for_role(Generation::Gen1, true);
        (0..8).map(|_| r.next(NONE_PENDING).unwrap()).collect()
    };
    assert_ne!(a, b);
}

#[test]
fn random_ids_are_reproducible_with_a_seed_and_skip_pending() {
    let first = IdAllocator::random_seeded(42).next(NONE_PENDING).unwrap();
    assert_eq!(
        IdAllocator::random_seeded(42).next(NONE_PENDING).unwrap(),
        first
    );
    let other = IdAllocator::random_seeded(42)
        .next(|id| id == first)
        .unwrap();
    assert_ne!(other, first);
}

#[test]
fn counter_with_custom_offset_and_window() {
    let mut ids = IdAllocator::counter(0, 30_000); // Python 2.0.3's allocator
    assert_eq!(ids.next(NONE_PENDING).unwrap(), 0);
    let mut ids = IdAllocator::counter(100, 3);
    let got: Vec<u32> = (0..7).map(|_| ids.next(NONE_PENDING).unwrap()).collect();
    assert_eq!(got, [100, 101, 102, 100, 101, 102, 100]);
}

#[test]
fn allocator_and_pending_table_together() {
    let t0 = Instant::now();
    let mut pending = PendingTable::new();
    let mut ids = IdAllocator::counter(0, 4);
    for _ in 0..4 {
        let id = ids.next(|id| pending.contains(id)).unwrap();
        pending.insert(id, t0 + Duration::from_secs(1), ()).unwrap();
    }
    assert_eq!(
        ids.next(|id| pending.contains(id)),
        Err(Error::IdsExhausted { window: 4 })
    );
    pending.remove(2).unwrap();
    assert_eq!(ids.next(|id| pending.contains(id)).unwrap(), 2);
}

// ---------------------------------------------------------------------------------------------
// PendingTable

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn pending_expire_is_inclusive_and_earliest_first() {
    let t0 = Instant::now();
    let mut p = PendingTable::new();
    p.insert(1, t0 + secs(5), "a").unwrap();
    p.insert(2, t0 + secs(1), "b").unwrap();
    p.insert(3, t0 + secs(3), "c").unwrap();
    assert_eq!(p.len(), 3);
    assert_eq!(p.next_deadline(), Some(t0 + secs(1)));
    assert!(p.expire(t0).is_empty());
    assert!(p.expire(t0 + secs(1) - Duration::from_nanos(1)).is_empty());
    assert_eq!(p.expire(t0 + secs(1)), vec![(2, "b")]);
    assert_eq!(p.next_deadline(), Some(t0 + secs(3)));
    assert!(!p.contains(2) && p.contains(1) && p.contains(3));
    // Far in the future: everything left, earliest first.
    assert_eq!(p.expire(t0 + secs(3600)), vec![(3, "c"), (1, "a")]);
    assert!(p.is_empty());
    assert_eq!(p.next_deadline(), None);
}

#[test]
fn pending_same_deadline_expires_together() {
    let t0 = Instant::now();
    let mut p = PendingTable::new();
    for id in [9, 3, 7] {
        p.insert(id, t0 + secs(2), id).unwrap();
    }
    let mut got = p.expire(t0 + secs(2));
    got.sort_unstable();
    assert_eq!(got, vec![(3, 3), (7, 7), (9, 9)]);
}

#[test]
fn pending_remove() {
    let t0 = Instant::now();
    let mut p = PendingTable::new();
    p.insert(10, t0 + secs(1), 'x').unwrap();
    p.insert(11, t0 + secs(2), 'y').unwrap();
    assert_eq!(p.remove(10), Some('x'));
    assert_eq!(p.remove(10), None);
    assert_eq!(p.remove(99), None);
    // The removed entry's deadline is gone too.
    assert_eq!(p.next_deadline(), Some(t0 + secs(2)));
    assert!(p.expire(t0 + secs(1)).is_empty());
    // The id can be registered again, with a new deadline.
    p.insert(10, t0 + secs(7), 'z').unwrap();
    assert_eq!(p.expire(t0 + secs(2)), vec![(11, 'y')]);
    assert_eq!(p.next_deadline(), Some(t0 + secs(7)));
    assert_eq!(p.expire(t0 + secs(7)), vec![(10, 'z')]);
}

#[test]
fn pending_duplicate_id_is_refused() {
    let t0 = Instant::now();
    let mut p = PendingTable::new();
    p.insert(5, t0 + secs(1), 1).unwrap();
    assert_eq!(
        p.insert(5, t0 + secs(9), 2),
        Err(Error::DuplicatePending { id: 5 })
    );
    // The original entry is untouched.
    assert_eq!(p.len(), 1);
    assert_eq!(p.next_deadline(), Some(t0 + secs(1)));
    assert_eq!(p.remove(5), Some(1));
}

#[test]
fn pending_drain_empties_everything() {
    let t0 = Instant::now();
    let mut p = PendingTable::default();
    for id in 0..100u32 {
        p.insert(id, t0 + Duration::from_millis(u64::from(id % 7)), id * 2)
            .unwrap();
    }
    let mut drained: Vec<(u32, u32)> = p.drain().collect();
    drained.sort_unstable();
    assert_eq!(drained, (0..100).map(|i| (i, i * 2)).collect::<Vec<_>>());
    assert!(p.is_empty());
    assert_eq!(p.len(), 0);
    assert_eq!(p.next_deadline(), None);
    assert!(p.expire(t0 + secs(1)).is_empty());
    // Usable again afterwards.
    p.insert(1, t0, 0).unwrap();
    assert_eq!(p.expire(t0), vec![(1, 0)]);
}
