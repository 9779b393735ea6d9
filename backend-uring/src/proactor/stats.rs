//! What the proactor reports: the ring's shape ([`RingInfo`]) and its
//! counters ([`Stats`], behind the `stats` feature).

#[cfg(feature = "stats")]
use core::sync::atomic::AtomicU64;

/// Kernel features found at start-up and the Builder's toggles, as used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingInfo {
    /// Submission queue entries (the kernel rounds up to a power of two).
    pub sq_entries: u32,
    /// Completion queue entries.
    pub cq_entries: u32,
    /// Bytes the ring pins in locked kernel memory: SQ ring, SQE array, CQ
    /// ring, and the provided buffer ring's entries when there is one (the
    /// read buffers themselves are ordinary memory the kernel copies into).
    /// No registered buffers are used, so this is all of it.
    pub pinned_bytes: usize,
    /// Listeners use one multishot accept instead of one SQE per accept.
    pub multishot_accept: bool,
    /// The ring was set up with `IORING_SETUP_SQPOLL`.
    pub sqpoll: bool,
    /// Sockets are registered files (`IORING_REGISTER_FILES`, one slot per
    /// descriptor-table entry) and SQEs name them by index. Off when the
    /// Builder switched it off or the kernel refused the table.
    pub registered_files: bool,
    /// Pooled reads are served by a provided buffer ring
    /// (`IORING_REGISTER_PBUF_RING`): the kernel picks a read buffer only
    /// when data arrives. `false` without read buffers, or when they are a
    /// software pool, where a waiting pooled read holds its buffer
    /// (`Builder::buffer_ring(false)`, more than 32768 buffers, or a
    /// kernel that refused the ring).
    pub buffer_ring: bool,
}

/// Proactor counters (feature `stats`), a plain snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `io_uring_enter` calls made by pinion.
    pub enter_calls: u64,
    /// SQEs queued.
    pub sqes_submitted: u64,
    /// CQEs reaped.
    pub cqes_reaped: u64,
    /// Times a push found the SQ full and submitted to make room.
    pub sq_full_events: u64,
    /// Interrupter (eventfd) writes.
    pub interrupts: u64,
    /// User operations whose completion was handed to the scheduler.
    pub ops_completed: u64,
    /// Connections a listener had to close because the descriptor table
    /// was full.
    pub accepts_dropped: u64,
    /// `io_uring_register` calls that install or remove a registered file
    /// (one when a socket enters the table, one when it leaves).
    pub files_updates: u64,
    /// Pooled reads that ended in `PoolExhausted`: data arrived while the
    /// buffer ring was empty (`ENOBUFS`), or, in the software fallback,
    /// while the pool was.
    pub read_buffers_empty: u64,
}

impl Stats {
    /// System calls the proactor made for the program's I/O:
    /// `io_uring_enter` calls, interrupter (eventfd) writes and registered
    /// file updates. Opening, configuring and closing sockets is not
    /// counted.
    pub fn syscalls(&self) -> u64 {
        self.enter_calls + self.interrupts + self.files_updates
    }
}

#[cfg(feature = "stats")]
#[derive(Default)]
pub(crate) struct StatCells {
    pub(crate) enter_calls: AtomicU64,
    pub(crate) sqes_submitted: AtomicU64,
    pub(crate) cqes_reaped: AtomicU64,
    pub(crate) sq_full_events: AtomicU64,
    pub(crate) interrupts: AtomicU64,
    pub(crate) ops_completed: AtomicU64,
    pub(crate) accepts_dropped: AtomicU64,
    pub(crate) files_updates: AtomicU64,
    pub(crate) read_buffers_empty: AtomicU64,
}

/// Adds to a stats counter; nothing without feature `stats`.
macro_rules! stat {
    ($self:expr, $field:ident) => {
        stat!($self, $field, 1)
    };
    ($self:expr, $field:ident, $n:expr) => {{
        #[cfg(feature = "stats")]
        $self
            .stats
            .$field
            .fetch_add($n as u64, core::sync::atomic::Ordering::Relaxed);
        #[cfg(not(feature = "stats"))]
        let _ = &$n;
    }};
}
pub(crate) use stat;

#[cfg(feature = "stats")]
impl StatCells {
    /// A plain copy of the counters.
    pub(crate) fn snapshot(&self) -> Stats {
        use core::sync::atomic::Ordering::Relaxed;
        let l = |a: &AtomicU64| a.load(Relaxed);
        Stats {
            enter_calls: l(&self.enter_calls),
            sqes_submitted: l(&self.sqes_submitted),
            cqes_reaped: l(&self.cqes_reaped),
            sq_full_events: l(&self.sq_full_events),
            interrupts: l(&self.interrupts),
            ops_completed: l(&self.ops_completed),
            accepts_dropped: l(&self.accepts_dropped),
            files_updates: l(&self.files_updates),
            read_buffers_empty: l(&self.read_buffers_empty),
        }
    }
}
