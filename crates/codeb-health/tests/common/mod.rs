//! A tiny real HTTP/1.1 responder on 127.0.0.1:0 for the probe tests.
//!
//! Each connection gets one response (`Connection: close`). The handler sees
//! the 0-based index of the request across the server's lifetime and the
//! request path, and decides what to answer.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the server does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer with this status, extra headers and body.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Read the request, then never answer (until the test ends).
    Hang,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self::Respond {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Self::Respond {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    pub fn redirect(status: u16, location: &str) -> Self {
        Self::Respond {
            status,
            headers: vec![("Location".into(), location.into())],
            body: String::new(),
        }
    }

    pub fn healthy() -> Self {
        Self::json(
            200,
            r#"{"status":"ok","timestamp":"2024-01-01T00:00:00.000Z","uptime":1.5,"version":"abc123"}"#,
        )
    }

    pub fn sick() -> Self {
        Self::json(503, r#"{"status":"error","error":"db down"}"#)
    }
}

/// A running test server; dropped with the test's runtime.
pub struct Server {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Starts a server answering with `handler(request_index, path)`.
    pub async fn start<F>(handler: F) -> Self
    where
        F: Fn(usize, &str) -> Reply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the test server");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        let hits = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let task = {
            let hits = Arc::clone(&hits);
            let heads = Arc::clone(&heads);
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let hits = Arc::clone(&hits);
                    let heads = Arc::clone(&heads);
                    let handler = Arc::clone(&handler);
                    tokio::spawn(async move {
                        let _ = serve(stream, &hits, &heads, handler.as_ref()).await;
                    });
                }
            })
        };
        Self {
            addr,
            hits,
            heads,
            task,
        }
    }

    /// Starts a server that answers every request the same way.
    pub async fn always(reply: Reply) -> Self {
        Self::start(move |_, _| reply.clone()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn health_url(&self) -> String {
        self.url("/api/health")
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The request heads (request line + headers) received so far.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("heads lock not poisoned").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<F>(
    mut stream: TcpStream,
    hits: &AtomicUsize,
    heads: &Mutex<Vec<String>>,
    handler: &F,
) -> std::io::Result<()>
where
    F: Fn(usize, &str) -> Reply + ?Sized,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let path = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_owned();
    heads
        .lock()
        .expect("heads lock not poisoned")
        .push(head.clone().into_owned());
    let index = hits.fetch_add(1, Ordering::SeqCst);
    match handler(index, &path) {
        Reply::Hang => {
            // Keep the connection open without answering.
            std::future::pending::<()>().await;
            Ok(())
        }
        Reply::Respond {
            status,
            headers,
            body,
        } => {
            let mut out = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            out.push_str(&body);
            stream.write_all(out.as_bytes()).await?;
            stream.shutdown().await
        }
    }
}

/// A loopback port with nothing listening on it: bind, note, drop.
pub async fn refused_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    listener
        .local_addr()
        .expect("bound listener has an address")
}

/// A server that, on accept, writes bytes that are not a TLS handshake.
pub async fn not_tls_server() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
                let mut sink = [0u8; 1024];
                let _ = stream.read(&mut sink).await;
            });
        }
    });
    (addr, task)
}
