//! Proxies: the catalogue of kinds and versions, installation, config rendering and the runtime that starts them.
