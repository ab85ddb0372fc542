//! A fake Agones SDK sidecar, written from Agones' documented REST API (the SDK's
//! `sdk.swagger.json` and `beta.swagger.json`), for tests and for `scripts/fleet.py`: it
//! answers on 127.0.0.1 as the sidecar answers in a GameServer pod, keeps a GameServer
//! (state, labels, annotations, Counters) and records every call it gets.
//!
//! Endpoints: `POST /ready` (state → `Ready`), `POST /health`, `POST /shutdown` (state →
//! `Shutdown`), `POST /allocate`, `POST /reserve`, `GET /gameserver`,
//! `GET /watch/gameserver` (chunked JSON lines `{"result":GameServer}`, the current one
//! first, then one per change), `PUT /metadata/label` and `PUT /metadata/annotation`
//! (`{"key","value"}`, stored under `agones.dev/sdk-KEY`), `GET` and `PATCH
//! /v1beta1/counters/{name}` (`count`, `capacity`, `countDiff` as int64 strings or
//! numbers; 404 for an undeclared Counter, 400 for a count out of `[0, capacity]`).
//!
//! One endpoint is the fake's own, standing in for a `GameServerAllocation` made through
//! the Kubernetes API: `POST /fake/allocate` moves a `Ready` GameServer to `Allocated`
//! and answers it (409 otherwise).
//!
//! [`Behaviour`] makes it misbehave on purpose: answer every call with 500, or read the
//! request and never answer (a hung sidecar).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The most calls the fake remembers; older ones are dropped (a test reads a few
/// hundred at most).
pub const MAX_RECORDED_CALLS: usize = 100_000;

/// The most connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 64;

/// The largest request head plus body the fake reads.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// As the sidecar does.
    Answer,
    /// `500 Internal Server Error` to every call (the watch included).
    Fail500,
    /// Read the request, then never answer (until the behaviour changes or the fake
    /// stops, then close).
    Hang,
}

impl Behaviour {
    fn code(self) -> u8 {
        match self {
            Behaviour::Answer => 0,
            Behaviour::Fail500 => 1,
            Behaviour::Hang => 2,
        }
    }

    fn from_code(code: u8) -> Self {
        match code {
            1 => Behaviour::Fail500,
            2 => Behaviour::Hang,
            _ => Behaviour::Answer,
        }
    }
}

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    /// When it arrived (the request fully read).
    pub at: Instant,
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, e.g. `/v1beta1/counters/players`.
    pub path: String,
    /// The body as text.
    pub body: String,
}

impl RecordedCall {
    /// `"POST /ready"`.
    pub fn route(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The body as JSON (`Value::Null` if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A Counter: count and capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    /// The count.
    pub count: i64,
    /// The capacity.
    pub capacity: i64,
}

/// The GameServer the fake keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GameServerModel {
    /// `metadata.name`.
    pub name: String,
    /// `status.state`.
    pub state: String,
    /// `status.address`.
    pub address: String,
    /// `status.ports`: (name, port).
    pub ports: Vec<(String, u16)>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `status.counters`.
    pub counters: BTreeMap<String, Counter>,
}

impl GameServerModel {
    /// A GameServer named `name` in state `Scheduled`, at `address` with one UDP port
    /// `game`, declaring the Counter `players` with capacity 0 until the server sets it.
    pub fn new(name: &str, address: &str, game_port: u16) -> Self {
        Self {
            name: name.to_owned(),
            state: "Scheduled".into(),
            address: address.to_owned(),
            ports: vec![("game".into(), game_port)],
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            counters: BTreeMap::from([("players".to_owned(), Counter::default())]),
        }
    }

    /// As the SDK's `GameServer` message in JSON (field names as Agones' REST gateway
    /// writes them; int64 values as strings).
    pub fn to_json(&self) -> Value {
        let counters: serde_json::Map<String, Value> = self
            .counters
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    json!({ "count": c.count.to_string(), "capacity": c.capacity.to_string() }),
                )
            })
            .collect();
        json!({
            "object_meta": {
                "name": self.name,
                "namespace": "default",
                "labels": self.labels,
                "annotations": self.annotations,
            },
            "status": {
                "state": self.state,
                "address": self.address,
                "ports": self.ports.iter().map(|(name, port)| json!({ "name": name, "port": port })).collect::<Vec<_>>(),
                "counters": counters,
            },
        })
    }
}

/// A hook called with every recorded call.
pub type OnCall = Box<dyn Fn(&RecordedCall) + Send + Sync>;

struct Shared {
    calls: Mutex<Vec<RecordedCall>>,
    game_server: Mutex<GameServerModel>,
    /// Bumped on every change of the GameServer; watchers wait on `changed`.
    version: Mutex<u64>,
    changed: Condvar,
    behaviour: AtomicU8,
    stop: AtomicBool,
    connections: AtomicUsize,
    /// Each recorded call is also handed to this (the binary writes a JSON-lines log).
    on_call: Option<OnCall>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut GameServerModel)) {
        f(&mut lock(&self.game_server));
        *lock(&self.version) += 1;
        self.changed.notify_all();
    }

    fn behaviour(&self) -> Behaviour {
        Behaviour::from_code(self.behaviour.load(Ordering::Relaxed))
    }
}

/// A running fake sidecar. Stops (and closes every connection) when dropped.
pub struct FakeSidecar {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeSidecar {
    /// Listens on `listen` (port 0 for any) with `game_server` as its GameServer.
    pub fn start(listen: SocketAddr, game_server: GameServerModel) -> std::io::Result<Self> {
        Self::start_with(listen, game_server, None)
    }

    /// [`FakeSidecar::start`], handing each recorded call to `on_call` as well.
    pub fn start_with(
        listen: SocketAddr,
        game_server: GameServerModel,
        on_call: Option<OnCall>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            calls: Mutex::new(Vec::new()),
            game_server: Mutex::new(game_server),
            version: Mutex::new(0),
            changed: Condvar::new(),
            behaviour: AtomicU8::new(Behaviour::Answer.code()),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            on_call,
        });
        let accept = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("fake-agones".into())
                .spawn(move || accept_loop(&listener, &shared))?
        };
        Ok(Self {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.shared.calls).clone()
    }

    /// The GameServer now.
    pub fn game_server(&self) -> GameServerModel {
        lock(&self.shared.game_server).clone()
    }

    /// Changes how it answers from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.shared
            .behaviour
            .store(behaviour.code(), Ordering::Relaxed);
        self.shared.changed.notify_all();
    }

    /// Sets the GameServer's state, as the Agones controller would (watchers are told).
    pub fn set_state(&self, state: &str) {
        self.shared.update(|gs| gs.state = state.to_owned());
    }
}

impl Drop for FakeSidecar {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.changed.notify_all();
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if shared.connections.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
                    shared.connections.fetch_sub(1, Ordering::Relaxed);
                    continue; // dropped: closed
                }
                let shared = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name("fake-agones-conn".into())
                    .spawn(move || {
                        serve(stream, &shared);
                        shared.connections.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: String,
    /// The path (query string cut).
    pub path: String,
    /// The body.
    pub body: Vec<u8>,
}

/// Parses a whole request from `buf`: `Ok(None)` until it has all arrived.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, &'static str> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_REQUEST_BYTES {
            Err("request head too large")
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().ok_or("no request target")?;
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let mut length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().map_err(|_| "bad Content-Length")?;
        }
    }
    if length > MAX_REQUEST_BYTES {
        return Err("body too large");
    }
    let body_start = end + 4;
    if buf.len() < body_start + length {
        return Ok(None);
    }
    Ok(Some(Request {
        method,
        path,
        body: buf[body_start..body_start + length].to_vec(),
    }))
}

fn serve(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut scratch = [0u8; 4096];
    let request = loop {
        match parse_request(&buf) {
            Ok(Some(request)) => break request,
            Ok(None) => {}
            Err(why) => {
                let _ = respond(&mut stream, 400, &json!({ "error": why }));
                return;
            }
        }
        match stream.read(&mut scratch) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&scratch[..n]),
        }
    };
    let call = RecordedCall {
        at: Instant::now(),
        method: request.method.clone(),
        path: request.path.clone(),
        body: String::from_utf8_lossy(&request.body).into_owned(),
    };
    if let Some(on_call) = &shared.on_call {
        on_call(&call);
    }
    {
        let mut calls = lock(&shared.calls);
        if calls.len() >= MAX_RECORDED_CALLS {
            calls.remove(0);
        }
        calls.push(call);
    }
    match shared.behaviour() {
        Behaviour::Answer => {}
        Behaviour::Fail500 => {
            let _ = respond(&mut stream, 500, &json!({ "error": "injected failure" }));
            return;
        }
        Behaviour::Hang => {
            let mut version = lock(&shared.version);
            while shared.behaviour() == Behaviour::Hang && !shared.stop.load(Ordering::Relaxed) {
                version = shared
                    .changed
                    .wait_timeout(version, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            return; // closed without an answer
        }
    }
    if request.method == "GET" && request.path == "/watch/gameserver" {
        watch(stream, shared);
        return;
    }
    let (status, body) = answer(&request, shared);
    let _ = respond(&mut stream, status, &body);
}

/// The answer to one unary call, updating the GameServer.
fn answer(request: &Request, shared: &Shared) -> (u16, Value) {
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let set_state = |state: &str| shared.update(|gs| gs.state = state.to_owned());
    match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/ready") => {
            set_state("Ready");
            (200, json!({}))
        }
        ("POST", "/health") => (200, json!({})),
        ("POST", "/shutdown") => {
            set_state("Shutdown");
            (200, json!({}))
        }
        ("POST", "/allocate") => {
            set_state("Allocated");
            (200, json!({}))
        }
        ("POST", "/reserve") => {
            set_state("Reserved");
            (200, json!({}))
        }
        ("GET", "/gameserver") => (200, lock(&shared.game_server).to_json()),
        ("PUT", "/metadata/label" | "/metadata/annotation") => {
            let (Some(key), Some(value)) = (
                body.get("key").and_then(Value::as_str),
                body.get("value").and_then(Value::as_str),
            ) else {
                return (400, json!({ "error": "key and value are required" }));
            };
            let key = format!("agones.dev/sdk-{key}");
            let value = value.to_owned();
            let labels = request.path.ends_with("label");
            shared.update(|gs| {
                if labels {
                    gs.labels.insert(key, value);
                } else {
                    gs.annotations.insert(key, value);
                }
            });
            (200, json!({}))
        }
        ("POST", "/fake/allocate") => {
            let mut allocated = None;
            shared.update(|gs| {
                if gs.state == "Ready" {
                    gs.state = "Allocated".into();
                    allocated = Some(gs.to_json());
                }
            });
            match allocated {
                Some(gs) => (200, gs),
                None => (409, json!({ "error": "not Ready" })),
            }
        }
        (method, path) if path.starts_with("/v1beta1/counters/") => {
            let name = &path["/v1beta1/counters/".len()..];
            counter_call(method, name, &body, shared)
        }
        _ => (404, json!({ "error": "no such endpoint" })),
    }
}

/// An int64 as proto3 JSON writes it (a string) or as a number.
fn int64(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::String(text) => text.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn counter_call(method: &str, name: &str, body: &Value, shared: &Shared) -> (u16, Value) {
    let mut gs = lock(&shared.game_server);
    let Some(current) = gs.counters.get(name).copied() else {
        return (404, json!({ "error": format!("counter {name} not found") }));
    };
    let as_json = |c: Counter| json!({ "name": name, "count": c.count.to_string(), "capacity": c.capacity.to_string() });
    match method {
        "GET" => (200, as_json(current)),
        "PATCH" => {
            let mut next = current;
            if let Some(capacity) = int64(body.get("capacity")) {
                next.capacity = capacity;
            }
            if let Some(count) = int64(body.get("count")) {
                next.count = count;
            }
            if let Some(diff) = int64(body.get("countDiff")) {
                next.count += diff;
            }
            if next.capacity < 0 || next.count < 0 || next.count > next.capacity {
                return (
                    400,
                    json!({ "error": "OUT_OF_RANGE: count must be within [0, capacity]" }),
                );
            }
            gs.counters.insert(name.to_owned(), next);
            drop(gs);
            *lock(&shared.version) += 1;
            shared.changed.notify_all();
            (200, as_json(next))
        }
        _ => (405, json!({ "error": "method not allowed" })),
    }
}

fn respond(stream: &mut TcpStream, status: u16, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        500 => "Internal Server Error",
        _ => "Error",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// The watch stream: chunked JSON lines, the GameServer now and after every change, until
/// the client goes away, the fake stops or starts misbehaving.
fn watch(mut stream: TcpStream, shared: &Shared) {
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let mut sent_version = None;
    loop {
        if shared.stop.load(Ordering::Relaxed) || shared.behaviour() != Behaviour::Answer {
            let _ = stream.write_all(b"0\r\n\r\n");
            return;
        }
        let version = *lock(&shared.version);
        if sent_version != Some(version) {
            let line = format!(
                "{}\n",
                json!({ "result": lock(&shared.game_server).to_json() })
            );
            let chunk = format!("{:x}\r\n{line}\r\n", line.len());
            if stream.write_all(chunk.as_bytes()).is_err() || stream.flush().is_err() {
                return;
            }
            sent_version = Some(version);
        }
        let guard = lock(&shared.version);
        if *guard == version {
            let _ = shared
                .changed
                .wait_timeout(guard, Duration::from_millis(100));
        }
    }
}

/// A blocking one-shot HTTP call to a fake (or real) sidecar, for the `allocate` tool and
/// tests: the status and the body as JSON.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream
        .take(MAX_REQUEST_BYTES as u64)
        .read_to_end(&mut response)?;
    let bad = || std::io::Error::new(ErrorKind::InvalidData, "not an HTTP response");
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let status = std::str::from_utf8(&response[..end])
        .ok()
        .and_then(|head| head.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(bad)?;
    let json = serde_json::from_slice(&response[end + 4..]).unwrap_or(Value::Null);
    Ok((status, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(2);

    fn fake() -> FakeSidecar {
        FakeSidecar::start(
            "127.0.0.1:0".parse().unwrap(),
            GameServerModel::new("gs-test", "127.0.0.1", 7777),
        )
        .unwrap()
    }

    #[test]
    fn a_request_parses_once_its_body_has_arrived() {
        let bytes = b"PATCH /v1beta1/counters/players?x=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_request(&bytes[..bytes.len() - 1]), Ok(None));
        let request = parse_request(bytes).unwrap().unwrap();
        assert_eq!(request.method, "PATCH");
        assert_eq!(request.path, "/v1beta1/counters/players");
        assert_eq!(request.body, b"{}");
    }

    #[test]
    fn lifecycle_metadata_and_counters_behave_as_documented() {
        let fake = fake();
        let addr = fake.addr();
        assert_eq!(
            call(addr, "POST", "/ready", Some(&json!({})), TIMEOUT)
                .unwrap()
                .0,
            200
        );
        assert_eq!(fake.game_server().state, "Ready");
        let annotate = json!({ "key": "tickcast-fingerprint", "value": "ab" });
        call(
            addr,
            "PUT",
            "/metadata/annotation",
            Some(&annotate),
            TIMEOUT,
        )
        .unwrap();
        assert_eq!(
            fake.game_server().annotations["agones.dev/sdk-tickcast-fingerprint"],
            "ab"
        );
        let set = json!({ "count": "3", "capacity": "10" });
        let (status, counter) = call(
            addr,
            "PATCH",
            "/v1beta1/counters/players",
            Some(&set),
            TIMEOUT,
        )
        .unwrap();
        assert_eq!(status, 200);
        assert_eq!(counter["count"], "3");
        let over = json!({ "count": "11" });
        assert_eq!(
            call(
                addr,
                "PATCH",
                "/v1beta1/counters/players",
                Some(&over),
                TIMEOUT
            )
            .unwrap()
            .0,
            400
        );
        assert_eq!(
            call(addr, "GET", "/v1beta1/counters/rooms", None, TIMEOUT)
                .unwrap()
                .0,
            404
        );
        let (status, allocated) = call(addr, "POST", "/fake/allocate", None, TIMEOUT).unwrap();
        assert_eq!(status, 200);
        assert_eq!(allocated["status"]["state"], "Allocated");
        assert_eq!(allocated["status"]["ports"][0]["port"], 7777);
        assert_eq!(
            call(addr, "POST", "/fake/allocate", None, TIMEOUT)
                .unwrap()
                .0,
            409,
            "allocated once"
        );
        let routes: Vec<String> = fake.calls().iter().map(RecordedCall::route).collect();
        assert_eq!(routes[0], "POST /ready");
        assert_eq!(routes.len(), 7);
    }

    #[test]
    fn failing_on_purpose_answers_500() {
        let fake = fake();
        fake.set_behaviour(Behaviour::Fail500);
        assert_eq!(
            call(fake.addr(), "POST", "/health", Some(&json!({})), TIMEOUT)
                .unwrap()
                .0,
            500
        );
        assert_eq!(fake.calls().len(), 1, "a failed call is still recorded");
    }
}
