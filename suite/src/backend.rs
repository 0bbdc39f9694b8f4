//! The mock backend instances a run puts behind a proxy, served in-process on loopback.
