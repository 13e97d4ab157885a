//! Isolation of an agent's process tree, independent of runs and the store: the bubblewrap
//! command line that confines it (`bwrap`), the egress proxy and the in-sandbox bridge that is
//! its only way out (`net`), and resource limits with their sampling (`limits`).

pub mod bwrap;
pub mod gitview;
pub mod limits;
pub mod net;
