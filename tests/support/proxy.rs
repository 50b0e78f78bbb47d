//! A fault-injecting HTTP proxy on loopback, in front of the test's DynamoDB-compatible server: it can
//! delay responses, answer with DynamoDB errors (throttling, 500s) instead of forwarding, or hold one
//! request until the test lets it go (to make a race happen exactly, not by timing). It counts the
//! requests it receives, so a test can see how often the SDK retried.
//!
//! Every forwarded request is sent upstream with `connection: close` and relayed back with it, so each
//! request has its own connection and no pooled connection is ever reused after the proxy closed it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An error DynamoDB could answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 400 `ThrottlingException`: a transient error the SDK retries.
    Throttling,
    /// 500 `InternalServerError`: a server-side failure the SDK retries.
    ServerError,
    /// 400 `AccessDeniedException`: a refusal (a missing IAM permission) that retrying cannot fix.
    AccessDenied,
}

impl Fault {
    fn response(self) -> String {
        let (status, kind) = match self {
            Self::Throttling => ("400 Bad Request", "ThrottlingException"),
            Self::ServerError => ("500 Internal Server Error", "InternalServerError"),
            Self::AccessDenied => ("400 Bad Request", "AccessDeniedException"),
        };
        let body =
            format!(r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{kind}","message":"injected by the test proxy"}}"#);
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-errortype: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }
}

#[derive(Debug)]
struct State {
    upstream: SocketAddr,
    requests: AtomicUsize,
    delay_ms: AtomicU64,
    fail_next: AtomicUsize,
    fail_all: std::sync::Mutex<Option<Fault>>,
    next_fault: std::sync::Mutex<Fault>,
    refuse_matching: std::sync::Mutex<Option<(Vec<u8>, Fault)>>,
    hold: std::sync::Mutex<Option<(Vec<u8>, Hold)>>,
}

/// A request held by the proxy (see [`Proxy::hold_next`]).
#[derive(Debug, Clone, Default)]
pub struct Hold {
    arrived: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

impl Hold {
    /// Waits until the held request has reached the proxy (it has not been forwarded).
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }

    /// Forwards the held request.
    pub fn release(&self) {
        self.release.notify_one();
    }
}

/// A running proxy; it stops with the test's runtime.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub endpoint: String,
    state: Arc<State>,
}

impl Proxy {
    /// Starts a proxy on a free loopback port in front of `upstream` (an `http://host:port` endpoint).
    pub async fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream.trim_start_matches("http://").parse().expect("upstream address");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let endpoint = format!("http://{}", listener.local_addr().expect("proxy address"));
        let state = Arc::new(State {
            upstream,
            requests: AtomicUsize::new(0),
            delay_ms: AtomicU64::new(0),
            fail_next: AtomicUsize::new(0),
            fail_all: std::sync::Mutex::new(None),
            next_fault: std::sync::Mutex::new(Fault::Throttling),
            refuse_matching: std::sync::Mutex::new(None),
            hold: std::sync::Mutex::new(None),
        });
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else { return };
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, state).await;
                });
            }
        });
        Self { endpoint, state }
    }

    /// Requests received so far (forwarded or answered with a fault).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Answers with `fault` every request whose raw bytes contain `needle` (a table name, an operation),
    /// forwarding the others; `None` forwards everything again.
    pub fn refuse_matching(&self, rule: Option<(&str, Fault)>) {
        *self.state.refuse_matching.lock().unwrap() = rule.map(|(n, f)| (n.as_bytes().to_vec(), f));
    }

    /// Delays every forwarded response by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Answers the next `n` requests with `fault`, then forwards again.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        *self.state.next_fault.lock().unwrap() = fault;
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    /// Holds the next request whose raw bytes contain `needle` (an operation such as
    /// `TransactWriteItems`) until the returned hold is released; every other request goes on.
    pub fn hold_next(&self, needle: &str) -> Hold {
        let hold = Hold::default();
        *self.state.hold.lock().unwrap() = Some((needle.as_bytes().to_vec(), hold.clone()));
        hold
    }

    /// Answers every request with `fault` (`None`: forward again).
    pub fn fail_all(&self, fault: Option<Fault>) {
        *self.state.fail_all.lock().unwrap() = fault;
    }
}

async fn serve(mut conn: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    // One request per connection: every answer carries `connection: close`.
    let Some(request) = read_message(&mut conn).await? else { return Ok(()) };
    state.requests.fetch_add(1, Ordering::SeqCst);
    let matched = state
        .refuse_matching
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|(needle, fault)| find(&request, needle).map(|_| *fault));
    let injected = matched.or(*state.fail_all.lock().unwrap());
    let injected = injected.or_else(|| {
        let took = state.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        took.then(|| *state.next_fault.lock().unwrap())
    });
    if let Some(fault) = injected {
        return conn.write_all(fault.response().as_bytes()).await;
    }
    let held = {
        let mut hold = state.hold.lock().unwrap();
        match hold.as_ref() {
            Some((needle, _)) if find(&request, needle).is_some() => hold.take().map(|(_, h)| h),
            _ => None,
        }
    };
    if let Some(hold) = held {
        hold.arrived.notify_one();
        hold.release.notified().await;
    }
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut upstream = TcpStream::connect(state.upstream).await?;
    upstream.write_all(&with_connection_close(&request)).await?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response).await?;
    conn.write_all(&with_connection_close(&response)).await
}

/// Reads one HTTP/1.1 message (head and a `content-length` body). `None` at a clean end of stream.
async fn read_message(conn: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(buf))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The message with its `connection` header replaced by `connection: close`.
fn with_connection_close(message: &[u8]) -> Vec<u8> {
    let Some(head_end) = find(message, b"\r\n\r\n") else { return message.to_vec() };
    let head = String::from_utf8_lossy(&message[..head_end]);
    let mut lines: Vec<&str> =
        head.split("\r\n").filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect();
    lines.push("connection: close");
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(&message[head_end..]);
    out
}
