//! One module per proxy kind (`nginx.rs`, `npm.rs`, `caddy.rs`, ...), each a small type
//! implementing [`ProxyKind`]: everything the suite knows about that kind lives in its file —
//! how to read the version its binary prints, how a user's config is rendered into a run's
//! prefix, whether the result proxies anything at all, the validate and run command lines, the
//! distribution context it is wrapped in, where each layout of its container images (official,
//! Debian) keeps its config, logs and binary, and the fix for each check in the kind's own syntax.
//!
//! The registry is built from the files of this folder (`suite/build.rs`): adding a kind is
//! adding its file (which defines `pub static KIND`), its configs in `proxy-configs/<kind>/`
//! and its pinned binaries in `scripts/proxies.tsv`. Shared rendering helpers (the backend
//! address [`Rewriter`], context templates) stay in [`super::render`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use super::catalogue::Source;
use super::config::ConfigFile;
use super::render::{Rendered, Rewriter};

include!(concat!(env!("OUT_DIR"), "/kinds.rs"));

/// Whether two strings are equal, in a constant.
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

// A registry generated in another checkout would compile that checkout's kind files.
const _: () = assert!(
    same(GENERATED_FOR, env!("CARGO_MANIFEST_DIR")),
    "the proxy-kind registry was generated for another checkout (a target dir copied between worktrees): run `cargo clean -p suite`"
);

/// Whether a command line checks the config or serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Validate,
    Run,
}

/// The family of images a layout describes: the official image of the kind (`nginx`,
/// `httpd`, `haproxy`, ...) or the Debian package's layout (`/etc/nginx/sites-enabled`,
/// `/etc/apache2`, `/etc/haproxy`), as in `debian`-based images and our locally built ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Official,
    Debian,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Official => "official",
            Layout::Debian => "debian",
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which file of a rendering goes where the image reads its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// The user's site file (nginx's `server {}`, Apache's `<VirtualHost>`, NPM's proxy
    /// host), inside the image's own outer config, which includes that folder.
    Site,
    /// The whole rendered config (Caddyfile, haproxy.cfg, traefik.yml, envoy.yaml).
    Main,
    /// A file the kind writes for the image ([`ProxyKind::image_files`]): the image's own
    /// config with what the site needs added (official httpd).
    Generated,
}

/// Where one layout of the kind's images keeps things (absolute paths inside the image), for
/// the container runtime to mount the rendered config where that image reads it
/// (`check --image REF`) and to say where the logs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ImageLayout {
    /// The image this layout is that of (`nginx`, `httpd`, `debian + apt install nginx`).
    pub image: &'static str,
    pub layout: Layout,
    /// Where the rendered file goes (a site file in a folder the outer config includes, or
    /// the main config).
    pub config: &'static str,
    /// Which rendered file goes there.
    pub placement: Placement,
    /// A path only images of this layout have: how `--image` tells layouts apart.
    pub marker: &'static str,
    /// Where the image writes its logs (`/dev/stdout` when it logs to the container's output).
    pub logs: &'static str,
    /// The proxy binary inside the image.
    pub binary: &'static str,
}

/// The `distribution` a kind renders for when the image supplies the outer context
/// (`check --image`): includes of the distribution's files stay as written (the image has
/// them or not, as users find out), no context is wrapped around the site.
pub const IN_IMAGE: &str = "image";

/// What a kind's renderer gets: the user's config as written and where to put the copy.
pub struct RenderInput<'a> {
    pub config: &'a ConfigFile,
    /// The config's text as written.
    pub text: &'a str,
    /// The run's prefix, where every rendered file goes.
    pub prefix: &'a Path,
    /// `proxy-configs/`, where `_context` folders live.
    pub context_root: &'a Path,
    /// The Host to use when the config names none.
    pub default_host: String,
    /// The outer context the proxy's distribution ships ([`ProxyKind::distribution`]).
    pub distribution: Option<&'a str>,
}

/// What a kind's renderer wrote.
pub struct Site {
    /// The file the proxy is started with.
    pub main: PathBuf,
    /// The Host a browser sends to this site.
    pub host: String,
    /// Envoy's admin listener, when the config has one (moved to a free port).
    pub admin_port: Option<u16>,
    /// Every rendered file that came from the user's config (not the contexts around it):
    /// what [`ProxyKind::missing_route`] reads.
    pub user_files: Vec<PathBuf>,
}

/// A kind that runs as the generated configuration of a product on another kind's binary
/// (Nginx Proxy Manager on nginx).
#[derive(Debug, Clone, Copy)]
pub struct RunsOn {
    /// The kind whose newest available binary runs it.
    pub base: &'static str,
    /// What the catalogue shows as its pinned version.
    pub pinned: &'static str,
}

/// Everything about one kind of proxy. See the module header.
pub trait ProxyKind: Send + Sync {
    /// `nginx`, `caddy`, ...: the folder in `proxy-configs/`, the kind column of
    /// `scripts/proxies.tsv`, the `--proxy` name.
    fn name(&self) -> &'static str;

    /// The version number in what the binary prints for the version arguments of
    /// `scripts/proxies.tsv` (stdout and stderr together).
    fn parse_version(&self, output: &str) -> Option<String>;

    /// For a kind that is another kind's binary running a product's generated config.
    fn runs_on(&self) -> Option<RunsOn> {
        None
    }

    /// The outer context the distribution of a binary ships around a user's file, by name of a
    /// `proxy-configs/<kind>/_context/` file; it wins over the config's `# context:` line.
    fn distribution(&self, _source: &Source) -> Option<&'static str> {
        None
    }

    /// Files beside a config that are rendered with it (Traefik's dynamic file).
    fn companions(&self, _config: &Path) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Renders the config into the prefix: listener to loopback, backends to the mocks
    /// (through `r`, which records every rewrite), the distribution's context around it.
    fn render(&self, input: &RenderInput, r: &mut Rewriter) -> Result<Site, String>;

    /// What the rendered config lacks to proxy anything to the backend (no site, listener,
    /// route or backend server), or `None` when it has what it needs. Checked before the proxy
    /// starts, so such a config is a setup error at once instead of a 20 s readiness wait.
    fn missing_route(&self, rendered: &Rendered) -> Option<String>;

    /// Arguments of the validate or run command (the binary and the environment are the
    /// runtime's); `None` when the kind has no validator (`Mode::Validate` on Traefik).
    fn args(&self, mode: Mode, rendered: &Rendered, prefix: &Path) -> Option<Vec<OsString>>;

    /// Where the kind's container images keep their config, logs and binary: one entry per
    /// layout, the official image's first; detection tries the Debian layout's marker first
    /// (a Debian image also has the official image's paths, e.g. `/etc/nginx/conf.d`).
    fn images(&self) -> Vec<ImageLayout>;

    /// Files besides the placed one that an image of `layout` needs for the rendered config,
    /// as (path inside the image, text): what `a2enmod proxy_http` and `Listen` add on Debian's
    /// Apache, the whole httpd.conf of the official httpd image. `listen` are the addresses
    /// the rendering listens on inside the container; `image_config` is the image's own file
    /// at `layout.config`, when it has one.
    fn image_files(&self, _layout: &ImageLayout, _rendered: &Rendered, _listen: &[std::net::SocketAddr], _image_config: Option<&str>) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The fix for a non-passing check, in this kind's own syntax; `None` falls back to the
    /// catalogue's generic fix.
    fn fix(&self, check_id: &str) -> Option<&'static str>;

    /// A config of this kind (under `proxy-configs/`) that carries plain, SSE and WebSocket
    /// traffic: what the runner's smoke test starts.
    fn smoke_config(&self) -> &'static str;
}

/// A kind of proxy: a handle on its module's [`ProxyKind`], compared and serialized by name.
#[derive(Clone, Copy)]
pub struct Kind(&'static dyn ProxyKind);

impl Kind {
    /// Every kind in the registry, by name.
    pub fn all() -> impl Iterator<Item = Kind> {
        REGISTRY.iter().map(|k| Kind(*k))
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::all().find(|k| k.name() == name)
    }

    /// The kind's fix for a check; a browser-tier check takes the fix of the protocol check
    /// that tests the same requirement (`browser.ws`: `ws.upgrade`'s).
    pub fn fix(&self, check_id: &str) -> Option<&'static str> {
        self.0.fix(crate::checks::browser::protocol_twin(check_id))
    }

    pub fn as_str(self) -> &'static str {
        self.0.name()
    }
}

impl std::ops::Deref for Kind {
    type Target = dyn ProxyKind;
    fn deref(&self) -> &Self::Target {
        self.0
    }
}

impl PartialEq for Kind {
    fn eq(&self, other: &Kind) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Kind {}

impl std::hash::Hash for Kind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state)
    }
}

impl PartialOrd for Kind {
    fn partial_cmp(&self, other: &Kind) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Kind {
    fn cmp(&self, other: &Kind) -> std::cmp::Ordering {
        self.name().cmp(other.name())
    }
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The first capture of `pattern` in `output` (for [`ProxyKind::parse_version`]).
pub(crate) fn capture(pattern: &str, output: &str) -> Option<String> {
    let re = regex::Regex::new(pattern).ok()?;
    re.captures(output).map(|c| c[1].to_string())
}

/// The rendered user files, without blank lines and `#` comment lines (every kind here
/// comments with `#`), for [`ProxyKind::missing_route`].
pub(crate) fn user_code(rendered: &Rendered) -> String {
    rendered.user_files.iter().map(|p| code_of(&std::fs::read_to_string(p).unwrap_or_default())).collect::<Vec<_>>().join("\n")
}

/// `text` without blank lines and `#` comment lines.
pub(crate) fn code_of(text: &str) -> String {
    text.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n")
}

/// Whether `code` has a line whose first word is `word` (case-insensitive where the kind's
/// syntax is).
pub(crate) fn has_directive(code: &str, word: &str, ignore_case: bool) -> bool {
    code.lines().any(|l| {
        let first = l.trim_start().split(|c: char| c.is_whitespace() || c == ';' || c == '{').next().unwrap_or("");
        if ignore_case { first.eq_ignore_ascii_case(word) } else { first == word }
    })
}

/// `args` as `OsString`s, for [`ProxyKind::args`].
pub(crate) fn os_args<I, S>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    args.into_iter().map(Into::into).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Renders `files` (name, text; the first is the config) as `kind` into a temporary
    /// prefix, with the contexts of `proxy-configs/`.
    pub fn render(kind: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, Rendered) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let config = ConfigFile::load(&dir.path().join(files[0].0), Kind::parse(kind)).unwrap();
        let prefix = dir.path().join("prefix");
        let ports = crate::proxies::render::Ports {
            listen: "127.0.0.1:4000".parse().unwrap(),
            tls_listen: "127.0.0.1:4443".parse().unwrap(),
            backends: vec!["127.0.0.1:5001".parse().unwrap()],
            spare: 4001,
        };
        let rendered = crate::proxies::render::render(&config, &prefix, &ports, &crate::proxies::config::default_root(), None).unwrap();
        (dir, rendered)
    }

    /// What `kind` says is missing from a config made of `files`.
    pub fn missing(kind: &str, files: &[(&str, &str)]) -> Option<String> {
        let (_dir, rendered) = render(kind, files);
        Kind::parse(kind).unwrap().missing_route(&rendered)
    }

    /// Every config of `proxy-configs/` proxies something (the check has no false alarm).
    #[test]
    fn every_config_under_test_has_a_route() {
        let root = crate::proxies::config::default_root();
        for config in crate::proxies::config::discover(&root).unwrap() {
            let prefix = tempfile::tempdir().unwrap();
            let ports = crate::proxies::render::Ports {
                listen: "127.0.0.1:4000".parse().unwrap(),
            tls_listen: "127.0.0.1:4443".parse().unwrap(),
                backends: vec!["127.0.0.1:5001".parse().unwrap(), "127.0.0.1:5002".parse().unwrap(), "127.0.0.1:5003".parse().unwrap()],
                spare: 4001,
            };
            let rendered = crate::proxies::render::render(&config, prefix.path(), &ports, &root, None).unwrap();
            assert_eq!(config.kind.missing_route(&rendered), None, "{}", config.id);
        }
    }

    #[test]
    fn the_registry_has_every_kind_once() {
        let names: Vec<&str> = Kind::all().map(|k| k.name()).collect();
        for kind in ["nginx", "npm", "caddy", "haproxy", "apache", "traefik", "envoy"] {
            assert_eq!(names.iter().filter(|n| **n == kind).count(), 1, "{kind} in {names:?}");
        }
    }

    /// Every kind says how to fix every check in its own syntax. `lb.sticky` included: for a
    /// kind without client-address stickiness the advice says so and what to do instead.
    #[test]
    fn every_kind_has_advice_for_every_check() {
        let mut missing = Vec::new();
        for kind in Kind::all() {
            for check in crate::checks::catalogue() {
                match kind.fix(check.id) {
                    Some(fix) if !fix.trim().is_empty() => {}
                    _ => missing.push(format!("{kind}: {}", check.id)),
                }
            }
        }
        assert!(missing.is_empty(), "no fix advice for:\n{}", missing.join("\n"));
    }

    #[test]
    fn every_kind_names_an_absolute_image_layout() {
        for kind in Kind::all() {
            let layouts = kind.images();
            assert_eq!(layouts.iter().filter(|l| l.layout == Layout::Official).count(), 1, "{kind}: one official layout");
            for l in layouts {
                assert!(!l.image.is_empty(), "{kind}");
                for path in [l.config, l.logs, l.binary, l.marker] {
                    assert!(path.starts_with('/'), "{kind}: {path}");
                }
            }
        }
    }

    #[test]
    fn every_kind_parses_the_version_its_binary_prints() {
        let samples = [
            ("nginx", "nginx version: nginx/1.22.1\n", "1.22.1"),
            ("npm", "nginx version: nginx/1.31.3\n", "1.31.3"),
            ("caddy", "v2.6.2 h1:wKoFIxpmOJLGl3QXoo6PNbYvGW4xLEgo32GPBEjWL8o=\n", "2.6.2"),
            ("haproxy", "HAProxy version 2.6.12-1+deb12u1 2023/12/16 - https://haproxy.org/\n", "2.6.12-1+deb12u1"),
            ("apache", "Server version: Apache/2.4.62 (Debian)\nServer built:   2024-07-22\n", "2.4.62"),
            ("traefik", "Version:      3.7.15\nCodename:     x\n", "3.7.15"),
            ("envoy", "\nenvoy  version: 1a2b/1.40.0/Clean/RELEASE/BoringSSL\n", "1.40.0"),
        ];
        for (kind, output, want) in samples {
            let kind = Kind::parse(kind).unwrap();
            assert_eq!(kind.parse_version(output).as_deref(), Some(want), "{kind}");
        }
    }
}
