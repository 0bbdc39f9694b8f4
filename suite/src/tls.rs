//! TLS as deployed: a certificate authority made for one run (in-process, with rcgen), a leaf
//! certificate for every server name the config declares plus the suite's own test name, and
//! the client side that trusts that authority alone. The private key of the leaf is written only
//! into the run's prefix (the proxy must read it); the authority's key never leaves memory and
//! is dropped once the leaf is signed, so nothing outside the run can be signed with it.
//!
//! Every leaf of one process is issued for the same key pair (made once, in memory): the browser
//! tier's one Chromium is started before any run exists, and is told then to accept the
//! certificates of that key alone ([`leaf_spki_pin`]), not every certificate error.
//!
//! Also the [`Transport`] a check runs over: plain HTTP/1.1, HTTP/1.1 over TLS, or HTTP/2 (TLS
//! with ALPN `h2`), as a browser would reach the site.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use serde::{Deserialize, Serialize};

/// The name every run's certificate covers besides the config's own names (the Host of a
/// config that names none).
pub const TEST_NAME: &str = "proxy-suite.test";

/// How a check's client reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub enum Transport {
    /// Plain HTTP/1.1 (`listen 80`).
    #[default]
    #[serde(rename = "h1")]
    H1,
    /// HTTP/1.1 over TLS (ALPN `http/1.1`).
    #[serde(rename = "h1-tls")]
    H1Tls,
    /// HTTP/2 over TLS (ALPN `h2`, `http/1.1` offered as the fallback a browser offers).
    #[serde(rename = "h2")]
    H2,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::H1, Transport::H1Tls, Transport::H2];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::H1 => "h1",
            Transport::H1Tls => "h1-tls",
            Transport::H2 => "h2",
        }
    }

    pub fn parse(text: &str) -> Option<Transport> {
        Transport::ALL.into_iter().find(|t| t.as_str() == text)
    }

    pub fn is_tls(self) -> bool {
        self != Transport::H1
    }

    /// The scheme a browser uses for pages (`http`/`https`) and sockets (`ws`/`wss`).
    pub fn scheme(self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }

    pub fn ws_scheme(self) -> &'static str {
        if self.is_tls() { "wss" } else { "ws" }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The certificate files of a run, in its prefix.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The leaf certificate (PEM), as `fullchain.pem` would hold it.
    pub cert: PathBuf,
    /// The leaf's private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// Certificate and key in one PEM (HAProxy's `crt`).
    pub combined: PathBuf,
    /// The authority's certificate (PEM): what a client trusts.
    pub ca: PathBuf,
    /// The authority's certificate (PEM), for the client of this run.
    pub ca_pem: String,
    /// The names the leaf covers.
    pub names: Vec<String>,
}

/// Makes an authority, signs a leaf for `names` (plus [`TEST_NAME`]) with it, and writes the
/// leaf, its key and the authority's certificate into `dir` (created, mode 0700 for the key's
/// sake; the key file itself is 0644 because some proxies drop privileges before reading it).
pub fn issue(names: &[String], dir: &Path) -> Result<TlsFiles, String> {
    let mut all: Vec<String> = Vec::new();
    for n in names.iter().map(String::as_str).chain([TEST_NAME]) {
        let n = n.trim().trim_end_matches('.').to_ascii_lowercase();
        if !n.is_empty() && !all.contains(&n) {
            all.push(n);
        }
    }
    let err = |what: &str, e: rcgen::Error| format!("cannot make the run's {what}: {e}");
    let now = time::OffsetDateTime::now_utc();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err("authority", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name.push(DnType::CommonName, "proxy-suite run authority");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca_params.not_before = now - time::Duration::days(1);
    ca_params.not_after = now + time::Duration::days(7);
    let ca_key = KeyPair::generate().map_err(|e| err("authority key", e))?;
    let ca = ca_params.self_signed(&ca_key).map_err(|e| err("authority", e))?;
    let mut leaf_params = CertificateParams::new(all.clone()).map_err(|e| err("certificate", e))?;
    leaf_params.distinguished_name.push(DnType::CommonName, all[0].clone());
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.use_authority_key_identifier_extension = true;
    leaf_params.not_before = now - time::Duration::days(1);
    leaf_params.not_after = now + time::Duration::days(7);
    let leaf_key = leaf_key()?;
    let leaf = leaf_params.signed_by(leaf_key, &ca, &ca_key).map_err(|e| err("certificate", e))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let files = TlsFiles {
        cert: dir.join("fullchain.pem"),
        key: dir.join("privkey.pem"),
        combined: dir.join("cert-and-key.pem"),
        ca: dir.join("ca.pem"),
        ca_pem: ca.pem(),
        names: all,
    };
    let write = |path: &Path, text: &str| std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()));
    write(&files.cert, &leaf.pem())?;
    write(&files.key, &leaf_key.serialize_pem())?;
    write(&files.combined, &format!("{}{}", leaf.pem(), leaf_key.serialize_pem()))?;
    write(&files.ca, &files.ca_pem)?;
    Ok(files)
}

/// The key pair of every leaf this process issues (see the module's header).
fn leaf_key() -> Result<&'static KeyPair, String> {
    static KEY: std::sync::OnceLock<Result<KeyPair, String>> = std::sync::OnceLock::new();
    KEY.get_or_init(|| KeyPair::generate().map_err(|e| format!("cannot make the certificates' key: {e}")))
        .as_ref()
        .map_err(Clone::clone)
}

/// The pin of every leaf this process issues, as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it: base64 of the SHA-256 of the key's
/// SubjectPublicKeyInfo.
pub fn leaf_spki_pin() -> Result<String, String> {
    use sha2::Digest;
    let spki = leaf_key()?.public_key_der();
    Ok(base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(spki)))
}

/// What a client needs to reach a TLS listener as a browser would: the run's authority (and
/// nothing else) to trust.
#[derive(Debug, Clone)]
pub struct Trust {
    pub ca_pem: String,
}

impl Trust {
    /// A rustls client configuration trusting the run's authority alone, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut roots = rustls::RootCertStore::empty();
        let mut reader = std::io::Cursor::new(self.ca_pem.as_bytes());
        for cert in rustls_pemfile_certs(&mut reader)? {
            roots.add(cert).map_err(|e| format!("the run's authority is not a usable root: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS client: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// The certificates of a PEM text.
fn rustls_pemfile_certs(reader: &mut dyn std::io::BufRead) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let mut text = Vec::new();
    reader.read_to_end(&mut text).map_err(|e| e.to_string())?;
    rustls_pki_types::CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the run's authority is not PEM: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_covers_the_configs_names_and_the_test_name() {
        let dir = tempfile::tempdir().unwrap();
        let files = issue(&["Dorkos.Example.com".into()], dir.path()).unwrap();
        assert_eq!(files.names, vec!["dorkos.example.com".to_string(), TEST_NAME.to_string()]);
        for p in [&files.cert, &files.key, &files.combined, &files.ca] {
            assert!(p.starts_with(dir.path()) && p.exists(), "{}", p.display());
        }
        assert!(std::fs::read_to_string(&files.key).unwrap().contains("PRIVATE KEY"));
        assert!(!files.ca_pem.contains("PRIVATE KEY"));
        Trust { ca_pem: files.ca_pem }.client_config(&[b"h2"]).unwrap();
    }

    #[test]
    fn every_leaf_has_the_pinned_key() {
        use sha2::Digest;
        let spki = leaf_key().unwrap().public_key_der();
        assert_eq!(leaf_spki_pin().unwrap(), base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&spki)));
        for _ in 0..2 {
            let dir = tempfile::tempdir().unwrap();
            let files = issue(&[], dir.path()).unwrap();
            let pem = std::fs::read(&files.cert).unwrap();
            let der = rustls_pemfile_certs(&mut pem.as_slice()).unwrap().remove(0);
            // A certificate carries its key's SubjectPublicKeyInfo verbatim.
            assert!(der.windows(spki.len()).any(|w| w == spki.as_slice()), "the leaf of {} has another key", dir.path().display());
        }
    }

    #[test]
    fn transports_read_as_written() {
        for t in Transport::ALL {
            assert_eq!(Transport::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{t}\""));
        }
    }
}
