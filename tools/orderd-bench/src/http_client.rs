//! A lean HTTP/1.1 client: one keep-alive connection per [`HttpConn`] (hyper's connection API
//! over a tokio `TcpStream`, no pool, no TLS, no redirects), so that the client costs little
//! next to the server it measures.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 connection.
pub struct HttpConn {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl HttpConn {
    pub async fn connect(addr: SocketAddr) -> Result<HttpConn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true).context("set TCP_NODELAY")?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP/1.1 handshake with {addr}"))?;
        // The connection's I/O runs as its own task; it ends when `sender` is dropped or the
        // server closes the connection (the next request then fails and the caller reconnects).
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(HttpConn {
            sender,
            host: HeaderValue::from_str(&addr.to_string()).context("host header")?,
        })
    }

    /// Sends one request and reads the whole response body.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        bearer: Option<&HeaderValue>,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        if let Some(bearer) = bearer {
            request = request.header(AUTHORIZATION, bearer.clone());
        }
        let body = match body {
            Some(body) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Full::new(body)
            }
            None => Full::new(Bytes::new()),
        };
        let request = request.body(body).context("build request")?;
        self.sender
            .ready()
            .await
            .context("connection closed by the server")?;
        let response = self
            .sender
            .send_request(request)
            .await
            .with_context(|| format!("request {path}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("read the response to {path}"))?
            .to_bytes();
        Ok((status, body))
    }
}

/// `Bearer <secret>` as a header value.
pub fn bearer(secret: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {}", secret.trim())).context("API key as a header")
}
