//! The raw mutexes behind the kits: one file per variant, picked by cfg.

#[cfg(target_os = "linux")]
mod futex;
mod null;
mod spin;

#[cfg(target_os = "linux")]
pub use self::futex::FutexMutex;
pub use self::null::NullMutex;
pub use self::spin::SpinMutex;
