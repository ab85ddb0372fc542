//! The metrics endpoint: `GET /metrics`, `/healthz` and `/readyz` over HTTP/1.1, from a
//! thread of its own (`tickcast-metrics`, a tokio current-thread runtime).
//!
//! A minimal responder, not a web server: it reads one request head (at most
//! [`MAX_REQUEST_HEAD`] bytes), answers it and closes the connection. Every connection
//! has [`CONNECTION_DEADLINE`] to send its head and take its answer, and at most
//! [`MAX_CONNECTIONS`] are served at once (the rest wait in the kernel's backlog), so a
//! slow or hostile client holds a slot for two seconds at most and memory stays bounded.
//! Bad requests get a 4xx and a closed connection; nothing a client sends can panic the
//! thread. The sim and net threads never wait for it: it reads their atomics
//! ([`crate::metrics`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};

use crate::health::{Readiness, StallDetector, stall_window};
use crate::metrics::{self, MetricSources};

/// Largest request head read: a scraper's or a probe's GET is a few hundred bytes.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Time a connection has to send its request head and take the answer. Two seconds:
/// a scrape on loopback or in a cluster takes milliseconds, and a Kubernetes probe
/// gives up after one second by default.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(2);

/// Connections served at once. Four: Prometheus, an agent and two probes at the same
/// moment; more wait for a slot in the listen backlog.
pub const MAX_CONNECTIONS: usize = 4;

/// Most bytes read and discarded after answering a bad request (see `answer`).
const DRAIN_LIMIT: usize = 64 * 1024;

/// How often the endpoint looks at the loop's tick count, so `/healthz` sees a stall
/// within this of the stall window even between requests. A quarter of the shortest
/// window: four wake-ups a second are nothing next to the sim's thirty.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// A request the responder understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// `HEAD` (answer without a body) rather than `GET`.
    pub head_only: bool,
    /// The path, without the query string.
    pub path: &'a str,
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    /// Not `METHOD SP target SP HTTP/1.x`.
    Malformed,
    /// A method other than GET and HEAD.
    MethodNotAllowed,
    /// The head did not end within [`MAX_REQUEST_HEAD`] bytes.
    TooLarge,
}

/// The end of the request head (the index after its blank line), if it has arrived.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses the request line of a complete head. Headers are not needed and not read.
pub fn parse_request(head: &[u8]) -> Result<Request<'_>, BadRequest> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(BadRequest::Malformed)?;
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| BadRequest::Malformed)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest::Malformed);
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(BadRequest::Malformed);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(BadRequest::MethodNotAllowed),
    };
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Ok(Request { head_only, path })
}

/// An answer: status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

const TEXT: &str = "text/plain; charset=utf-8";

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: TEXT,
            body: body.into(),
        }
    }

    fn for_bad_request(bad: BadRequest) -> Self {
        match bad {
            BadRequest::Malformed => Self::text(400, "bad request\n"),
            BadRequest::MethodNotAllowed => Self::text(405, "only GET and HEAD\n"),
            BadRequest::TooLarge => Self::text(431, "request head too large\n"),
        }
    }

    /// The bytes on the wire; `head_only` leaves the body out (a HEAD request).
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "",
        };
        let allow = if self.status == 405 {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// What the endpoint answers from: the metric sources and the stall detector.
struct Endpoint {
    sources: MetricSources,
    /// Only this thread's tasks touch it, one at a time.
    detector: Mutex<StallDetector>,
}

impl Endpoint {
    fn is_ticking(&self, now: Instant) -> bool {
        let mut detector = self.detector.lock().unwrap_or_else(|e| e.into_inner());
        detector.observe(self.sources.progress.ticks(), now);
        detector.is_ticking(now)
    }

    fn respond(&self, path: &str, now: Instant) -> Response {
        match path {
            "/metrics" => Response {
                status: 200,
                content_type: metrics::CONTENT_TYPE,
                body: metrics::encode(&self.sources, crate::resident_set_bytes()),
            },
            "/healthz" => {
                if self.is_ticking(now) {
                    Response::text(200, "ok\n")
                } else {
                    Response::text(503, "the simulation loop is not ticking\n")
                }
            }
            "/readyz" => {
                let readiness = Readiness {
                    ticking: self.is_ticking(now),
                    clients: self
                        .sources
                        .net
                        .peers
                        .load(std::sync::atomic::Ordering::Relaxed),
                    max_clients: self.sources.max_clients as u64,
                    budget_clients: u64::try_from(self.sources.memory_plan.clients)
                        .unwrap_or(u64::MAX),
                    draining: self
                        .sources
                        .draining
                        .load(std::sync::atomic::Ordering::Relaxed),
                };
                match readiness.decide() {
                    Ok(()) => Response::text(200, "ready\n"),
                    Err(why) => Response::text(503, format!("not ready: {}\n", why.reason())),
                }
            }
            _ => Response::text(404, "not found: try /metrics, /healthz or /readyz\n"),
        }
    }
}

/// The running endpoint: its thread and the way to stop it.
pub struct MetricsEndpoint {
    local_addr: SocketAddr,
    shutdown: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsEndpoint {
    /// Binds `addr` (TCP) and starts the endpoint's thread. Fails with the reason if the
    /// address is taken.
    pub fn start(addr: SocketAddr, sources: MetricSources) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("binding the metrics endpoint to {addr} (TCP)"))?;
        let local_addr = listener
            .local_addr()
            .context("reading the metrics address")?;
        listener
            .set_nonblocking(true)
            .context("making the metrics listener non-blocking")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the metrics runtime")?;
        let endpoint = Arc::new(Endpoint {
            detector: Mutex::new(StallDetector::new(
                stall_window(sources.tick_rate),
                sources.progress.ticks(),
                Instant::now(),
            )),
            sources,
        });
        let shutdown = Arc::new(Notify::new());
        let thread = {
            let shutdown = shutdown.clone();
            std::thread::Builder::new()
                .name("tickcast-metrics".into())
                .spawn(move || {
                    runtime.block_on(async move {
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(listener) => serve(listener, endpoint, &shutdown).await,
                            Err(e) => tracing::error!("the metrics endpoint cannot listen: {e}"),
                        }
                    });
                })
                .context("spawning the metrics thread")?
        };
        tracing::info!(%local_addr, "metrics endpoint listening (HTTP: /metrics, /healthz, /readyz)");
        Ok(Self {
            local_addr,
            shutdown,
            thread: Some(thread),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn stop(&mut self) {
        // `notify_one` stores a permit if the loop is not waiting right now.
        self.shutdown.notify_one();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the metrics thread panicked");
        }
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(listener: tokio::net::TcpListener, endpoint: Arc<Endpoint>, shutdown: &Notify) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut sample = tokio::time::interval(SAMPLE_INTERVAL);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.notified() => break,
            _ = sample.tick() => {
                endpoint.is_ticking(Instant::now());
            }
            // Both halves are cancel-safe: a sample tick in between loses nothing.
            (slot, accepted) = async {
                let slot = slots.clone().acquire_owned().await;
                (slot, listener.accept().await)
            } => {
                let Ok(slot) = slot else { break };
                match accepted {
                    Ok((stream, _)) => {
                        let endpoint = endpoint.clone();
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(
                                CONNECTION_DEADLINE,
                                answer(stream, &endpoint),
                            )
                            .await;
                            drop(slot);
                        });
                    }
                    // Out of file descriptors and the like: back off instead of spinning.
                    Err(e) => {
                        tracing::warn!("metrics endpoint: accept failed: {e}");
                        tokio::time::sleep(SAMPLE_INTERVAL).await;
                    }
                }
            }
        }
    }
}

/// Reads one request head, answers it, closes.
async fn answer(mut stream: tokio::net::TcpStream, endpoint: &Endpoint) {
    let mut buf = [0u8; MAX_REQUEST_HEAD];
    let mut filled = 0;
    let parsed = loop {
        match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        if let Some(end) = head_end(&buf[..filled]) {
            break parse_request(&buf[..end]);
        }
        if filled == buf.len() {
            break Err(BadRequest::TooLarge);
        }
    };
    let bad_request = parsed.is_err();
    let (response, head_only) = match parsed {
        Ok(request) => (
            endpoint.respond(request.path, Instant::now()),
            request.head_only,
        ),
        Err(bad) => {
            tracing::debug!("metrics endpoint: bad request ({bad:?})");
            (Response::for_bad_request(bad), false)
        }
    };
    if stream
        .write_all(&response.to_bytes(head_only))
        .await
        .is_err()
        || stream.shutdown().await.is_err()
    {
        return;
    }
    if bad_request {
        // Closing with unread bytes makes the kernel send a reset, which can destroy
        // the answer before the client reads it: read what is left (bounded, and within
        // the connection's deadline) until the client closes.
        let mut drained = 0;
        while drained < DRAIN_LIMIT {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_or_head_of_a_path_parses_and_the_query_is_ignored() {
        let head = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(head_end(head), Some(head.len()));
        assert_eq!(
            parse_request(head),
            Ok(Request {
                head_only: false,
                path: "/metrics"
            })
        );
        assert_eq!(
            parse_request(b"HEAD /healthz HTTP/1.0\r\n\r\n"),
            Ok(Request {
                head_only: true,
                path: "/healthz"
            })
        );
    }

    #[test]
    fn anything_else_is_a_bad_request_not_a_panic() {
        for head in [
            &b"\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"no line end",
        ] {
            assert_eq!(parse_request(head), Err(BadRequest::Malformed), "{head:?}");
        }
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Err(BadRequest::MethodNotAllowed)
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    }

    #[test]
    fn a_response_says_its_length_and_closes_and_head_leaves_the_body_out() {
        let response = Response::text(503, "no\n");
        let text = String::from_utf8(response.to_bytes(false)).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Length: 3\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nno\n"));
        let head = String::from_utf8(response.to_bytes(true)).unwrap();
        assert!(head.ends_with("\r\n\r\n") && head.contains("Content-Length: 3\r\n"));
        let refused = Response::for_bad_request(BadRequest::MethodNotAllowed).to_bytes(false);
        assert!(
            String::from_utf8(refused)
                .unwrap()
                .contains("Allow: GET, HEAD\r\n")
        );
    }
}
