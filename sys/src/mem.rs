//! Committing and locking memory: the page size, faulting pages in
//! (`MADV_POPULATE_WRITE`, or a write per page where the bytes may be
//! overwritten), `mlock`/`munlock`, and `RLIMIT_MEMLOCK`.
//!
//! Every call here changes only whether pages are resident or locked,
//! never what they hold, except [`touch`], which is `unsafe` for that
//! reason.
//!
//! ```
//! # #[cfg(not(miri))] { // miri has no madvise
//! use pinion_sys::mem;
//!
//! let mut v = vec![7u8; 3 * mem::page_size()];
//! mem::populate(v.as_ptr(), v.len()).unwrap();
//! assert!(v.iter().all(|&b| b == 7), "populating keeps the bytes");
//! // SAFETY: `v` is ours and its bytes may be overwritten.
//! unsafe { mem::touch(v.as_mut_ptr(), v.len()) };
//! # }
//! ```

use crate::Errno;

/// `MADV_POPULATE_WRITE` (Linux 5.14), the same number on every
/// architecture; not in every `libc` release yet.
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// The fallback's step: mlocked and munlocked at once, so that even the
/// smallest `RLIMIT_MEMLOCK` (64 KiB on old systems) admits it.
const FALLBACK_CHUNK: usize = 64 * 1024;

/// Bytes per page.
pub fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system; no memory.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page)
        .ok()
        .filter(|&p| p > 0)
        .unwrap_or(4096)
}

/// The whole pages `[ptr, ptr + len)` touches: (first page, bytes).
pub fn page_span(ptr: *const u8, len: usize) -> (usize, usize) {
    if len == 0 {
        return (ptr as usize, 0);
    }
    let page = page_size();
    let start = ptr as usize & !(page - 1);
    let end = (ptr as usize).saturating_add(len).next_multiple_of(page);
    (start, end - start)
}

/// Writes a zero into the first byte of every page `[ptr, ptr + len)`
/// touches, and into its last byte: after this, every page is resident
/// and private to the process.
///
/// # Safety
/// The range is writable memory that nothing else uses now and whose
/// bytes mean nothing yet (uninitialised slots), so writing over them
/// changes nothing anyone relies on.
pub unsafe fn touch(ptr: *mut u8, len: usize) {
    if len == 0 {
        return;
    }
    let page = page_size();
    let mut off = 0;
    while off < len {
        // SAFETY: `off < len`: inside the range, which the caller lets us
        // overwrite. Volatile, so the write is not optimised away.
        unsafe { ptr.add(off).write_volatile(0) };
        // The next page's first byte (`ptr` need not be page-aligned).
        off += page - ((ptr as usize + off) & (page - 1));
    }
    // SAFETY: as above, the last byte of the range.
    unsafe { ptr.add(len - 1).write_volatile(0) };
}

/// Faults in, writable, every page `[ptr, ptr + len)` touches, without
/// changing a byte: `MADV_POPULATE_WRITE`, or on kernels before 5.14
/// (`EINVAL`) an `mlock` and `munlock` of each 64 KiB in turn (locking
/// a private writable page faults it in for writing; it stays resident
/// once unlocked). The fallback unlocks those pages even if they were
/// locked before; callers lock after populating.
pub fn populate(ptr: *const u8, len: usize) -> Result<(), Errno> {
    let (start, bytes) = page_span(ptr, len);
    if bytes == 0 {
        return Ok(());
    }
    // SAFETY: madvise on whole pages of our own memory; POPULATE_WRITE
    // only faults them in, it changes no byte.
    match syscall!(madvise(
        start as *mut libc::c_void,
        bytes,
        MADV_POPULATE_WRITE
    )) {
        Ok(_) => return Ok(()),
        Err(e) if e == Errno::INVAL => {}
        Err(e) => return Err(e),
    }
    let mut off = 0;
    while off < bytes {
        let n = FALLBACK_CHUNK.min(bytes - off);
        lock((start + off) as *const u8, n)?;
        unlock((start + off) as *const u8, n);
        off += n;
    }
    Ok(())
}

/// Locks every page `[ptr, ptr + len)` touches in memory (`mlock`),
/// faulting them in. `ENOMEM`/`EPERM`: over `RLIMIT_MEMLOCK`.
pub fn lock(ptr: *const u8, len: usize) -> Result<(), Errno> {
    let (start, bytes) = page_span(ptr, len);
    if bytes == 0 {
        return Ok(());
    }
    // SAFETY: mlock changes no byte; it only pins the pages.
    syscall!(mlock(start as *const libc::c_void, bytes)).map(drop)
}

/// Unlocks every page `[ptr, ptr + len)` touches (`munlock`); pages
/// already unlocked or unmapped are left as they are.
pub fn unlock(ptr: *const u8, len: usize) {
    let (start, bytes) = page_span(ptr, len);
    if bytes == 0 {
        return;
    }
    // SAFETY: munlock changes no byte. An error (a range no longer
    // mapped) leaves nothing to undo.
    let _ = syscall!(munlock(start as *const libc::c_void, bytes));
}

/// The soft `RLIMIT_MEMLOCK` in bytes (`usize::MAX`: unlimited).
pub fn memlock_limit() -> usize {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    match syscall!(getrlimit(libc::RLIMIT_MEMLOCK, &mut r)) {
        Ok(_) if r.rlim_cur != libc::RLIM_INFINITY => {
            usize::try_from(r.rlim_cur).unwrap_or(usize::MAX)
        }
        _ => usize::MAX,
    }
}
