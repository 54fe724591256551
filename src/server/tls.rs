//! TLS on the gRPC listener (rustls with ring): the server's certificate and key, and for
//! mutual TLS the CA that client certificates must be signed by, read from PEM files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::config::TlsConfig;

/// How long a client gets to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of reading the TLS files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the TLS {what} {path}: {source}")]
    Read {
        /// Which file: certificate, key or client CA.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM block.
    #[error("the TLS {what} {path} is not PEM (expected a -----BEGIN ...----- block)")]
    NotPem {
        /// Which file: certificate, key or client CA.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
}

/// The rustls configuration `config` describes, or `None` when TLS is off. Client
/// certificates are required when a client CA is set. `ServerConfig::validate` has checked
/// that the certificate and key come together.
pub fn server_tls(config: &TlsConfig) -> Result<Option<ServerTlsConfig>, TlsError> {
    let (Some(cert), Some(key)) = (&config.cert, &config.key) else {
        return Ok(None);
    };
    let identity = Identity::from_pem(read_pem("certificate", cert)?, read_pem("key", key)?);
    let mut tls = ServerTlsConfig::new()
        .identity(identity)
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = &config.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read_pem("client CA", ca)?));
    }
    Ok(Some(tls))
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(TlsError::NotPem {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_off_without_files_and_bad_files_are_named() {
        assert!(server_tls(&TlsConfig::default()).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let der = dir.path().join("cert.der");
        std::fs::write(&der, [0x30, 0x82, 0x01, 0x0a]).unwrap();
        let config = TlsConfig {
            cert: Some(der.clone()),
            key: Some(dir.path().join("missing.pem")),
            client_ca: None,
        };
        let err = server_tls(&config).unwrap_err().to_string();
        assert!(
            err.contains("certificate") && err.contains("not PEM"),
            "{err}"
        );
        std::fs::write(&der, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let err = server_tls(&config).unwrap_err().to_string();
        assert!(err.contains("cannot read the TLS key"), "{err}");
    }
}
