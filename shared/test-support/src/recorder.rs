//! A loopback HTTP server that records every request it receives, for tests: what a hostile or
//! broken "provider" sees (the `Authorization` headers sent to it) and how the client copes with
//! what it answers (oversized bodies, garbage, closed connections).
//!
//! Plain HTTP/1.1 over `tokio::net`, one request per connection (`Connection: close`). Never
//! used outside tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A JSON answer with this status.
    Json(u16, Value),
    /// These bytes, as they are, then the connection is closed (not HTTP, if you like).
    Raw(Vec<u8>),
    /// A 200 `application/json` whose body never ends (no length; bytes until the client
    /// hangs up, at most 1 GiB).
    Endless,
}

type Handler = dyn Fn(&str, &Recorded) -> Reply + Send + Sync;

/// A complete OpenID Connect discovery document of the issuer `base` (what the provider client
/// reads: OpenID Connect Discovery 1.0 §3's required fields) naming these endpoints.
pub fn discovery_document(base: &str, token_endpoint: &str, registration_endpoint: &str) -> Value {
    json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/auth"),
        "jwks_uri": format!("{base}/jwks"),
        "token_endpoint": token_endpoint,
        "registration_endpoint": registration_endpoint,
        "response_types_supported": ["code", "id_token", "id_token token"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token", "implicit", "password"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    })
}

/// The server; stops when dropped.
pub struct Recorder {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    /// Starts a server on a free loopback port; `handler` gets the server's base URL
    /// (`http://127.0.0.1:<port>`) and the request.
    ///
    /// # Panics
    /// When no loopback port can be bound (a test harness).
    pub async fn start(
        handler: impl Fn(&str, &Recorded) -> Reply + Send + Sync + 'static,
    ) -> Recorder {
        #[allow(clippy::expect_used)] // a test harness
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        #[allow(clippy::expect_used)]
        let addr = listener.local_addr().expect("local address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let base = format!("http://{addr}");
        let task = {
            let requests = requests.clone();
            let sent = sent.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (requests, sent, handler, base) = (
                        requests.clone(),
                        sent.clone(),
                        handler.clone(),
                        base.clone(),
                    );
                    tokio::spawn(async move {
                        let _ = serve(stream, &base, &*handler, &requests, &sent).await;
                    });
                }
            })
        };
        Recorder {
            addr,
            requests,
            sent,
            task,
        }
    }

    /// A provider that answers anything: its discovery document (at
    /// `/.well-known/openid-configuration`) names `token_base` + `/token` and
    /// `registration_base` + `/reg` (its own base when `None`); `/token` gives an access
    /// token to whoever asks, `/reg` registers any client (`registration_client_uri`
    /// `/reg/recorded-client`), `/reg/<id>/renew` renews its secret.
    pub async fn idp(token_base: Option<String>, registration_base: Option<String>) -> Recorder {
        Recorder::start(move |base, req| {
            let path = req.path.split('?').next().unwrap_or("");
            match (req.method.as_str(), path) {
                ("GET", "/.well-known/openid-configuration") => Reply::Json(
                    200,
                    discovery_document(
                        base,
                        &format!("{}/token", token_base.as_deref().unwrap_or(base)),
                        &format!("{}/reg", registration_base.as_deref().unwrap_or(base)),
                    ),
                ),
                ("POST", "/token") => Reply::Json(
                    200,
                    json!({"access_token": "recorder-token", "token_type": "Bearer", "expires_in": 300}),
                ),
                ("POST", "/reg") => Reply::Json(
                    201,
                    json!({
                        "client_id": "recorded-client", "client_secret": "recorded-secret",
                        "registration_access_token": "recorded-registration-token",
                        "registration_client_uri": format!("{}/reg/recorded-client", registration_base.as_deref().unwrap_or(base)),
                    }),
                ),
                ("POST", p) if p.starts_with("/reg/") && p.ends_with("/renew") => Reply::Json(
                    200,
                    json!({"client_id": "recorded-client", "client_secret": "renewed-secret"}),
                ),
                _ => Reply::Json(404, json!({"error": "not_found"})),
            }
        })
        .await
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The discovery URL of [`Recorder::idp`].
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.base())
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every `Authorization` header received so far, decoded when `Basic` (`Basic id:secret`
    /// as `id:secret`, both parts form-urlencoded-decoded), as they are otherwise.
    pub fn authorizations(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| r.header("authorization").map(decode_authorization))
            .collect()
    }

    /// Body bytes written by [`Reply::Endless`] answers so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

fn decode_authorization(h: &str) -> String {
    use base64::Engine as _;
    let Some(b64) = h.strip_prefix("Basic ") else {
        return h.to_string();
    };
    match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
        Ok(raw) => percent_decode(&String::from_utf8_lossy(&raw)),
        Err(_) => h.to_string(),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if bytes[i] == b'+' {
            // application/x-www-form-urlencoded (RFC 6749 §2.3.1): a space.
            out.push(b' ');
            i += 1;
            continue;
        }
        if bytes[i] == b'%' {
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn serve(
    mut stream: TcpStream,
    base: &str,
    handler: &Handler,
    requests: &Mutex<Vec<Recorded>>,
    sent: &AtomicU64,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(1024 * 1024);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let req = Recorded {
        method,
        path,
        headers,
        body,
    };
    requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(req.clone());
    match handler(base, &req) {
        Reply::Json(status, value) => {
            let body = value.to_string();
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body.as_bytes()).await?;
        }
        Reply::Raw(bytes) => stream.write_all(&bytes).await?,
        Reply::Endless => {
            stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"issuer\":\"",
                )
                .await?;
            let block = vec![b'a'; 64 * 1024];
            for _ in 0..(16 * 1024) {
                stream.write_all(&block).await?;
                sent.fetch_add(block.len() as u64, Ordering::Relaxed);
            }
        }
    }
    stream.shutdown().await
}
