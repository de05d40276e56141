//! A persistent Python thread state for the core's worker threads.
//!
//! PyO3's `Python::attach` on a thread that has no Python thread state calls
//! `PyGILState_Ensure`, which creates one, and `PyGILState_Release`, which destroys it again
//! when its counter drops to zero: every batch of callbacks on a handler-pool thread paid for a
//! `PyThreadState` allocation, its registration in the interpreter's thread list and its
//! teardown. [`keep`] gives the calling thread one thread state for its whole life: it calls
//! `PyGILState_Ensure` once (creating the state, counter 1) and `PyEval_SaveThread` (releasing
//! the GIL, keeping the state). Later attaches find that state and only take the GIL; their
//! release brings the counter back to 1, never to 0. When the thread ends, a thread-local
//! destructor re-attaches and releases the state for good, unless the interpreter is shutting
//! down (then the state is left to the interpreter's own teardown).
//!
//! Measured (docs/bench/py-thread-state-ab.json, alternating pairs in one invocation): Python
//! `send_and_wait` to a Python echo route 96–143 µs vs 119–174 µs median, burst to a Python
//! route 412k–750k vs 337k–487k msg/s, better in every pair.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::sync::atomic::Ordering;

use pyo3::ffi;

use crate::SHUTDOWN;

struct Kept {
    kept: Cell<bool>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        if !self.kept.get() || SHUTDOWN.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: `keep` left this thread with a thread state whose gilstate counter is 1 and
        // without the GIL. `PyGILState_Ensure` takes the GIL with that state (counter 2).
        // `PyGILState_Release` must be called with the state current (holding the GIL): the
        // first release passes `LOCKED`, so it only brings the counter to 1 and keeps the GIL;
        // the second brings it to 0, at which `PyGILState_Release` clears and deletes the
        // state and releases the GIL, as it does for any thread state it created. The
        // interpreter is still running (SHUTDOWN is set by the package's atexit hook, before
        // finalization begins).
        unsafe {
            let _ = ffi::PyGILState_Ensure();
            ffi::PyGILState_Release(ffi::PyGILState_STATE::PyGILState_LOCKED);
            ffi::PyGILState_Release(ffi::PyGILState_STATE::PyGILState_UNLOCKED);
        }
    }
}

thread_local! {
    static KEPT: Kept = const { Kept { kept: Cell::new(false) } };
}

/// Gives the calling thread a Python thread state that lives as long as the thread (see the
/// module doc). Cheap after the first call (one thread-local read). Must be called without the
/// GIL held and outside any `Python::attach`.
pub(crate) fn keep() {
    let _ = KEPT.try_with(|k| {
        if k.kept.get() || SHUTDOWN.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: called on a thread that does not hold the GIL (the package calls this before
        // attaching, on core threads only). If the thread already has a thread state (a Python
        // thread), nothing is done. Otherwise `PyGILState_Ensure` creates the state and takes
        // the GIL (counter 1), and `PyEval_SaveThread` releases the GIL while keeping the
        // state current for this thread's gilstate, so the next `PyGILState_Ensure` (PyO3's
        // attach) reuses it. The saved pointer is not needed: `PyGILState_Ensure` restores the
        // state it finds in its thread-specific slot.
        unsafe {
            if ffi::Py_IsInitialized() == 0 || !ffi::PyGILState_GetThisThreadState().is_null() {
                return;
            }
            let _ = ffi::PyGILState_Ensure();
            let _ = ffi::PyEval_SaveThread();
        }
        k.kept.set(true);
    });
}
