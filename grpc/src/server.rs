//! The gRPC server: Envoy's `ExternalProcessor` service, the gRPC health
//! service (grpc.health.v1), optional TLS and client certificates, and a
//! graceful shutdown that lets the streams in flight finish. The HTTP/2
//! and gRPC framing is in `http2`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::http2::{connection, Shared};
use crate::{Scanning, Settings};

/// Where each new TLS connection gets its acceptor: the certificate, key
/// and client verification of the moment, so that they can be replaced
/// while the server runs. Its configuration must offer `h2` by ALPN.
pub type TlsSource = Arc<dyn Fn() -> TlsAcceptor + Send + Sync>;

/// How the server serves.
#[derive(Clone)]
pub struct ServerSettings {
    /// The largest gRPC message taken or sent; a BUFFERED body arrives as one
    /// message, so this bounds the body Envoy can buffer for a scan.
    pub max_message_size: usize,
    /// TLS, when set.
    pub tls: Option<TlsSource>,
}

impl std::fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSettings")
            .field("max_message_size", &self.max_message_size)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// How long a client has for its TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Streams open now, for monitoring.
static OPEN_STREAMS: AtomicU64 = AtomicU64::new(0);

/// How many ext_proc streams are open.
pub fn open_streams() -> u64 {
    OPEN_STREAMS.load(Ordering::Relaxed)
}

/// Counts an ext_proc stream as open while it lives.
pub(crate) struct OpenStream;

impl OpenStream {
    pub(crate) fn new() -> OpenStream {
        OPEN_STREAMS.fetch_add(1, Ordering::Relaxed);
        OpenStream
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves ext_proc and grpc.health.v1 on `listener` until `shutdown`
/// completes; then stops accepting, reports NOT_SERVING, and returns once
/// the streams in flight have ended.
pub async fn serve<S: Scanning>(
    listener: TcpListener,
    scanning: S,
    settings: Settings,
    server: ServerSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let tls = server.tls;
    let (serving_tx, serving) = watch::channel(true);
    let (stop_tx, stop) = watch::channel(false);
    let shared = Arc::new(Shared {
        scanning,
        settings,
        max_message_size: server.max_message_size,
        serving,
    });
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // Replies are small and each one waits on the last: no
                    // Nagle delay.
                    let _ = tcp.set_nodelay(true);
                    let (shared, stop) = (shared.clone(), stop.clone());
                    match &tls {
                        None => connections.spawn(connection(tcp, shared, stop)),
                        Some(tls) => {
                            let handshake = tls().accept(tcp);
                            connections.spawn(async move {
                                match tokio::time::timeout(TLS_HANDSHAKE, handshake).await {
                                    Ok(Ok(io)) => connection(io, shared, stop).await,
                                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "ext_proc TLS handshake failed"),
                                    Err(_) => tracing::info!(%peer, "ext_proc TLS handshake timed out"),
                                }
                            })
                        }
                    };
                }
                Err(e) => {
                    // Out of descriptors, say: the listener stays, and the
                    // next accept may work.
                    tracing::warn!(error = %e, "ext_proc: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Health watchers see NOT_SERVING, then their calls end.
    let _ = serving_tx.send(false);
    drop(serving_tx);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}
