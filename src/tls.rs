//! Whom outgoing HTTPS trusts: the system's trust store (reqwest with
//! `rustls-tls-native-roots`: `/etc/ssl/certs` and `SSL_CERT_FILE`/
//! `SSL_CERT_DIR` on Linux), plus the certificates of an optional
//! `ca_file` (`[api] ca_file`, a webhook sink's `ca_file`), for a private
//! CA in front of the API (a proxy) or behind an internal webhook receiver.

use std::fmt;
use std::path::{Path, PathBuf};

/// The certificates of a `ca_file`, read when the configuration loads.
#[derive(Clone)]
pub struct ExtraRoots {
    path: PathBuf,
    certificates: Vec<reqwest::Certificate>,
}

impl fmt::Debug for ExtraRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtraRoots")
            .field("path", &self.path)
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

impl ExtraRoots {
    /// Reads the PEM certificates of `path`; fails, saying why, when the
    /// file cannot be read or holds no certificate.
    pub fn load(path: &Path) -> Result<ExtraRoots, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{} is not a PEM certificate bundle: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ));
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
pub fn trust(
    mut builder: reqwest::ClientBuilder,
    extra: Option<&ExtraRoots>,
) -> reqwest::ClientBuilder {
    for certificate in extra.map(|e| e.certificates.as_slice()).unwrap_or_default() {
        builder = builder.add_root_certificate(certificate.clone());
    }
    builder
}
