//! A 64-bit value written under a lock and read without one, on every
//! target: an `AtomicU64` where the CPU has 64-bit atomics, a sequence
//! lock over 32-bit atomics where it does not (armv5te, 32-bit MIPS and
//! PowerPC), so that no 64-bit atomic is ever asked of a target that lacks
//! it.

use core::sync::atomic::Ordering;

/// See the module docs.
#[cfg(target_has_atomic = "64")]
pub struct SharedU64(core::sync::atomic::AtomicU64);

#[cfg(target_has_atomic = "64")]
impl SharedU64 {
    /// A cell holding `v`.
    pub const fn new(v: u64) -> Self {
        SharedU64(core::sync::atomic::AtomicU64::new(v))
    }

    /// The value (acquire).
    #[inline]
    pub fn load(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Sets the value (release). Writers are serialised by a lock of the
    /// caller's.
    #[inline]
    pub fn store(&self, v: u64) {
        self.0.store(v, Ordering::Release)
    }
}

/// See the module docs.
#[cfg(not(target_has_atomic = "64"))]
pub struct SharedU64 {
    /// Odd while a store is under way.
    seq: core::sync::atomic::AtomicU32,
    hi: core::sync::atomic::AtomicU32,
    lo: core::sync::atomic::AtomicU32,
}

#[cfg(not(target_has_atomic = "64"))]
impl SharedU64 {
    /// A cell holding `v`.
    pub const fn new(v: u64) -> Self {
        use core::sync::atomic::AtomicU32;
        SharedU64 {
            seq: AtomicU32::new(0),
            hi: AtomicU32::new((v >> 32) as u32),
            lo: AtomicU32::new(v as u32),
        }
    }

    /// The value: retried while a store is under way.
    #[inline]
    pub fn load(&self) -> u64 {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 != 0 {
                core::hint::spin_loop();
                continue;
            }
            let hi = self.hi.load(Ordering::Relaxed);
            let lo = self.lo.load(Ordering::Relaxed);
            // Orders the two reads before the re-check (pairs with the
            // writer's release fence).
            core::sync::atomic::fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return (hi as u64) << 32 | lo as u64;
            }
        }
    }

    /// Sets the value. Writers must be serialised by a lock of the
    /// caller's (one writer at a time is what makes the sequence work).
    #[inline]
    pub fn store(&self, v: u64) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        core::sync::atomic::fence(Ordering::Release);
        self.hi.store((v >> 32) as u32, Ordering::Relaxed);
        self.lo.store(v as u32, Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }
}

impl core::fmt::Debug for SharedU64 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(&self.load(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_are_read_back_whole() {
        let c = SharedU64::new(u64::MAX);
        assert_eq!(c.load(), u64::MAX);
        for v in [0, 1, u32::MAX as u64, 1 << 32, u64::MAX - 1] {
            c.store(v);
            assert_eq!(c.load(), v);
        }
    }
}
