//! The cache tiers: the L1 in-process store and the L2 upstream Valkey/Redis (`l2`, with a
//! Cluster upstream's topology and per-master health in `cluster`).

pub mod cluster;
pub mod entry;
pub mod glob;
pub mod l2;
pub mod query;
pub mod query_l2;
pub mod ranktree;
pub mod store;
pub mod tags;
pub mod value;
