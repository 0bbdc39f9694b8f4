//! A user's own image (`check --image REF`): which image runs, which layout it has, and what
//! the container runtime mounts where that image reads its config. The image must already be
//! in the local Docker engine: nothing is pulled (no registry is assumed reachable; a missing
//! image is an error naming the reference and `docker pull`, never a wait).
//!
//! The layout is `--layout official|debian` when given, else detected: a throwaway container
//! of the image is created (never started) and the kind's layout markers
//! ([`crate::proxies::kinds::ImageLayout::marker`], e.g. `/etc/nginx/sites-enabled` for
//! Debian's nginx, `/usr/local/etc/haproxy` for the official haproxy image) are looked up in
//! its filesystem through the engine's archive API, Debian's first (a Debian image also has
//! the official paths). The image then runs with its own entrypoint and command; the rendered
//! config goes where the layout says, and the run's prefix (certificates, the CA, logs) is
//! mounted at its own path.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use testcontainers::bollard::models::ContainerCreateBody;
use testcontainers::bollard::query_parameters::{DownloadFromContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use testcontainers::bollard::Docker;

use super::docker::LocalImage;
use super::SetupError;
use crate::proxies::kinds::{ImageLayout, Kind, Layout, Placement};

/// What `--image` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserImage {
    /// The image reference as given (`nginx:1.27`, `proxy-suite/nginx:1.31.3`, `sha256:...`).
    pub reference: String,
    /// `--layout`; `None`: detected.
    pub layout: Option<Layout>,
}

/// A user's image, found in the engine, with its layout.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub image: LocalImage,
    pub layout: ImageLayout,
    /// The image's own file at the layout's config path, for a [`Placement::Generated`]
    /// layout (official httpd's httpd.conf, appended to).
    pub own_config: Option<String>,
    /// How the layout was chosen, for the rewrites.
    pub note: String,
}

/// Bounds every engine call here: an engine that stops answering is an error, not a hang.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(20);

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(ENGINE_TIMEOUT, f).await.map_err(|_| format!("{what}: the Docker engine did not answer within {}s", ENGINE_TIMEOUT.as_secs()))
}

/// Finds `user.reference` in the engine and its layout for `kind`.
pub async fn resolve(docker: &Docker, kind: Kind, user: &UserImage, labels: HashMap<String, String>) -> Result<Resolved, SetupError> {
    let reference = user.reference.clone();
    let missing = |reason: String| SetupError::Missing {
        proxy: format!("image {reference}"),
        reason,
        hint: format!("`docker pull {reference}` where a registry is reachable, or build it (`docker build -t {reference} ...`); proxy-suite never pulls"),
    };
    let inspect = bounded("inspect image", docker.inspect_image(&reference)).await.map_err(&missing)?.map_err(|e| {
        if e.to_string().contains("404") || e.to_string().to_ascii_lowercase().contains("no such image") {
            missing(format!("image {reference} is not in the local Docker engine"))
        } else {
            missing(format!("cannot inspect image {reference}: {e}"))
        }
    })?;
    let id = inspect.id.clone().unwrap_or_default();
    let image_labels = inspect.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
    let version = ["proxy-suite.version", "org.opencontainers.image.version"]
        .iter()
        .find_map(|l| image_labels.get(*l).cloned())
        .unwrap_or_else(|| reference.rsplit_once(':').map(|(_, t)| t.to_string()).filter(|t| !t.contains('/')).unwrap_or_else(|| "latest".into()));
    let layouts = kind.images();
    let probe = Probe::create(docker, &reference, labels).await.map_err(SetupError::Io)?;
    let chosen = match user.layout {
        Some(wanted) => match layouts.iter().find(|l| l.layout == wanted) {
            Some(l) => Ok((*l, format!("layout {wanted} (--layout)"))),
            None => {
                let known: Vec<&str> = layouts.iter().map(|l| l.layout.as_str()).collect();
                Err(SetupError::Render { config: reference.clone(), message: format!("{kind} has no {wanted} image layout; it knows {}", known.join(", ")) })
            }
        },
        None => detect(&probe, &layouts).await.map_err(|message| SetupError::Render { config: reference.clone(), message }),
    };
    let own_config = match &chosen {
        Ok((l, _)) if l.placement == Placement::Generated => probe.read(l.config).await,
        _ => None,
    };
    probe.remove().await;
    let (layout, note) = chosen?;
    let image = LocalImage { tag: reference.clone(), id, binary: layout.binary.to_string(), version };
    Ok(Resolved { image, layout, own_config, note })
}

/// The first layout whose marker the image has (Debian's before the official one's).
async fn detect(probe: &Probe<'_>, layouts: &[ImageLayout]) -> Result<(ImageLayout, String), String> {
    let ordered = layouts.iter().filter(|l| l.layout != Layout::Official).chain(layouts.iter().filter(|l| l.layout == Layout::Official));
    let mut tried = Vec::new();
    for l in ordered {
        if probe.has(l.marker).await {
            return Ok((*l, format!("layout {} detected ({} exists in the image)", l.layout, l.marker)));
        }
        tried.push(format!("{} ({})", l.marker, l.layout));
    }
    Err(format!("the image has none of the layout markers {}: say --layout official|debian", tried.join(", ")))
}

/// A created, never started container of the image, to look at its filesystem.
struct Probe<'a> {
    docker: &'a Docker,
    id: String,
}

impl<'a> Probe<'a> {
    async fn create(docker: &'a Docker, reference: &str, labels: HashMap<String, String>) -> Result<Probe<'a>, String> {
        // A command is needed to create a container of an image without one; it never runs.
        let body = ContainerCreateBody {
            image: Some(reference.to_string()),
            cmd: Some(vec!["/proxy-suite-probe".into()]),
            entrypoint: Some(vec![]),
            labels: Some(labels),
            network_disabled: Some(true),
            ..Default::default()
        };
        let created = bounded("create a probe container", docker.create_container(None, body)).await?.map_err(|e| format!("cannot create a container of {reference}: {e}"))?;
        Ok(Probe { docker, id: created.id })
    }

    async fn has(&self, path: &str) -> bool {
        let options = DownloadFromContainerOptionsBuilder::new().path(path).build();
        let mut stream = self.docker.download_from_container(&self.id, Some(options));
        matches!(tokio::time::timeout(ENGINE_TIMEOUT, stream.next()).await, Ok(Some(Ok(_))))
    }

    /// The text of a regular file of the image (the engine sends it as a tar archive).
    async fn read(&self, path: &str) -> Option<String> {
        let options = DownloadFromContainerOptionsBuilder::new().path(path).build();
        let stream = self.docker.download_from_container(&self.id, Some(options));
        let chunks: Vec<_> = tokio::time::timeout(ENGINE_TIMEOUT, stream.collect::<Vec<_>>()).await.ok()?;
        let mut archive = Vec::new();
        for c in chunks {
            archive.extend_from_slice(&c.ok()?);
        }
        first_file_of_tar(&archive).map(|b| String::from_utf8_lossy(b).into_owned())
    }

    async fn remove(self) {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        let _ = tokio::time::timeout(ENGINE_TIMEOUT, self.docker.remove_container(&self.id, Some(options))).await;
    }
}

/// The contents of the first entry of a ustar archive, when it is a regular file: the engine's
/// archive of one file is a 512-byte header (size in octal at bytes 124..136, type at 156)
/// followed by the data.
fn first_file_of_tar(archive: &[u8]) -> Option<&[u8]> {
    let header = archive.get(..512)?;
    let kind = header[156];
    if kind != b'0' && kind != 0 {
        return None;
    }
    let size_field = std::str::from_utf8(&header[124..136]).ok()?.trim_matches(|c: char| c == '\0' || c == ' ');
    let size = usize::from_str_radix(size_field, 8).ok()?;
    archive.get(512..512 + size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_file_of_a_tar_archive_is_read() {
        let mut header = vec![0u8; 512];
        header[..9].copy_from_slice(b"httpd.con");
        header[124..136].copy_from_slice(b"00000000005\0");
        header[156] = b'0';
        let mut archive = header.clone();
        archive.extend_from_slice(b"hello");
        archive.resize(1024 + 512, 0);
        assert_eq!(first_file_of_tar(&archive), Some(&b"hello"[..]));
        header[156] = b'5'; // a directory
        assert_eq!(first_file_of_tar(&header), None);
    }
}
