//! pinion facade (being built up).
pub use pinion_core as core;
pub use pinion_sync as sync;
