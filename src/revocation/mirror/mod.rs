//! The revocation mirror: every live revocation under the prefix, held in
//! this process, so VerifyToken needs no Redis round trip in steady state,
//! and answers from it only while it is proven fresh.
//!
//! - [`table`]: the data. A keyed 64-bit hash of each revoked jti, session
//!   and subject (SipHash-1-3 with a per-process random key) and its expiry
//!   (and, for a subject, the "revoked before" instant): about 36 bytes per
//!   jti with the hash table's overhead. A hit is confirmed against Redis
//!   before it counts, so a hash collision (or an entry whose key was deleted
//!   while the stream was down) costs one lookup, never a wrong verdict. A
//!   miss is answered locally.
//! - [`sync`]: one task set per Redis node keeps the table complete through
//!   client tracking (BCAST) and a scan, and writes the freshness heartbeat.
//! - [`cluster`]: on a Redis Cluster, a sync per node of the polled layout,
//!   and trust per hash slot.
//! - [`freshness`]: per node, whether that part of the mirror is synced and
//!   proven complete as of less than `--max-staleness` ago.
//! - [`store`]: [`MirroredStore`] answers a verify from the table while every
//!   node is trusted, and with a Redis lookup (UNAVAILABLE if Redis cannot
//!   answer) otherwise.

pub mod cluster;
pub mod freshness;
pub mod store;
pub mod sync;
pub mod table;

pub use cluster::ClusterMirror;
pub use freshness::{AllNodes, Coverage, NodeState};
pub use store::MirroredStore;
pub use sync::{MirrorSync, Role, Shared, SyncTasks};
pub use table::{MirrorHits, RevocationMirror};
