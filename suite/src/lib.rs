//! The conformance suite: starts real reverse proxies in front of the mock backend, runs every
//! check of the guides through them, grades each with evidence and reports the matrix.
//!
//! - [`proxies`]: which proxies exist, how to install and start them, how configs are rendered.
//! - [`backend`]: the mock backend instances a run puts behind a proxy.
//! - [`checks`]: one module per area of the guide, each check graded with evidence.
//! - [`run`]: one proxy x config x profile run; [`matrix`]: all of them (or a shard) at once.
//! - [`report`]: the machine-readable results, the published matrix and JUnit XML.

pub mod backend;
pub mod checks;
pub mod expected;
pub mod matrix;
pub mod proxies;
pub mod report;
pub mod run;
