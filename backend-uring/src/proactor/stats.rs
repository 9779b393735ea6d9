//! What the proactor reports: the ring's shape ([`RingInfo`]) and its
//! counters ([`Stats`], behind the `stats` feature).

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
    /// The ring was set up with `IORING_SETUP_COOP_TASKRUN`
    /// ([`Options::coop_taskrun`](crate::Options::coop_taskrun)); `false`
    /// when switched off, with SQPOLL, or refused by the kernel.
    pub coop_taskrun: bool,
    /// Writes of at least this many bytes on TCP sockets are zero-copy
    /// sends ([`Options::send_zc`](crate::Options::send_zc)); `None` when
    /// switched off or the kernel lacks `IORING_OP_SEND_ZC`.
    pub send_zc: Option<u32>,
}

pinion_core::counters! {
    /// Proactor counters (feature `stats`), a plain snapshot.
    pub struct Stats / StatCells {
    /// `io_uring_enter` calls made by pinion.
    enter_calls,
    /// SQEs queued.
    sqes_submitted,
    /// CQEs reaped.
    cqes_reaped,
    /// Times a push found the SQ full and submitted to make room.
    sq_full_events,
    /// Interrupter (eventfd) writes.
    interrupts,
    /// User operations whose completion was handed to the scheduler.
    ops_completed,
    /// Connections a listener had to close because the descriptor table
    /// was full.
    accepts_dropped,
    /// `io_uring_register` calls that install or remove a registered file
    /// (one when a socket enters the table, one when it leaves).
    files_updates,
    /// Writes sent as `IORING_OP_SEND_ZC`.
    zc_sends,
    /// Zero-copy notifications reaped: each one handed a write's buffer
    /// back.
    zc_notifs,
    /// Pooled reads that ended in `PoolFull(ReadBuffers)`: data arrived while the
    /// buffer ring was empty (`ENOBUFS`), or, in the software fallback,
    /// while the pool was.
    read_buffers_empty,
    }
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

pub(crate) use pinion_core::stat;
