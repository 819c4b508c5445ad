//! The cache tiers. Today the L1 in-process store; the L2 relay to Valkey joins here.

pub mod entry;
pub mod glob;
pub mod ranktree;
pub mod store;
pub mod value;
