//! Upstreams for the proxy tests: servers on loopback, plain HTTP or HTTPS under the test CA
//! (`upstream.test`), that record every request they get and answer as the test says: whole, streamed
//! chunk by chunk (waiting on the test between chunks), redirecting, echoing.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

pub const UPSTREAM_CA: &[u8] = include_bytes!("../fixtures/upstream-ca.pem");
const UPSTREAM_CERT: &[u8] = include_bytes!("../fixtures/upstream-cert.pem");
const UPSTREAM_KEY: &[u8] = include_bytes!("../fixtures/upstream-key.pem");
/// The name the test certificate is for.
pub const UPSTREAM_HOST: &str = "upstream.test";

/// The test CA, as the proxy's extra root.
pub fn test_ca() -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(UPSTREAM_CA).expect("the test CA parses")
}

/// One request as the upstream received it.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Lower-case names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Everything received, as text (for "this never arrived" checks).
    pub raw: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// The upstream's side of one connection, for answering.
pub struct Conn {
    w: Writer,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conn")
    }
}

impl Conn {
    /// A whole answer, with its length.
    pub async fn send(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.w.write_all(head.as_bytes()).await?;
        self.w.write_all(body).await?;
        self.w.flush().await
    }

    /// The head of a chunked answer.
    pub async fn start_stream(&mut self, status: u16, headers: &[(&str, &str)]) -> io::Result<()> {
        let mut head = format!("HTTP/1.1 {status} X\r\ntransfer-encoding: chunked\r\nconnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.w.write_all(head.as_bytes()).await?;
        self.w.flush().await
    }

    /// One chunk, flushed at once.
    pub async fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        self.w.write_all(format!("{:x}\r\n", data.len()).as_bytes()).await?;
        self.w.write_all(data).await?;
        self.w.write_all(b"\r\n").await?;
        self.w.flush().await
    }

    pub async fn end(&mut self) -> io::Result<()> {
        self.w.write_all(b"0\r\n\r\n").await?;
        self.w.flush().await
    }
}

pub type BoxFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;
/// How an upstream answers one request.
pub type Respond = Arc<dyn Fn(Recorded, Conn) -> BoxFuture + Send + Sync>;

/// Answers every request with `status` and a JSON `body`.
pub fn answer_json(status: u16, body: serde_json::Value) -> Respond {
    Arc::new(move |_, mut conn| {
        let body = body.to_string();
        Box::pin(async move { conn.send(status, &[("content-type", "application/json")], body.as_bytes()).await })
    })
}

/// A running test upstream.
#[derive(Clone)]
pub struct TestUpstream {
    pub port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl std::fmt::Debug for TestUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestUpstream").field("port", &self.port).finish_non_exhaustive()
    }
}

async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Recorded> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = r.read(&mut byte).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a whole request head"));
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let target = first.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = r.read(&mut byte).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&byte[..n]);
    }
    let raw = format!("{head}\r\n\r\n{}", String::from_utf8_lossy(&body));
    Ok(Recorded { method, target, headers, body, raw })
}

impl TestUpstream {
    /// Plain HTTP on 127.0.0.1 (the proxy reaches it only under the local switch).
    pub async fn http(respond: Respond) -> Self {
        Self::start(respond, None).await
    }

    /// HTTPS on 127.0.0.1 with the certificate for `upstream.test` (signed by the test CA).
    pub async fn https(respond: Respond) -> Self {
        let certs = vec![CertificateDer::from_pem_slice(UPSTREAM_CERT).expect("test certificate")];
        let key = PrivateKeyDer::from_pem_slice(UPSTREAM_KEY).expect("test key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate");
        Self::start(respond, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start(respond: Respond, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let recorded = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let respond = respond.clone();
                let recorded = recorded.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let (mut r, w): (Box<dyn AsyncRead + Send + Unpin>, Writer) = match tls {
                        None => {
                            let (r, w) = tokio::io::split(tcp);
                            (Box::new(r), Box::new(w))
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else { return };
                            let (r, w) = tokio::io::split(stream);
                            (Box::new(r), Box::new(w))
                        }
                    };
                    let Ok(request) = read_request(&mut r).await else { return };
                    recorded.lock().unwrap_or_else(|e| e.into_inner()).push(request.clone());
                    let _ = respond(request, Conn { w }).await;
                });
            }
        });
        Self { port, requests }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// `http://127.0.0.1:<port>` plus `path`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `https://upstream.test:<port>` plus `path`.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://{UPSTREAM_HOST}:{}{path}", self.port)
    }
}
