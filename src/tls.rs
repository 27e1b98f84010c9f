//! Whom outgoing HTTPS trusts: the system's trust store (reqwest with
//! `rustls-tls-native-roots`: `/etc/ssl/certs` and `SSL_CERT_FILE`/
//! `SSL_CERT_DIR` on Linux), plus the certificates of an optional
//! `ca_file` (`[api] ca_file`, a webhook sink's `ca_file`), for a private
//! CA in front of the API (a proxy) or behind an internal webhook receiver.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The certificates of a `ca_file`, read when the configuration loads.
#[derive(Clone)]
pub struct ExtraRoots {
    path: PathBuf,
    certificates: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for ExtraRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtraRoots")
            .field("path", &self.path)
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

/// Why `[api] ca_file` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0} is not a PEM certificate bundle: {1}")]
    NotPem(String, rustls::pki_types::pem::Error),
    #[error("{0} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    Empty(String),
    #[error("{path}: certificate {n} of {of} cannot be a trust root: {source}")]
    NotARoot {
        path: String,
        n: usize,
        of: usize,
        source: rustls::Error,
    },
}

impl ExtraRoots {
    /// Reads the PEM certificates of `path`; fails, saying why, when the
    /// file cannot be read, holds no certificate, or one that cannot be a
    /// trust root.
    pub fn load(path: &Path) -> Result<ExtraRoots, CaFileError> {
        let shown = || path.display().to_string();
        let (pem, _) = crate::dirfd::read_trusted(path, crate::dirfd::READ_LIMIT)
            .map_err(|e| CaFileError::Read(shown(), e))?;
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CaFileError::NotPem(shown(), e))?;
        if certificates.is_empty() {
            return Err(CaFileError::Empty(shown()));
        }
        let mut roots = RootCertStore::empty();
        for (n, certificate) in certificates.iter().enumerate() {
            roots
                .add(certificate.clone())
                .map_err(|e| CaFileError::NotARoot {
                    path: shown(),
                    n: n + 1,
                    of: certificates.len(),
                    source: e,
                })?;
        }
        Ok(ExtraRoots {
            path: path.to_owned(),
            certificates,
        })
    }

    /// The file the certificates came from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `builder` trusting `extra` besides the system's roots.
///
/// The TLS settings are built here rather than by reqwest, which reads and
/// parses the system's store anew for every client it builds (about 100 KB
/// each, and the webhook sink builds a client per delivery). Every client
/// without a `ca_file` shares one configuration, and so one parsed store
/// and one session cache. The settings are reqwest's own for this build:
/// the `ring` provider, TLS 1.2 and 1.3, HTTP/1.1 by ALPN, SNI on.
pub fn trust(
    builder: reqwest::ClientBuilder,
    extra: Option<&ExtraRoots>,
) -> reqwest::ClientBuilder {
    static SYSTEM: OnceLock<ClientConfig> = OnceLock::new();
    let config = match extra {
        None => SYSTEM
            .get_or_init(|| config(system_roots().clone()))
            .clone(),
        Some(extra) => {
            let mut roots = (**system_roots()).clone();
            for certificate in &extra.certificates {
                // Checked when the file was loaded.
                let _ = roots.add(certificate.clone());
            }
            config(Arc::new(roots))
        }
    };
    builder.use_preconfigured_tls(config)
}

/// The system's trust store, read once per process. Like reqwest, a
/// certificate that does not parse is skipped (system stores hold a few
/// ancient ones).
fn system_roots() -> &'static Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, skipped) = roots.add_parsable_certificates(loaded.certs);
        for err in &loaded.errors {
            // Only worth a warning when nothing is trusted at all: every
            // HTTPS call would then fail on the certificate.
            if added == 0 {
                tracing::warn!(error = %err, "Could not read the system's trust store.");
            } else {
                tracing::debug!(error = %err, "Could not read part of the system's trust store.");
            }
        }
        tracing::debug!(added, skipped, "Read the system's trust store.");
        Arc::new(roots)
    })
}

fn config(roots: Arc<RootCertStore>) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}
