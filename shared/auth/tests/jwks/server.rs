//! A JWKS endpoint on loopback, over plain TCP (one task per connection): it counts the requests
//! it receives and can be told to answer the key set, to fail (500) or to hang.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the endpoint does with the next requests.
#[derive(Debug, Clone)]
pub enum Mode {
    /// 200 with this body.
    Serve(String),
    /// 500.
    Fail,
    /// Answers nothing for this long, then closes.
    Hang(Duration),
}

pub struct JwksServer {
    pub url: String,
    hits: Arc<AtomicUsize>,
    mode: Arc<Mutex<Mode>>,
}

impl JwksServer {
    pub async fn start(mode: Mode) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let mode = Arc::new(Mutex::new(mode));
        let (counter, current) = (hits.clone(), mode.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                let mode = current.lock().unwrap().clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    counter.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = match mode {
                        Mode::Serve(body) => ("200 OK", body),
                        Mode::Fail => ("500 Internal Server Error", "{}".to_string()),
                        Mode::Hang(d) => {
                            tokio::time::sleep(d).await;
                            return;
                        }
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        JwksServer { url, hits, mode }
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}
