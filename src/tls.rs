//! TLS for the ICAP port (ICAPS) and the gRPC port: the certificate and key
//! come from PEM files and are read again on SIGHUP, so a renewed
//! certificate is used without a restart; with a client CA, clients must
//! present a certificate it signed.

use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Where the TLS material is.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    /// The certificate chain, PEM.
    pub cert: String,
    /// The private key, PEM.
    pub key: String,
    /// When set, the CA that clients' certificates must come from.
    pub client_ca: Option<String>,
    /// The settings' common prefix, for errors: `ICAPS` names
    /// `ICAPS_CERT`, `ICAPS_KEY` and `ICAPS_CLIENT_CA`.
    pub settings: &'static str,
    /// The protocols offered by ALPN (`h2` for gRPC; none for ICAPS).
    pub alpn: &'static [&'static [u8]],
}

/// A TLS configuration that can be swapped while connections come and go.
#[derive(Clone)]
pub struct Reloadable {
    paths: TlsPaths,
    current: Arc<RwLock<TlsAcceptor>>,
}

impl Reloadable {
    /// Reads the files; an error names the file and what is wrong.
    pub fn load(paths: TlsPaths) -> Result<Reloadable, String> {
        let acceptor = acceptor(&paths)?;
        Ok(Reloadable {
            paths,
            current: Arc::new(RwLock::new(acceptor)),
        })
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().expect("tls lock").clone()
    }

    /// Reads the files again; on an error the old configuration stays.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = acceptor(&self.paths)?;
        *self.current.write().expect("tls lock") = fresh;
        Ok(())
    }
}

/// The acceptor the files describe; an error names the setting, the file
/// and what is wrong.
fn acceptor(paths: &TlsPaths) -> Result<TlsAcceptor, String> {
    let prefix = paths.settings;
    let certs = CertificateDer::pem_file_iter(&paths.cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{prefix}_CERT {:?}: {e}", paths.cert))?;
    if certs.is_empty() {
        return Err(format!(
            "{prefix}_CERT {:?}: no certificate in it",
            paths.cert
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&paths.key)
        .map_err(|e| format!("{prefix}_KEY {:?}: {e}", paths.key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &paths.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{prefix}_CLIENT_CA {ca:?}: {e}"))?
            {
                roots
                    .add(cert)
                    .map_err(|e| format!("{prefix}_CLIENT_CA {ca:?}: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("{prefix}_CLIENT_CA {ca:?}: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("{prefix}_CERT/{prefix}_KEY: {e}"))?;
    config.alpn_protocols = paths.alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}
