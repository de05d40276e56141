//! Two small building blocks every module may use, depending on none of them (so they tie no
//! modules together): the poison-tolerant lock and the builder-setter macro.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, going on with the data if a thread panicked while holding it (a panicking user
/// handler must not wedge the connection or the pool: every lock here guards state that stays
/// consistent between statements).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes by-value builder setters that assign a field (or wrap it in `Some`).
macro_rules! setters {
    ($ty:ident { $($(#[$doc:meta])* $name:ident: $arg:ty => $wrap:path;)* }) => {
        impl $ty {
            $($(#[$doc])* pub fn $name(mut self, value: $arg) -> Self {
                self.$name = $wrap(value);
                self
            })*
        }
    };
}
pub(crate) use setters;
