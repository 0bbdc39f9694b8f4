//! Proxies: which ones exist and where their binaries are ([`catalogue`]), the configurations
//! under test ([`config`]), how a config is rewritten into a run's prefix ([`render`]), and the
//! runtime that starts, awaits and always stops a real proxy process ([`instance`]).
//!
//! The runtime is behind [`instance::Runtime`] so a container runtime can slot in beside the
//! native one.

pub mod catalogue;
pub mod config;
pub mod instance;
pub mod render;

pub use catalogue::{Availability, Kind, ProxySpec};
pub use config::ConfigFile;
pub use instance::{NativeRuntime, ProxyInstance, Runtime, SetupError};
