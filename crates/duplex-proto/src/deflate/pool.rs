//! Reset zlib states kept per thread for codecs without context takeover.
//!
//! A state is taken for one message and given back reset, so what comes out
//! never depends on which connection used it before. The pool is bounded:
//! beyond [`KEEP`] states per kind, returned ones are freed. States
//! are only borrowed within one thread; a connection that moves threads
//! between messages simply takes from the other thread's pool.

use flate2::{Compress, Decompress};
use std::cell::RefCell;

/// How many idle states of each kind a thread keeps.
pub const KEEP: usize = 4;

#[derive(Default)]
struct Pool {
    /// (level, window bits, state).
    compress: Vec<(u32, u8, Compress)>,
    decompress: Vec<Decompress>,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// `f` on this thread's pool; `None` while the thread is being torn
/// down (the caller then builds or frees a state itself).
fn with<R>(f: impl FnOnce(&mut Pool) -> R) -> Option<R> {
    POOL.try_with(|p| p.try_borrow_mut().ok().map(|mut p| f(&mut p)))
        .ok()
        .flatten()
}

pub(crate) fn take_compress(level: u32, bits: u8) -> Option<Compress> {
    with(|p| {
        let i = p
            .compress
            .iter()
            .position(|(l, b, _)| (*l, *b) == (level, bits))?;
        Some(p.compress.swap_remove(i).2)
    })
    .flatten()
}

pub(crate) fn give_compress(level: u32, bits: u8, c: Compress) {
    with(|p| {
        if p.compress.len() < KEEP {
            p.compress.push((level, bits, c));
        }
    });
}

pub(crate) fn take_decompress() -> Option<Decompress> {
    with(|p| p.decompress.pop()).flatten()
}

pub(crate) fn give_decompress(d: Decompress) {
    with(|p| {
        if p.decompress.len() < KEEP {
            p.decompress.push(d);
        }
    });
}

/// Idle states this thread holds: (compressors, inflaters).
pub fn idle_states() -> (usize, usize) {
    with(|p| (p.compress.len(), p.decompress.len())).unwrap_or((0, 0))
}
