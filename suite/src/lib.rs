//! The conformance suite: starts real reverse proxies in front of the mock backend, runs every
//! check of the guides through them, grades each with evidence and reports the matrix.
//!
//! - [`proxies`]: which proxies exist, one module per kind (version, rendering, command lines,
//!   fix advice), the configs under test.
//! - [`runtimes`]: how a proxy is brought up for a run (native processes; containers later).
//! - [`backend`]: the mock backend instances a run puts behind a proxy.
//! - [`checks`]: one module per area of the guide, each check graded with evidence.
//! - [`browser`]: the browser tier's headless Chromium (one per process, a context per run).
//! - [`run`]: one proxy x config x profile run; [`matrix`]: all of them (or a shard) at once.
//! - [`report`]: the machine-readable results, the published matrix and JUnit XML.
//! - [`lang`]: the OpenChamber guide's words per check in English, Chinese and Korean.
//! - [`strict`]: whether a missing component is a skip (users) or a failure (CI).

pub mod backend;
pub mod browser;
pub mod checks;
pub mod expected;
pub mod lang;
pub mod leftovers;
pub mod matrix;
pub mod proxies;
pub mod report;
pub mod run;
pub mod runtimes;
pub mod strict;
pub mod tls;
