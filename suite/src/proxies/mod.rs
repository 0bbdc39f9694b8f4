//! Proxies: which ones exist and where their binaries are ([`catalogue`]), everything about
//! each kind of proxy, one module per kind ([`kinds`]), the configurations under test
//! ([`config`]), and what rendering a config into a run's prefix shares across kinds
//! ([`render`]). Running them is the business of [`crate::runtimes`].

pub mod catalogue;
pub mod config;
pub mod diagnose;
pub mod kinds;
pub mod render;

pub use catalogue::{Availability, Kind, ProxySpec};
pub use config::ConfigFile;
// The runtime's types, where the runners have always found them.
pub use crate::runtimes::{NativeRuntime, ProxyInstance, Runtime, SetupError};
