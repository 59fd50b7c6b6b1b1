//! TLS for the gRPC and web ports: a certificate and key read from files (a mounted Kubernetes
//! Secret, say), reloaded when the files change so a renewed certificate needs no restart.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use hearth_common::Shutdown;
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::TlsAcceptor;

/// A connection to the master over TLS.
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// How often the files are read again to see whether they changed. Kubernetes takes a minute
/// or more to update a mounted Secret, so this adds little to a rotation.
const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// A client has this long to finish its handshake; a slow one holds up no one else.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// Where the certificate chain and its private key are, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls cert {path}: cannot read: {source}")]
    ReadCert {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tls key {path}: cannot read: {source}")]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tls cert {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("tls key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The raw bytes of both files, kept to notice a change.
type FileBytes = (Vec<u8>, Vec<u8>);

fn read_files(files: &TlsFiles) -> Result<FileBytes, TlsError> {
    let cert = std::fs::read(&files.cert).map_err(|source| TlsError::ReadCert {
        path: files.cert.clone(),
        source,
    })?;
    let key = std::fs::read(&files.key).map_err(|source| TlsError::ReadKey {
        path: files.key.clone(),
        source,
    })?;
    Ok((cert, key))
}

fn parse(files: &TlsFiles, (cert, key): &FileBytes) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::Cert {
        path: files.cert.clone(),
        reason,
    };
    let key_error = |reason: String| TlsError::Key {
        path: files.key.clone(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(cert_error("holds no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| key_error(format!("not a PEM private key: {e}")))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            key_error("does not belong to the certificate (its public key differs)".into())
        }
        rustls::Error::InvalidCertificate(e) => cert_error(format!("invalid: {e}")),
        other => key_error(format!("unusable: {other}")),
    })
}

/// The certificate handed to every handshake, swapped when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    /// Reads and checks both files: a master with a missing or broken certificate does not start.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let bytes = read_files(&files)?;
        let key = parse(&files, &bytes)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(Arc::new(key)),
        }))
    }

    fn get(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, key: CertifiedKey) {
        match self.current.write() {
            Ok(mut current) => *current = Arc::new(key),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(key),
        }
    }

    /// Watches the files until shutdown. A change that does not parse (a Secret caught half
    /// written, a key for another certificate) is reported and the old certificate stays.
    pub async fn watch(self: Arc<Self>, shutdown: Shutdown) {
        let mut seen = read_files(&self.files).ok();
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let bytes = match read_files(&self.files) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(error = %e, "keeping the current TLS certificate");
                    continue;
                }
            };
            if seen.as_ref() == Some(&bytes) {
                continue;
            }
            match parse(&self.files, &bytes) {
                Ok(key) => {
                    self.set(key);
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                }
                Err(e) => tracing::warn!(error = %e, "keeping the current TLS certificate"),
            }
            seen = Some(bytes);
        }
    }

    /// A rustls acceptor offering `alpn` (most preferred first).
    pub fn acceptor(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<TlsAcceptor, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Cert {
                path: self.files.cert.clone(),
                reason: format!("no usable protocol version: {e}"),
            })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// Connections on `listener` once their handshake is done. Handshakes run side by side, so a
/// client that stalls in one delays nobody; failed ones are logged and dropped.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shutdown: Shutdown,
) -> mpsc::Receiver<(TlsStream, SocketAddr)> {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, most likely: wait rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            crate::accepted::tune(&tcp);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}
