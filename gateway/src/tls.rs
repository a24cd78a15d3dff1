//! TLS on the front doors: the rustls server configuration of a listener whose
//! `tls_cert_file` and `tls_key_file` are both set (`http.*`, `tcp.*`), read once at start.
//! rustls on the ring provider, TLS 1.2 and 1.3 only; every failure names the setting at fault.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use orderd_config::{Config, TlsFiles};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// The TLS of both front doors, loaded before anything else starts so that a bad file stops
/// orderd at once, naming its setting.
#[derive(Clone, Default)]
pub struct FrontDoors {
    /// `http.tls_cert_file` and `http.tls_key_file` (HTTPS).
    pub http: Option<Arc<ServerConfig>>,
    /// `tcp.tls_cert_file` and `tcp.tls_key_file`.
    pub tcp: Option<Arc<ServerConfig>>,
}

impl FrontDoors {
    pub fn load(config: &Config) -> anyhow::Result<FrontDoors> {
        Ok(FrontDoors {
            http: config
                .http
                .tls()
                .map(|files| server_config(files, &[]))
                .transpose()?,
            tcp: config
                .tcp
                .tls()
                .map(|files| server_config(files, &[]))
                .transpose()?,
        })
    }
}

/// The server configuration of one listener: the certificate chain and key of `files`, checked
/// against each other, no client certificates. `alpn` is what the listener speaks (empty for
/// the binary protocol; actix-web sets HTTP's own).
pub fn server_config(files: TlsFiles<'_>, alpn: &[&[u8]]) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = read_certs(files.cert_key, files.cert_file)?;
    let key = read_key(files.key_key, files.key_file)?;
    warn_if_key_readable_by_others(files.key_key, files.key_file);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| anyhow!("cannot set up TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            anyhow!(
                "{}: {} does not fit the certificate in {} ({}): {e}",
                files.key_key,
                files.key_file.display(),
                files.cert_key,
                files.cert_file.display()
            )
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Every certificate of a PEM file, leaf first; at least one.
fn read_certs(setting: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("{setting}: cannot read {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{setting}: {} is not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!(
            "{setting}: {} holds no certificate (expected PEM \"BEGIN CERTIFICATE\")",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn read_key(setting: &str, path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("{setting}: cannot read {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        anyhow!(
            "{setting}: {} holds no usable private key: {e}",
            path.display()
        )
    })
}

/// A private key that other users may read is served, but logged (OPERATIONS.md: 0600, owned
/// by orderd's user).
fn warn_if_key_readable_by_others(setting: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                message = "The TLS private key is readable by other users; make it 0600.",
                setting,
                path = %path.display(),
                mode = format!("{mode:o}")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn files<'a>(cert: &'a Path, key: &'a Path) -> TlsFiles<'a> {
        TlsFiles {
            cert_key: "tcp.tls_cert_file",
            cert_file: cert,
            key_key: "tcp.tls_key_file",
            key_file: key,
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads_and_a_mismatched_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = pair("a.example");
        let (_, key_b) = pair("b.example");
        let cert = write(dir.path(), "cert.pem", &cert_a);
        let key = write(dir.path(), "key.pem", &key_a);
        server_config(files(&cert, &key), &[]).expect("a matching pair");
        let other = write(dir.path(), "other.pem", &key_b);
        let error = server_config(files(&cert, &other), &[])
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("tcp.tls_key_file"), "{error}");
        assert!(error.contains("does not fit"), "{error}");
    }

    #[test]
    fn unreadable_or_empty_files_name_their_setting() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = pair("a.example");
        let cert = write(dir.path(), "cert.pem", &cert_a);
        let key = write(dir.path(), "key.pem", &key_a);
        let missing = dir.path().join("missing.pem");
        let error = server_config(files(&missing, &key), &[])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("tcp.tls_cert_file: cannot read"),
            "{error}"
        );
        let error = server_config(files(&cert, &missing), &[])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("tcp.tls_key_file: cannot read"),
            "{error}"
        );
        let empty = write(dir.path(), "empty.pem", "");
        let error = server_config(files(&empty, &key), &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("holds no certificate"), "{error}");
        // The certificate file given as the key: no key in it.
        let error = server_config(files(&cert, &cert), &[])
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("tcp.tls_key_file"), "{error}");
    }
}
