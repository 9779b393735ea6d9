//! A backend's counters (its `stats` feature), written once: the
//! [`counters!`](crate::counters) macro declares the plain snapshot a
//! program reads and the live atomics behind it, and
//! [`stat!`](crate::stat) adds to one, or is nothing at all when the
//! calling crate's `stats` feature is off.

/// One live counter: relaxed adds, 64 bits where the target has 64-bit
/// atomics, 32 bits (wrapping) where it has not.
#[derive(Default, Debug)]
pub struct Counter(
    #[cfg(target_has_atomic = "64")] core::sync::atomic::AtomicU64,
    #[cfg(not(target_has_atomic = "64"))] core::sync::atomic::AtomicU32,
);

impl Counter {
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        #[cfg(target_has_atomic = "64")]
        self.0.fetch_add(n, core::sync::atomic::Ordering::Relaxed);
        #[cfg(not(target_has_atomic = "64"))]
        self.0
            .fetch_add(n as u32, core::sync::atomic::Ordering::Relaxed);
    }

    /// The count now.
    #[inline]
    #[allow(clippy::unnecessary_cast)] // u32 -> u64 on targets without 64-bit atomics
    pub fn get(&self) -> u64 {
        self.0.load(core::sync::atomic::Ordering::Relaxed) as u64
    }
}

/// Declares a backend's counter snapshot `$stats` (a plain `Copy` struct of
/// `u64`s, public) and its live counters `$cells` (one [`Counter`] per
/// field, crate-private, with `snapshot()`).
///
/// ```
/// pinion_core::counters! {
///     /// What the demo counts.
///     pub struct DemoStats / DemoCells {
///         /// Things done.
///         done,
///     }
/// }
/// let c = DemoCells::default();
/// c.done.add(2);
/// assert_eq!(c.snapshot(), DemoStats { done: 2 });
/// ```
#[macro_export]
macro_rules! counters {
    ($(#[$sm:meta])* $vis:vis struct $stats:ident / $cells:ident {
        $($(#[$fm:meta])* $field:ident),* $(,)?
    }) => {
        $(#[$sm])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        $vis struct $stats {
            $($(#[$fm])* pub $field: u64,)*
        }

        /// The live counters behind the snapshot, one relaxed atomic each.
        #[derive(Default, Debug)]
        #[allow(dead_code)] // used only with the crate's `stats` feature
        pub(crate) struct $cells {
            $(pub(crate) $field: $crate::stats::Counter,)*
        }

        #[allow(dead_code)]
        impl $cells {
            /// A plain copy of the counters.
            pub(crate) fn snapshot(&self) -> $stats {
                $stats {
                    $($field: self.$field.get(),)*
                }
            }
        }
    };
}

/// Adds `n` (default 1) to counter `$field` of `$s.stats` when the calling
/// crate's `stats` feature is on; nothing at all, not even the argument's
/// evaluation, otherwise.
#[macro_export]
macro_rules! stat {
    ($s:expr, $field:ident) => {
        $crate::stat!($s, $field, 1)
    };
    ($s:expr, $field:ident, $n:expr) => {{
        #[cfg(feature = "stats")]
        $s.stats.$field.add($n as u64);
        #[cfg(not(feature = "stats"))]
        if false {
            let _ = (&$s, &$n);
        }
    }};
}
