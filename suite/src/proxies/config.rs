//! The configurations under test: files in `proxy-configs/<kind>/`, each with a header of
//! `# key: value` comment lines (source, context, role, negative-control, host, backends,
//! websockets, profile), and the expected-outcomes file beside each.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use mock_server::Profile;

use super::catalogue::Kind;

/// What a config is for, from its `# role:` header line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A guide's example, directives as written.
    Guide,
    /// What a user writes first (the source of most bug reports).
    FirstTry,
    /// The project's own config meeting every requirement.
    KnownGood,
    /// Built to fail the checks it names.
    NegativeControl,
    /// A user's own file handed to `proxy-suite check`.
    User,
}

/// One configuration under test.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigFile {
    pub path: PathBuf,
    /// `<kind>/<file name>`: stable id for results and snapshots.
    pub id: String,
    pub kind: Kind,
    pub role: Role,
    /// `# source:` line.
    pub source: String,
    /// `# context:` line (which outer config wraps it).
    pub context: Option<String>,
    /// Checks a negative control must fail.
    pub negative_control: Vec<String>,
    /// `# host:`: the Host a browser sends to this site.
    pub host: Option<String>,
    /// Number of mock instances behind the proxy.
    pub backends: usize,
    /// NPM's "Websockets Support" switch.
    pub websockets: bool,
    /// `# profile:`: the backend profile(s) the config is written for (`dorkos`); empty when
    /// the header names none (see [`crate::run::profiles_for`]).
    pub profiles: Vec<Profile>,
}

impl ConfigFile {
    /// Reads a config and its header. `kind` is taken from the folder name unless given.
    pub fn load(path: &Path, kind: Option<Kind>) -> Result<ConfigFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        let kind = match kind {
            Some(k) => k,
            None => path
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .and_then(Kind::parse)
                .ok_or_else(|| {
                    format!("cannot tell the proxy kind of {}: pass --proxy", path.display())
                })?,
        };
        let header = parse_header(&text);
        let role = match header.get("role").map(String::as_str) {
            Some("guide") => Role::Guide,
            Some("first-try") => Role::FirstTry,
            Some("known-good") => Role::KnownGood,
            Some("negative-control") => Role::NegativeControl,
            _ => Role::User,
        };
        let backends = match header.get("backends") {
            Some(n) => n.parse().map_err(|_| format!("{}: `# backends: {n}` is not a number", path.display()))?,
            None => 1,
        };
        let mut profiles = Vec::new();
        for name in header.get("profile").map(|v| v.split([' ', ',']).filter(|s| !s.is_empty()).collect::<Vec<_>>()).unwrap_or_default() {
            let profile = Profile::ALL.into_iter().find(|p| p.as_str() == name).ok_or_else(|| {
                let known: Vec<&str> = Profile::ALL.iter().map(|p| p.as_str()).collect();
                format!("{}: `# profile: {name}` is not a profile ({})", path.display(), known.join(", "))
            })?;
            profiles.push(profile);
        }
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("config");
        Ok(ConfigFile {
            path: path.to_path_buf(),
            id: format!("{kind}/{file_name}"),
            kind,
            role,
            source: header.get("source").cloned().unwrap_or_default(),
            context: header.get("context").cloned(),
            negative_control: header
                .get("negative-control")
                .map(|v| v.split([' ', ',']).filter(|s| !s.is_empty()).map(String::from).collect())
                .unwrap_or_default(),
            host: header.get("host").cloned(),
            backends: backends.max(1),
            websockets: header.get("websockets").map(|v| v != "off").unwrap_or(true),
            profiles,
        })
    }

    /// The expected-outcomes file beside the config.
    pub fn expected_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".expected");
        PathBuf::from(p)
    }

    /// Files a config names that must be rendered with it (Traefik's dynamic file).
    pub fn companions(&self) -> Vec<PathBuf> {
        self.kind.companions(&self.path)
    }
}

/// `# key: value` lines at the top of a file, up to the first line that is not a comment.
pub fn parse_header(text: &str) -> BTreeMap<String, String> {
    let mut header = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(comment) = line.strip_prefix('#') else { break };
        if let Some((key, value)) = comment.trim().split_once(':') {
            let key = key.trim();
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                header.entry(key.to_string()).or_insert_with(|| value.trim().to_string());
            }
        }
    }
    header
}

/// Every config under `root` (`proxy-configs/`), sorted, skipping `_context` folders and
/// companion/expected files.
pub fn discover(root: &Path) -> Result<Vec<ConfigFile>, String> {
    let mut configs = Vec::new();
    for kind in Kind::all() {
        let dir = root.join(kind.as_str());
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        // Files rendered with another config (Traefik's dynamic file) are not configs.
        let companions: Vec<PathBuf> = paths.iter().flat_map(|p| kind.companions(p)).collect();
        for path in paths {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if !path.is_file() || name.ends_with(".expected") || name.ends_with(".md") || companions.contains(&path) {
                continue;
            }
            configs.push(ConfigFile::load(&path, Some(kind))?);
        }
    }
    Ok(configs)
}

/// The `proxy-configs/` folder of this checkout.
pub fn default_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy-configs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_stops_at_first_directive() {
        let h = parse_header("# source: guide\n# role: guide\n\n# backends: 3\nserver {\n# host: late\n");
        assert_eq!(h["source"], "guide");
        assert_eq!(h["backends"], "3");
        assert!(!h.contains_key("host"));
    }
}
