//! What a context's fixed memory is: one [`Region`] per pool, listed by
//! the scheduler (operation and task slots) and by the backend (its
//! descriptor table, timers, read buffers, rings), and the
//! [`MemoryReport`] made from them.
//!
//! The facade uses the same list to commit (fault in) and lock the pools
//! at build (`Builder::commit_memory`, `Builder::lock_memory`); a region
//! says what it holds at build ([`Contents`]) so that committing it never
//! changes what a pool has already set up.

use core::fmt;

/// Which pool a [`Region`] is.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemPool {
    /// Operation slots (`Builder::ops`), [`OP_SLOT_SIZE`](crate::OP_SLOT_SIZE) bytes each.
    Ops,
    /// The descriptor table (`Builder::descriptors`): one entry per socket.
    Descriptors,
    /// Timer objects (`Builder::timers`).
    Timers,
    /// The timer heap: one entry per timer object.
    TimerHeap,
    /// Task headers (`Builder::tasks`): one per task slot.
    TaskHeaders,
    /// Task future storage (`Builder::tasks`): one per task slot.
    TaskFutures,
    /// Read buffers of pooled reads (`Builder::read_buffers`).
    ReadBuffers,
    /// The provided buffer ring's entries (io_uring, with read buffers).
    BufferRing,
    /// The io_uring submission and completion rings and the SQE array.
    Ring,
}

impl MemPool {
    /// A short name, for the report.
    pub const fn name(self) -> &'static str {
        match self {
            MemPool::Ops => "operation slots",
            MemPool::Descriptors => "descriptors",
            MemPool::Timers => "timer objects",
            MemPool::TimerHeap => "timer heap",
            MemPool::TaskHeaders => "task headers",
            MemPool::TaskFutures => "task futures",
            MemPool::ReadBuffers => "read buffers",
            MemPool::BufferRing => "buffer ring",
            MemPool::Ring => "io_uring rings",
        }
    }
}

/// What a [`Region`] holds when the context is built, which decides how
/// it may be committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contents {
    /// Slots whose bytes mean nothing until a slot is first taken
    /// (operation slots, task futures): before the context runs, they may
    /// be written over, so committing writes one byte per page.
    Scratch,
    /// Initialised state that must be kept as it is (slab entries with
    /// their generations, free lists): committed without changing a byte
    /// (`MADV_POPULATE_WRITE`).
    State,
    /// Memory the kernel mapped and populated itself (the io_uring rings,
    /// `MAP_POPULATE`) and accounts for: reported only, never committed
    /// or locked by pinion.
    Kernel,
}

/// One contiguous region of a context's fixed memory: `count` items of
/// `item_bytes` each, from `ptr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// The pool.
    pub pool: MemPool,
    /// The first byte (null for [`Contents::Kernel`] regions, which are
    /// only reported).
    pub ptr: *mut u8,
    /// Items in the pool.
    pub count: usize,
    /// Bytes per item.
    pub item_bytes: usize,
    /// What the region holds at build.
    pub contents: Contents,
}

impl Region {
    /// Bytes of the whole region.
    pub const fn bytes(&self) -> usize {
        self.count.saturating_mul(self.item_bytes)
    }
}

/// Pools a report holds at most.
pub const MAX_POOLS: usize = 12;

/// The memory a context reserved when it was built, per pool and in
/// total, and what one connection takes (`IoContext::memory`).
///
/// - **Per idle connection**: one descriptor entry and one operation
///   slot, what a connected socket with a pending read holds. A pooled
///   read on io_uring's buffer ring holds no buffer while it waits, and
///   neither does a pooled read on epoll (it takes one when data
///   arrives).
/// - **Per active connection**: idle plus a second operation slot (a
///   write in flight while the read waits) and one read buffer of the
///   read pool (data being echoed), when the context has a read pool.
///   Buffers the program brings itself (a `Vec` per stream) are its own
///   and not counted.
///
/// Kernel memory (socket buffers, the epoll instance) is not counted
/// either; the io_uring rings are listed because they are mapped into
/// the process.
///
/// `Display` prints a small table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryReport {
    backend: &'static str,
    pools: [Option<PoolLine>; MAX_POOLS],
    /// Whether the pools were committed and locked at build.
    committed: bool,
    locked: bool,
}

/// One line of a [`MemoryReport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolLine {
    /// The pool.
    pub pool: MemPool,
    /// Items in it.
    pub count: usize,
    /// Bytes per item.
    pub item_bytes: usize,
}

impl PoolLine {
    /// Bytes of the pool.
    pub const fn bytes(&self) -> usize {
        self.count.saturating_mul(self.item_bytes)
    }
}

impl MemoryReport {
    /// An empty report for backend `backend`.
    pub const fn new(backend: &'static str, committed: bool, locked: bool) -> Self {
        MemoryReport {
            backend,
            pools: [None; MAX_POOLS],
            committed,
            locked,
        }
    }

    /// Adds `r`'s pool (to the line of the same pool, if there is one).
    /// Empty pools are left out.
    pub fn add(&mut self, r: &Region) {
        if r.bytes() == 0 {
            return;
        }
        for slot in self.pools.iter_mut() {
            match slot {
                Some(l) if l.pool == r.pool && l.item_bytes == r.item_bytes => {
                    l.count += r.count;
                    return;
                }
                Some(_) => {}
                None => {
                    *slot = Some(PoolLine {
                        pool: r.pool,
                        count: r.count,
                        item_bytes: r.item_bytes,
                    });
                    return;
                }
            }
        }
        debug_assert!(false, "more than MAX_POOLS pools");
    }

    /// The pools, in the order they were added.
    pub fn pools(&self) -> impl Iterator<Item = &PoolLine> {
        self.pools.iter().flatten()
    }

    /// Bytes of one item of `pool` (0 without that pool).
    pub fn item_bytes(&self, pool: MemPool) -> usize {
        self.pools()
            .find(|l| l.pool == pool)
            .map_or(0, |l| l.item_bytes)
    }

    /// Bytes of `pool` (0 without it).
    pub fn bytes(&self, pool: MemPool) -> usize {
        self.pools()
            .filter(|l| l.pool == pool)
            .map(|l| l.bytes())
            .sum()
    }

    /// Bytes reserved in all.
    pub fn total(&self) -> usize {
        self.pools().map(|l| l.bytes()).sum()
    }

    /// Bytes one idle connection takes (see the type's docs).
    pub fn per_idle_connection(&self) -> usize {
        self.item_bytes(MemPool::Descriptors) + self.item_bytes(MemPool::Ops)
    }

    /// Bytes one active connection takes (see the type's docs).
    pub fn per_active_connection(&self) -> usize {
        self.per_idle_connection()
            + self.item_bytes(MemPool::Ops)
            + self.item_bytes(MemPool::ReadBuffers)
    }

    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The pools were committed at build (`Builder::commit_memory`).
    pub fn committed(&self) -> bool {
        self.committed
    }

    /// The pools were locked at build (`Builder::lock_memory`).
    pub fn locked(&self) -> bool {
        self.locked
    }
}

impl fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match (self.committed, self.locked) {
            (_, true) => "committed and locked at build",
            (true, false) => "committed at build",
            (false, false) => "reserved, committed as touched",
        };
        writeln!(f, "memory of the {} context ({state})", self.backend)?;
        writeln!(
            f,
            "  {:<16} {:>9} {:>7} {:>11}",
            "pool", "count", "each", "bytes"
        )?;
        for l in self.pools() {
            writeln!(
                f,
                "  {:<16} {:>9} {:>7} {:>11}",
                l.pool.name(),
                l.count,
                l.item_bytes,
                l.bytes()
            )?;
        }
        writeln!(
            f,
            "  {:<16} {:>9} {:>7} {:>11}",
            "total",
            "",
            "",
            self.total()
        )?;
        writeln!(
            f,
            "  per idle connection   {:>7} bytes",
            self.per_idle_connection()
        )?;
        write!(
            f,
            "  per active connection {:>7} bytes",
            self.per_active_connection()
        )
    }
}
