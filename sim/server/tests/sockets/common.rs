//! Shared by the integration tests that run a real server in-process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tickcast_clients::{Session, client_endpoint, connect, mint_token};
use tickcast_net::NetConfig;
use tickcast_net::tls::{TOKEN_KEY_FILE, load_token_key};
use tickcast_server::{Server, ServerConfig};
use tickcast_shared::chunk::VIEW_ALL;
use tickcast_sim::SimConfig;

/// A fresh, empty data directory under the system's temp dir, unique to this test
/// process and `name`.
pub fn temp_data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tickcast-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A server on 127.0.0.1, on a port of the OS's choosing, with a small world (30 NPCs)
/// that every client sees whole (no interest management: these tests are about the
/// broadcast itself).
pub fn start_server(data_dir: &Path) -> Server {
    Server::start(test_config(data_dir)).expect("server starts")
}

/// The configuration [`start_server`] uses, for tests that change part of it.
pub fn test_config(data_dir: &Path) -> ServerConfig {
    ServerConfig {
        net: NetConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            view_cells: VIEW_ALL,
            ..NetConfig::default()
        },
        sim: SimConfig {
            npcs: 30,
            ..SimConfig::default()
        },
        record: None,
        ..ServerConfig::default()
    }
}

/// [`test_config`] with the metrics endpoint on 127.0.0.1, on a port of the OS's choosing
/// ([`Server::metrics_addr`]).
pub fn metrics_config(data_dir: &Path) -> ServerConfig {
    ServerConfig {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..test_config(data_dir)
    }
}

/// An HTTP/1.1 GET of `path` on `addr`: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

/// [`http_get`] that reports a failure instead of failing the test.
pub fn try_http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: tickcast\r\nConnection: close\r\n\r\n");
    try_http_exchange(addr, request.as_bytes())
}

/// Sends `request` as is and reads the whole response: the status code and the body.
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    try_http_exchange(addr, request).unwrap_or_else(|e| panic!("HTTP to {addr}: {e}"))
}

/// Sends `request` and reads until the server closes: the status code and the body
/// (de-chunked if it came in chunks).
pub fn try_http_exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<(u16, String)> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(request)?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("not an HTTP response"))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let chunked = head
        .lines()
        .any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked"));
    if !chunked {
        return Ok((status, body.to_owned()));
    }
    let mut rest = body;
    let mut whole = String::new();
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| invalid("bad chunk"))?;
        let size = usize::from_str_radix(size.trim(), 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            return Ok((status, whole));
        }
        whole.push_str(after.get(..size).ok_or_else(|| invalid("short chunk"))?);
        rest = after
            .get(size + 2..)
            .ok_or_else(|| invalid("short chunk"))?;
    }
}

/// The value of one series (`name` or `name{labels}`, exactly as exposed) in a text
/// exposition.
pub fn series_value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .and_then(|(_, value)| value.parse().ok())
}

/// Scrapes `/metrics` until `series` has `value` (bounded: 10 s); the last exposition.
pub fn scrape_until(addr: SocketAddr, series: &str, value: f64) -> String {
    scrape_until_with(addr, series, |v| v == value)
}

/// Scrapes `/metrics` until `series` has a value that `wanted` accepts (bounded: 10 s);
/// the last exposition.
pub fn scrape_until_with(addr: SocketAddr, series: &str, wanted: impl Fn(f64) -> bool) -> String {
    let mut last = None;
    for _ in 0..200 {
        let (status, body) = http_get(addr, "/metrics");
        assert_eq!(status, 200, "{body}");
        last = series_value(&body, series);
        if last.is_some_and(&wanted) {
            return body;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{series} stayed at {last:?} for 10 s");
}

/// Connects `count` clients (ids from `first_id`) on one endpoint, all at once; each is
/// admitted or the test fails. Call inside the runtime that will keep them.
pub async fn connect_clients(
    server: &Server,
    data_dir: &Path,
    first_id: u64,
    count: u64,
) -> (quinn::Endpoint, Vec<Session>) {
    let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
    let endpoint = client_endpoint(server.local_addr(), server.fingerprint()).unwrap();
    let handshakes: Vec<_> = (first_id..first_id + count)
        .map(|client_id| {
            let token = mint_token(&key, client_id, Duration::from_secs(60)).unwrap();
            let endpoint = endpoint.clone();
            let addr = server.local_addr();
            tokio::spawn(
                async move { connect(&endpoint, addr, token, Duration::from_secs(20)).await },
            )
        })
        .collect();
    let mut sessions = Vec::new();
    for handshake in handshakes {
        sessions.push(handshake.await.unwrap().expect("admitted"));
    }
    (endpoint, sessions)
}

/// Held by the tests that load the machine and judge delivery against a gate (the
/// handshake flood, churn, the lossy links, the bot swarm): they run one at a time, so
/// that on a 2-core machine one drill's load is not judged as another's lost ticks. The
/// other socket tests still run beside them.
pub fn one_load_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A failed test poisons the lock; the next one still gets the machine.
    MACHINE.lock().unwrap_or_else(|e| e.into_inner())
}
