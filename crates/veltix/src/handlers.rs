//! The handler table shared by the server and the client: routes by type code, the `on_recv`
//! fallback, and connect/disconnect callbacks, swapped atomically as a whole (readers take a
//! cheap `Arc` snapshot, registrations copy-on-write).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock};

/// Hashes a `u16` type code or a `u32` request id with one multiply (Fibonacci hashing) instead
/// of SipHash: both lookups are on every message's path, and the keys in the tables are not
/// attacker-chosen (type codes are chosen by the program; pending request ids are allocated by
/// us, mostly sequentially; a peer only chooses the ids it looks up, which cannot lengthen a
/// chain).
#[derive(Default)]
pub(crate) struct CodeHasher(u64);

impl Hasher for CodeHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type CodeMap<R> = HashMap<u16, R, BuildHasherDefault<CodeHasher>>;

/// Runs one batch of handler calls (the closure it is given); see `Server::around_handlers`.
pub(crate) type Around = Arc<dyn Fn(&mut dyn FnMut()) + Send + Sync>;

/// Routes (`R`), connect callbacks (`C`) and disconnect callbacks (`D`) of one side.
#[derive(Clone)]
pub(crate) struct HandlerSet<R, C, D> {
    routes: CodeMap<R>,
    on_recv: Option<R>,
    pub(crate) on_connect: Vec<C>,
    pub(crate) on_disconnect: Vec<D>,
    around: Option<Around>,
}

impl<R, C, D> Default for HandlerSet<R, C, D> {
    fn default() -> Self {
        HandlerSet {
            routes: CodeMap::default(),
            on_recv: None,
            on_connect: Vec::new(),
            on_disconnect: Vec::new(),
            around: None,
        }
    }
}

impl<R, C, D> HandlerSet<R, C, D> {
    /// The route for `code`, else the `on_recv` fallback (Python's rule order).
    pub(crate) fn handler_for(&self, code: u16) -> Option<&R> {
        self.routes.get(&code).or(self.on_recv.as_ref())
    }

    /// Runs `batch` inside the `around` wrapper if one is set. `batch` runs exactly once, even if
    /// the wrapper forgets to call it (it must be idempotent after its first run).
    pub(crate) fn run_batch(&self, batch: &mut dyn FnMut()) {
        if let Some(around) = &self.around {
            around(batch);
        }
        batch();
    }
}

/// A [`HandlerSet`] behind a lock, replaced wholesale on every registration.
pub(crate) struct Registry<R, C, D> {
    cell: RwLock<Arc<HandlerSet<R, C, D>>>,
}

impl<R: Clone, C: Clone, D: Clone> Registry<R, C, D> {
    pub(crate) fn new() -> Self {
        Registry {
            cell: RwLock::new(Arc::new(HandlerSet::default())),
        }
    }

    /// The current handlers.
    pub(crate) fn get(&self) -> Arc<HandlerSet<R, C, D>> {
        self.cell.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update<T>(&self, f: impl FnOnce(&mut HandlerSet<R, C, D>) -> T) -> T {
        let mut cell = self.cell.write().unwrap_or_else(|p| p.into_inner());
        let mut new = (**cell).clone();
        let out = f(&mut new);
        *cell = Arc::new(new);
        out
    }

    pub(crate) fn set_route(&self, code: u16, route: R) {
        self.update(|h| h.routes.insert(code, route));
    }

    pub(crate) fn remove_route(&self, code: u16) -> bool {
        self.update(|h| h.routes.remove(&code).is_some())
    }

    pub(crate) fn set_on_recv(&self, route: R) {
        self.update(|h| h.on_recv = Some(route));
    }

    pub(crate) fn add_on_connect(&self, f: C) {
        self.update(|h| h.on_connect.push(f));
    }

    pub(crate) fn set_around(&self, f: Around) {
        self.update(|h| h.around = Some(f));
    }

    pub(crate) fn add_on_disconnect(&self, f: D) {
        self.update(|h| h.on_disconnect.push(f));
    }
}
