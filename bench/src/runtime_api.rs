//! The Lambda service's side of the Runtime API (`/2018-06-01/runtime/...`), on loopback: it hands a
//! function process one event per `GET .../invocation/next` and takes its reply from
//! `POST .../invocation/{id}/response` (or `/error`), as Lambda does. HTTP/1.1 with keep-alive, written
//! here in a few lines so the harness needs no HTTP server dependency.

use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// A function's release binary as Lambda starts it, under this Runtime API, against the local DynamoDB
/// at `endpoint`, with the test suite's key, token secret and tables (the caller adds what differs).
pub fn function_command(
    binary: &std::path::Path,
    function: &str,
    memory_mb: u32,
    api: std::net::SocketAddr,
    endpoint: &str,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary);
    command
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string())
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
        .env("VAULT_MASTER_KEY", vault_tests::MASTER_KEY)
        .env("VAULT_JWT_HS256_SECRET", vault_tests::HS256_SECRET)
        .env("VAULT_SECRETS_TABLE", vault_tests::SECRETS_TABLE)
        .env("VAULT_AUDIT_TABLE", vault_tests::AUDIT_TABLE)
        .env("VAULT_KEYS_TABLE", vault_tests::KEYS_TABLE)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// One invocation: the event to hand out, and where its reply goes.
pub struct Invocation {
    pub event: String,
    pub reply: oneshot::Sender<Reply>,
}

/// What the function answered, and when it asked for its work and answered.
#[derive(Debug)]
pub struct Reply {
    pub body: String,
    pub error: bool,
    /// When the function fetched the event (its `next` call returned).
    pub handed_out: Instant,
    /// When the reply arrived (for a streamed reply, its end).
    pub answered: Instant,
    /// For a streamed reply (`Lambda-Runtime-Function-Response-Mode: streaming`: the prelude, eight NUL
    /// bytes, then the body), when the first byte of the body arrived.
    pub first_body_byte: Option<Instant>,
}

/// The Runtime API server: `next_calls` reports each `next` request the moment it arrives (the first
/// marks the end of the function's init).
pub struct RuntimeApi {
    pub addr: std::net::SocketAddr,
    pub invocations: mpsc::Sender<Invocation>,
    pub next_calls: mpsc::UnboundedReceiver<Instant>,
}

impl RuntimeApi {
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (invocations, queue) = mpsc::channel::<Invocation>(1);
        let (next_tx, next_calls) = mpsc::unbounded_channel();
        let queue = std::sync::Arc::new(tokio::sync::Mutex::new(queue));
        let pending = std::sync::Arc::new(tokio::sync::Mutex::new(std::collections::HashMap::new()));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (queue, pending, next_tx) = (queue.clone(), pending.clone(), next_tx.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, queue, pending, next_tx).await;
                });
            }
        });
        Ok(Self { addr, invocations, next_calls })
    }
}

type Pending = std::sync::Arc<tokio::sync::Mutex<std::collections::HashMap<String, (oneshot::Sender<Reply>, Instant)>>>;

async fn serve(
    stream: TcpStream,
    queue: std::sync::Arc<tokio::sync::Mutex<mpsc::Receiver<Invocation>>>,
    pending: Pending,
    next_tx: mpsc::UnboundedSender<Instant>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut counter = 0u64;
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            let mut header = String::new();
            read.read_line(&mut header).await?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                    _ => {}
                }
            }
        }
        let (body, first_body_byte) =
            if chunked { read_chunked(&mut read).await? } else { (read_exact(&mut read, length).await?, None) };
        if method == "GET" && path.ends_with("/invocation/next") {
            let _ = next_tx.send(Instant::now());
            let Some(invocation) = queue.lock().await.recv().await else { return Ok(()) };
            counter += 1;
            let id = format!("bench-{}-{counter}", std::process::id());
            pending.lock().await.insert(id.clone(), (invocation.reply, Instant::now()));
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() + 10_000)
                .unwrap_or(0);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: {id}\r\n\
                 Lambda-Runtime-Deadline-Ms: {deadline}\r\n\
                 Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:bench\r\n\
                 Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0\r\n\
                 Content-Length: {}\r\n\r\n",
                invocation.event.len()
            );
            write.write_all(head.as_bytes()).await?;
            write.write_all(invocation.event.as_bytes()).await?;
        } else if method == "POST" && (path.ends_with("/response") || path.ends_with("/error")) {
            let id = path.rsplit('/').nth(1).unwrap_or("").to_owned();
            if let Some((reply, handed_out)) = pending.lock().await.remove(&id) {
                let _ = reply.send(Reply {
                    body: String::from_utf8_lossy(&body).into_owned(),
                    error: path.ends_with("/error"),
                    handed_out,
                    answered: Instant::now(),
                    first_body_byte,
                });
            }
            write.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 16\r\n\r\n{\"status\":\"OK\"}\n").await?;
        } else {
            // init/error and anything else: accepted and ignored.
            write.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n").await?;
        }
        write.flush().await?;
    }
}

async fn read_exact<R: AsyncReadExt + Unpin>(read: &mut R, length: usize) -> std::io::Result<Vec<u8>> {
    let mut body = vec![0u8; length];
    read.read_exact(&mut body).await?;
    Ok(body)
}

/// A chunked body, and when the first byte after a streamed reply's prelude and eight NUL bytes arrived.
async fn read_chunked<R: AsyncBufReadExt + AsyncReadExt + Unpin>(
    read: &mut R,
) -> std::io::Result<(Vec<u8>, Option<Instant>)> {
    let mut body = Vec::new();
    let mut first_body_byte = None;
    loop {
        let mut size = String::new();
        read.read_line(&mut size).await?;
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        let mut chunk = vec![0u8; size + 2];
        read.read_exact(&mut chunk).await?;
        if size == 0 {
            return Ok((body, first_body_byte));
        }
        body.extend_from_slice(&chunk[..size]);
        if first_body_byte.is_none()
            && body.windows(8).position(|w| w == [0u8; 8]).is_some_and(|at| body.len() > at + 8)
        {
            first_body_byte = Some(Instant::now());
        }
    }
}
