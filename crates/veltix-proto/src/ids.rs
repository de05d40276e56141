//! Request ids: the Gen 3 counters, the Gen 1 random ids, and a pending-request table whose
//! deadlines are driven by a clock the caller passes in.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::time::Instant;

use crate::{Error, Generation};

/// Size of the client half of the Gen 3 id space (`0..32768`).
pub const CLIENT_ID_WINDOW: u32 = 32_768;
/// First id of the server half of the Gen 3 id space.
pub const SERVER_ID_OFFSET: u32 = 32_768;
/// Python's default `ServerConfig.id_window`.
pub const DEFAULT_SERVER_ID_WINDOW: u32 = 30_000;

/// Hands out request ids the way the peer generation expects.
///
/// Gen 3 (Python 3.3.0): a counter over `offset .. offset + window`, skipping ids that are still
/// pending, wrapping around; clients use `0..32768`, servers `32768..32768 + min(id_window, 32768)`.
/// Gen 1 (Python 1.6.9): a random 32-bit id per request (pending ids are skipped as well).
///
/// ```
/// use veltix_proto::IdAllocator;
/// let mut ids = IdAllocator::client();
/// assert_eq!(ids.next(|_| false).unwrap(), 0);
/// assert_eq!(ids.next(|id| id == 1).unwrap(), 2); // 1 is still pending: skipped
/// let mut srv = IdAllocator::server(30_000);
/// assert_eq!(srv.next(|_| false).unwrap(), 32_768);
/// ```
#[derive(Clone, Debug)]
pub struct IdAllocator {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Counter {
        offset: u32,
        window: u32,
        counter: u32,
    },
    Random(fastrand::Rng),
}

impl IdAllocator {
    /// Gen 3 client ids: `0, 1, …, 32767, 0, …`.
    pub fn client() -> Self {
        Self::counter(0, CLIENT_ID_WINDOW)
    }

    /// Gen 3 server ids: `32768 .. 32768 + min(id_window, 32768)`; an `id_window` of 0 counts as 1.
    pub fn server(id_window: u32) -> Self {
        Self::counter(SERVER_ID_OFFSET, id_window.clamp(1, CLIENT_ID_WINDOW))
    }

    /// A counter over `offset .. offset + window` (window >= 1).
    pub fn counter(offset: u32, window: u32) -> Self {
        IdAllocator {
            kind: Kind::Counter {
                offset,
                window: window.max(1),
                counter: 0,
            },
        }
    }

    /// Gen 1 random 32-bit ids.
    pub fn random() -> Self {
        IdAllocator {
            kind: Kind::Random(fastrand::Rng::new()),
        }
    }

    /// Gen 1 random ids from a fixed seed (for reproducible tests).
    pub fn random_seeded(seed: u64) -> Self {
        IdAllocator {
            kind: Kind::Random(fastrand::Rng::with_seed(seed)),
        }
    }

    /// The allocator a role uses by default in a generation (a server with Python's default
    /// `id_window`; see [`IdAllocator::for_server`] for another window).
    ///
    /// ```
    /// use veltix_proto::{Generation, IdAllocator};
    /// assert_eq!(IdAllocator::for_role(Generation::Gen3, false).next(|_| false).unwrap(), 0);
    /// assert_eq!(IdAllocator::for_role(Generation::Gen3, true).next(|_| false).unwrap(), 32_768);
    /// ```
    pub fn for_role(generation: Generation, server: bool) -> Self {
        match server {
            true => Self::for_server(generation, DEFAULT_SERVER_ID_WINDOW),
            false => match generation {
                Generation::Gen1 => Self::random(),
                Generation::Gen3 => Self::client(),
            },
        }
    }

    /// A server's allocator: Gen 1 random ids, Gen 3 ids in `32768 .. 32768 + id_window`.
    ///
    /// ```
    /// use veltix_proto::{Generation, IdAllocator};
    /// let mut ids = IdAllocator::for_server(Generation::Gen3, 2);
    /// let got: Vec<u32> = (0..3).map(|_| ids.next(|_| false).unwrap()).collect();
    /// assert_eq!(got, [32_768, 32_769, 32_768]);
    /// ```
    pub fn for_server(generation: Generation, id_window: u32) -> Self {
        match generation {
            Generation::Gen1 => Self::random(),
            Generation::Gen3 => Self::server(id_window),
        }
    }

    /// The next id that `is_pending` says is free.
    pub fn next(&mut self, is_pending: impl Fn(u32) -> bool) -> Result<u32, Error> {
        match &mut self.kind {
            Kind::Counter {
                offset,
                window,
                counter,
            } => {
                for _ in 0..*window {
                    let id = *offset + *counter;
                    *counter = (*counter + 1) % *window;
                    if !is_pending(id) {
                        return Ok(id);
                    }
                }
                Err(Error::IdsExhausted { window: *window })
            }
            Kind::Random(rng) => {
                // 2^32 ids: a pending collision is rare; give up only after many tries.
                for _ in 0..1024 {
                    let id = rng.u32(..);
                    if !is_pending(id) {
                        return Ok(id);
                    }
                }
                Err(Error::IdsExhausted { window: u32::MAX })
            }
        }
    }
}

/// Requests waiting for a reply, keyed by request id, each with an optional deadline.
///
/// No clock is read inside: the caller passes `now`, so expiry is testable without sleeping.
/// The value type is the caller's (a channel, an enum of waiter kinds...); the hasher is a type
/// parameter so a hot path can use a cheap one for its small integer keys.
///
/// ```
/// use std::time::{Duration, Instant};
/// use veltix_proto::PendingTable;
/// let t0 = Instant::now();
/// let mut pending = PendingTable::new();
/// pending.insert(7, t0 + Duration::from_secs(5), "waiter").unwrap();
/// pending.insert_untimed(8, "patient").unwrap(); // never expires; removed by hand
/// assert!(pending.insert_untimed(8, "again").is_err());
/// assert!(pending.expire(t0 + Duration::from_secs(4)).is_empty());
/// assert_eq!(pending.expire(t0 + Duration::from_secs(5)), vec![(7, "waiter")]);
/// assert_eq!(pending.remove(8), Some("patient"));
/// assert!(pending.is_empty());
/// ```
#[derive(Debug)]
pub struct PendingTable<T, S = RandomState> {
    entries: HashMap<u32, (Option<Instant>, T), S>,
    deadlines: BTreeSet<(Instant, u32)>,
}

impl<T> Default for PendingTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> PendingTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::with_hasher(RandomState::new())
    }
}

impl<T, S: BuildHasher> PendingTable<T, S> {
    /// An empty table whose id map uses `hasher`.
    ///
    /// ```
    /// use std::hash::BuildHasherDefault;
    /// use std::collections::hash_map::DefaultHasher;
    /// use veltix_proto::PendingTable;
    /// let mut t: PendingTable<(), BuildHasherDefault<DefaultHasher>> =
    ///     PendingTable::with_hasher(Default::default());
    /// t.insert_untimed(1, ()).unwrap();
    /// assert!(t.contains(1));
    /// ```
    pub fn with_hasher(hasher: S) -> Self {
        PendingTable {
            entries: HashMap::with_hasher(hasher),
            deadlines: BTreeSet::new(),
        }
    }

    /// Registers a waiter that expires at `deadline`; an id that is already pending is an error.
    pub fn insert(&mut self, id: u32, deadline: Instant, value: T) -> Result<(), Error> {
        self.insert_entry(id, Some(deadline), value)
    }

    /// Registers a waiter without a deadline (its owner enforces its own timeout, or none):
    /// [`expire`](PendingTable::expire) never returns it.
    pub fn insert_untimed(&mut self, id: u32, value: T) -> Result<(), Error> {
        self.insert_entry(id, None, value)
    }

    fn insert_entry(&mut self, id: u32, deadline: Option<Instant>, value: T) -> Result<(), Error> {
        if self.entries.contains_key(&id) {
            return Err(Error::DuplicatePending { id });
        }
        self.entries.insert(id, (deadline, value));
        if let Some(d) = deadline {
            self.deadlines.insert((d, id));
        }
        Ok(())
    }

    /// Is this id pending?
    pub fn contains(&self, id: u32) -> bool {
        self.entries.contains_key(&id)
    }

    /// The waiter of an id, if pending.
    pub fn get(&self, id: u32) -> Option<&T> {
        self.entries.get(&id).map(|(_, v)| v)
    }

    /// Removes a waiter (reply arrived, or the waiter gave up).
    pub fn remove(&mut self, id: u32) -> Option<T> {
        let (deadline, value) = self.entries.remove(&id)?;
        if let Some(d) = deadline {
            self.deadlines.remove(&(d, id));
        }
        Some(value)
    }

    /// Removes and returns every waiter whose deadline is `<= now`, earliest first.
    pub fn expire(&mut self, now: Instant) -> Vec<(u32, T)> {
        let mut out = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some((_, v)) = self.entries.remove(&id) {
                out.push((id, v));
            }
        }
        out
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// Removes every waiter, dropping them.
    pub fn clear(&mut self) {
        self.deadlines.clear();
        self.entries.clear();
    }

    /// Removes every waiter (the connection dropped).
    pub fn drain(&mut self) -> impl Iterator<Item = (u32, T)> + '_ {
        self.deadlines.clear();
        self.entries.drain().map(|(id, (_, v))| (id, v))
    }

    /// Number of waiters.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if nobody waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
