//! The gateway's one policy for a poisoned std lock: recover the data and go
//! on. Every lock here guards a registry (sessions, subscriptions, calls in
//! flight, links, listed names) whose single-statement updates a panic cannot
//! leave half-done; skipping the update instead (the old `if let Ok(..)`)
//! would silently lose a registration or a subscription for good.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
