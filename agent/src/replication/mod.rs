//! Replication of checkpoint epochs from a primary to its shadow over the data plane:
//! encoding (`delta`; the shadow applies deltas with `understudy_common::delta_apply`), the shadow's decisions (`receive_core`), its on-disk epochs
//! (`shadow_store`), the two ends of a transfer (`send`, `receive`), and the connections
//! to peers they use (`peers`).

pub mod delta;
pub mod peers;
pub mod receive;
pub mod receive_core;
pub mod send;
pub mod shadow_store;
