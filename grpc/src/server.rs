//! The gRPC server: Envoy's `ExternalProcessor` service, the gRPC health
//! service (grpc.health.v1), optional TLS and client certificates, and a
//! graceful shutdown that lets the streams in flight finish.

use std::future::Future;
use std::time::Duration;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::stream::{ExtProcStream, Stop};
use crate::{Scanning, Settings};

/// The certificate and key the server presents, and the CA its clients'
/// certificates must come from (mTLS), all PEM.
#[derive(Clone)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub cert: Vec<u8>,
    /// The server's private key.
    pub key: Vec<u8>,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("client_ca", &self.client_ca.is_some())
            .finish_non_exhaustive()
    }
}

/// How the server serves.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The largest gRPC message taken or sent; a BUFFERED body arrives as one
    /// message, so this bounds the body Envoy can buffer for a scan.
    pub max_message_size: usize,
    /// TLS, when set.
    pub tls: Option<TlsFiles>,
}

/// The `ExternalProcessor` implementation: one task per stream.
struct Processor<S> {
    scanning: S,
    settings: Settings,
}

#[tonic::async_trait]
impl<S: Scanning> ExternalProcessor for Processor<S> {
    type ProcessStream = Driven;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let mut stream =
            ExtProcStream::new(self.scanning.clone(), self.settings.clone(), tx.clone());
        let work = async move {
            let stopped = loop {
                let next = match stream.timer() {
                    None => inbound.message().await,
                    Some(at) => tokio::select! {
                        next = inbound.message() => next,
                        () = tokio::time::sleep_until(at) => {
                            match stream.on_timer().await {
                                Ok(()) => continue,
                                Err(stop) => break Err(stop),
                            }
                        }
                    },
                };
                match next {
                    Ok(Some(msg)) => {
                        if let Err(stop) = stream.on_message(msg).await {
                            break Err(stop);
                        }
                    }
                    Ok(None) => break stream.on_end(),
                    Err(status) => {
                        tracing::debug!(code = ?status.code(), "ext_proc stream broken by Envoy");
                        break Err(Stop::Gone);
                    }
                }
            };
            match stopped {
                Ok(()) | Err(Stop::Answered) => {}
                Err(Stop::Gone) => {
                    tracing::debug!("ext_proc stream gone; scans in flight cancelled")
                }
                Err(Stop::Fail(status)) => {
                    tracing::warn!(
                        message = status.message(),
                        "ext_proc stream ended with an error"
                    );
                    let _ = tx.send(Err(status)).await;
                }
            }
        };
        OPEN_STREAMS.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(Driven {
            work: Some(Box::pin(work)),
            replies: rx,
        }))
    }
}

/// Streams open now, for monitoring.
static OPEN_STREAMS: AtomicU64 = AtomicU64::new(0);

/// How many ext_proc streams are open.
pub fn open_streams() -> u64 {
    OPEN_STREAMS.load(Ordering::Relaxed)
}

/// The replies of one stream, and the work that makes them. Polled by the
/// task that serves the HTTP/2 stream, so that a message from Envoy is
/// handled and answered without passing through a task of its own. When
/// Envoy goes away, tonic drops this, and with it the scans in flight.
pub struct Driven {
    work: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    replies: mpsc::Receiver<Result<ProcessingResponse, Status>>,
}

impl Drop for Driven {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stream for Driven {
    type Item = Result<ProcessingResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(work) = self.work.as_mut() {
            if work.as_mut().poll(cx).is_ready() {
                self.work = None;
            }
        }
        // Once the work is over its sender is gone: the replies drain, then
        // the stream ends.
        self.replies.poll_recv(cx)
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
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    type Svc<S> = ExternalProcessorServer<Processor<S>>;
    health.set_serving::<Svc<S>>().await;
    let processor = ExternalProcessorServer::new(Processor { scanning, settings })
        .max_decoding_message_size(server.max_message_size)
        .max_encoding_message_size(server.max_message_size);
    let mut builder = Server::builder()
        // A BUFFERED body is one large message: let Envoy send it without
        // waiting for window updates every 64 KiB.
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some(tls) = &server.tls {
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert, &tls.key));
        if let Some(ca) = &tls.client_ca {
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder.tls_config(config)?;
    }
    let signal = async move {
        shutdown.await;
        health.set_not_serving::<Svc<S>>().await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    };
    builder
        .add_service(health_service)
        .add_service(processor)
        // Replies are small and each one waits on the last: no Nagle delay.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .map(|accepted| accepted.map(Buffered::new)),
            signal,
        )
        .await
}

/// An accepted connection, read through a buffer of its own. HTTP/2 reads
/// into a buffer of 8 KiB, so that a frame of 16 KiB takes two reads and
/// a BUFFERED body of 1 MiB about 130 (measured: reads of 8192 and 8201
/// bytes). Through this buffer a read takes what the socket holds, up to
/// `READ_BUFFER`, and the small reads are served from memory.
struct Buffered(BufReader<TcpStream>);

/// How much one read from an ext_proc connection may take.
const READ_BUFFER: usize = 64 * 1024;

impl Buffered {
    fn new(stream: TcpStream) -> Buffered {
        Buffered(BufReader::with_capacity(READ_BUFFER, stream))
    }
}

impl Connected for Buffered {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().connect_info()
    }
}

impl AsyncRead for Buffered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Buffered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
