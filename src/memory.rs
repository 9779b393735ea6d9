//! A context's fixed memory: the report of what each pool reserved
//! ([`IoContext::memory`](crate::IoContext::memory)), and committing and
//! locking the pools at build
//! ([`Builder::commit_memory`](crate::Builder::commit_memory),
//! [`Builder::lock_memory`](crate::Builder::lock_memory)).
//!
//! Written once for both backends: the scheduler lists its pools
//! (operation and task slots) and the backend its own
//! ([`Backend::memory`]: descriptor table, timers, read buffers, rings),
//! as [`Region`]s.
//!
//! # What is committed before asking
//!
//! Pools whose entries are initialised one by one at build (descriptor
//! tables, timer objects and heap, task headers) are resident from the
//! start, and so are io_uring's rings and read buffers (`MAP_POPULATE`).
//! Operation slots and task futures are uninitialised bytes: their pages
//! are faulted in by the first operation or task to use them, at run time.
//! The epoll read pool writes its free-list link into each buffer's first
//! bytes, so with buffers larger than a page only the first page of each
//! is resident. `commit_memory` faults all of these in at build.
//!
//! # Locking: the pools, not the process
//!
//! `lock_memory` `mlock`s the pools' pages, so the need is exact (the
//! pages the pools span) and only the context's own memory is pinned.
//! `mlockall(MCL_CURRENT | MCL_FUTURE)` would also pin the program's text,
//! stacks and heap, which is what a hard real-time program wants, but it
//! is a decision for the program's `main`, not for a library's builder:
//! it locks every thread stack's full reservation and makes every later
//! `mmap` fail over the limit. Call it yourself when that is what you
//! need; the io_uring rings are pinned by the kernel either way.

use pinion_core::backend::{Backend, BuildError, Sched};
use pinion_core::Error;
use pinion_sys::{mem, Errno};

pub use pinion_core::memory::{Contents, MemPool, MemoryReport, PoolLine, Region};

/// Calls `f` with every region of the context's fixed memory.
fn regions<B: Backend>(sched: &Sched<B>, f: &mut dyn FnMut(Region)) {
    sched.memory(f);
    sched.task().memory(f);
}

/// The memory report of the context on `sched`.
pub(crate) fn report<B: Backend>(sched: &Sched<B>) -> MemoryReport {
    let (committed, locked) = sched.memory_marks();
    let mut r = MemoryReport::new(B::NAME, committed, locked);
    regions(sched, &mut |region| r.add(&region));
    r
}

/// Faults in every page of every pool of a context being built.
pub(crate) fn commit<B: Backend>(sched: &Sched<B>) -> Result<(), BuildError> {
    let mut out = Ok(());
    regions(sched, &mut |r| {
        if out.is_err() || r.bytes() == 0 {
            return;
        }
        match r.contents {
            // SAFETY: the context is still being built: no slot has been
            // taken and nothing else can reach the pools, and a scratch
            // region's bytes mean nothing until a slot is first taken
            // (`Contents::Scratch`), so zeroing one byte per page is
            // harmless.
            Contents::Scratch => unsafe { mem::touch(r.ptr, r.bytes()) },
            Contents::State => {
                out = mem::populate(r.ptr, r.bytes()).map_err(|e| BuildError::Os {
                    what: "committing the pools (madvise MADV_POPULATE_WRITE, or mlock)",
                    error: Error::from(e),
                })
            }
            Contents::Kernel => {}
        }
    });
    out
}

/// Locks every page of every pool; on failure unlocks what it locked.
pub(crate) fn lock<B: Backend>(sched: &Sched<B>) -> Result<(), BuildError> {
    let mut need = 0;
    regions(sched, &mut |r| {
        if r.contents != Contents::Kernel {
            need += mem::page_span(r.ptr, r.bytes()).1;
        }
    });
    let mut failed: Option<Errno> = None;
    regions(sched, &mut |r| {
        if failed.is_none() && r.contents != Contents::Kernel {
            failed = mem::lock(r.ptr, r.bytes()).err();
        }
    });
    let Some(e) = failed else { return Ok(()) };
    unlock(sched);
    Err(if [Errno::NOMEM, Errno::PERM, Errno::AGAIN].contains(&e) {
        BuildError::MemoryLock {
            need,
            allowed: mem::memlock_limit(),
        }
    } else {
        BuildError::Os {
            what: "mlock of the pools",
            error: Error::from(e),
        }
    })
}

/// Unlocks every page of every pool.
pub(crate) fn unlock<B: Backend>(sched: &Sched<B>) {
    regions(sched, &mut |r| {
        if r.contents != Contents::Kernel {
            mem::unlock(r.ptr, r.bytes());
        }
    });
}
