//! A connection that is plain TCP or TLS over TCP, behind one type, so
//! the code serving it (gRPC, HTTP/1, the peer wire) does not care which.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;

/// Plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<futures_rustls::TlsStream<TcpStream>>),
}

impl Stream {
    /// Runs the server side of a TLS handshake on `tcp`.
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<Stream> {
        let tls = futures_rustls::TlsAcceptor::from(config)
            .accept(tcp)
            .await?;
        Ok(Stream::Tls(Box::new(futures_rustls::TlsStream::Server(
            tls,
        ))))
    }

    /// Runs the client side of a TLS handshake on `tcp` with a server
    /// expected to be `name`.
    pub async fn connect(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<Stream> {
        let tls = futures_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        Ok(Stream::Tls(Box::new(futures_rustls::TlsStream::Client(
            tls,
        ))))
    }

    /// The socket underneath (timeouts, addresses).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The other side's certificate chain, end entity first (TLS with a
    /// client certificate only).
    pub fn peer_certificates(&self) -> Option<&[rustls_pki_types::CertificateDer<'static>]> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => s.get_ref().1.peer_certificates(),
        }
    }

    pub fn set_read_timeout(&self, d: Option<std::time::Duration>) -> io::Result<()> {
        Ok(self.tcp().set_read_timeout(d)?)
    }

    pub fn set_write_timeout(&self, d: Option<std::time::Duration>) -> io::Result<()> {
        Ok(self.tcp().set_write_timeout(d)?)
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        Ok(self.tcp().set_nodelay(on)?)
    }

    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        Ok(self.tcp().peer_addr()?)
    }
}

/// The name a peer dialled at `url` must prove (its URL's host, as Go's
/// HTTP transport checks it), or its address if the host is no name.
pub fn server_name(url: &str, addr: std::net::SocketAddr) -> ServerName<'static> {
    super::url_host(url)
        .and_then(|h| ServerName::try_from(h).ok())
        .unwrap_or_else(|| ServerName::from(addr.ip()))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}
