//! The socket part, kept thin: a UDP proxy on loopback that hands every packet to a
//! [`Link`] and sends it on when the link says. Clients send to the proxy's address;
//! each client address gets its own upstream socket, so the server sees one address per
//! client and its replies find their way back.
//!
//! Bounded everywhere: clients (a new address beyond the limit is dropped, counted),
//! packets waiting for their delivery time (beyond the limit: dropped, counted), the
//! channel from the upstream sockets, and the proxy's lifetime.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::link::{Fate, Link, LinkCounters};
use crate::spec::NetsimSpec;

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// An address that is not loopback: this tool conditions test traffic on one
    /// machine and nothing else.
    #[error("{0} is not a loopback address: tickcast-netsim runs on 127.0.0.0/8 or ::1 only")]
    NotLoopback(SocketAddr),
    /// A socket or thread could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// How a proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where clients send. Default `127.0.0.1:0` (a port of the OS's choosing).
    pub listen: SocketAddr,
    /// The server.
    pub upstream: SocketAddr,
    /// What the link does.
    pub spec: NetsimSpec,
    /// Most client addresses served; packets from more are dropped (counted). Default
    /// 4,096: a bots process uses one address per 200 clients.
    pub max_clients: usize,
    /// Most packets waiting for their delivery time, both directions together; beyond
    /// it a packet is dropped (counted). Default 65,536: at 1,500 bytes that is 96 MiB
    /// at worst, and a second of 100 ms delay at 600 Mbit/s.
    pub max_pending: usize,
    /// The proxy stops by itself after this long. Default `None`: when dropped (the
    /// command line sets one).
    pub lifetime: Option<Duration>,
}

impl ProxyConfig {
    /// A proxy in front of `upstream` doing `spec`, with the default limits.
    pub fn new(upstream: SocketAddr, spec: NetsimSpec) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream,
            spec,
            max_clients: 4096,
            max_pending: 65_536,
            lifetime: None,
        }
    }
}

/// What the proxy did: each direction's link counters and its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyReport {
    /// Client → server.
    pub up: LinkCounters,
    /// Server → client.
    pub down: LinkCounters,
    /// Client addresses served.
    pub clients: u64,
    /// Packets dropped because `max_clients` addresses were already served.
    pub dropped_too_many_clients: u64,
    /// Packets dropped because `max_pending` packets were already waiting.
    pub dropped_pending_full: u64,
    /// Packets the OS would not send at their delivery time.
    pub dropped_send_failed: u64,
}

#[derive(Debug, Default)]
struct Shared {
    up: Mutex<LinkCounters>,
    down: Mutex<LinkCounters>,
    clients: AtomicU64,
    dropped_too_many_clients: AtomicU64,
    dropped_pending_full: AtomicU64,
    dropped_send_failed: AtomicU64,
}

/// A running proxy, on a thread of its own. Dropping it stops it.
pub struct Proxy {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Binds the listening socket and starts the proxy's thread.
    pub fn start(config: ProxyConfig) -> Result<Self, ProxyError> {
        for addr in [config.listen, config.upstream] {
            if !addr.ip().is_loopback() {
                return Err(ProxyError::NotLoopback(addr));
            }
        }
        let io = |what: &str| {
            let what = what.to_string();
            move |source| ProxyError::Io { what, source }
        };
        let front = std::net::UdpSocket::bind(config.listen).map_err(io("binding the proxy"))?;
        front
            .set_nonblocking(true)
            .map_err(io("making the proxy socket non-blocking"))?;
        let local_addr = front
            .local_addr()
            .map_err(io("reading the proxy address"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("starting the proxy runtime"))?;
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(Notify::new());
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("tickcast-netsim".into())
                .spawn(move || {
                    runtime.block_on(async move {
                        match UdpSocket::from_std(front) {
                            Ok(front) => run(config, front, &shared, &stop).await,
                            Err(e) => tracing::error!("netsim: {e}"),
                        }
                    });
                })
                .map_err(io("spawning the proxy thread"))?
        };
        tracing::info!(%local_addr, "netsim proxy listening");
        Ok(Self {
            local_addr,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// Where clients send.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What the proxy did so far.
    pub fn report(&self) -> ProxyReport {
        let lock = |m: &Mutex<LinkCounters>| *m.lock().unwrap_or_else(|e| e.into_inner());
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyReport {
            up: lock(&self.shared.up),
            down: lock(&self.shared.down),
            clients: get(&self.shared.clients),
            dropped_too_many_clients: get(&self.shared.dropped_too_many_clients),
            dropped_pending_full: get(&self.shared.dropped_pending_full),
            dropped_send_failed: get(&self.shared.dropped_send_failed),
        }
    }

    /// Stops the proxy and returns what it did.
    pub fn stop(mut self) -> ProxyReport {
        self.halt();
        self.report()
    }

    fn halt(&mut self) {
        self.stop.notify_one();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the netsim thread panicked");
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.halt();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Direction {
    Up,
    Down,
}

/// A packet waiting for its delivery time; ordered by time, then arrival.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    at: Duration,
    seq: u64,
    direction: Direction,
    client: usize,
    bytes: Vec<u8>,
}

struct Client {
    addr: SocketAddr,
    socket: Arc<UdpSocket>,
    reader: tokio::task::JoinHandle<()>,
}

/// Largest UDP payload read.
const MAX_PACKET: usize = 65_535;

async fn run(config: ProxyConfig, front: UdpSocket, shared: &Shared, stop: &Notify) {
    let epoch = Instant::now();
    let mut up = Link::new(config.spec.up, config.spec.seed);
    let mut down = Link::new(config.spec.down, config.spec.seed ^ 0x646f_776e);
    let mut clients: Vec<Client> = Vec::new();
    let mut by_addr: HashMap<SocketAddr, usize> = HashMap::new();
    let mut pending: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut seq = 0u64;
    // Upstream readers hand the server's packets over through this bounded channel.
    let (from_server_tx, mut from_server) = mpsc::channel::<(usize, Vec<u8>)>(4096);
    let mut buf = vec![0u8; MAX_PACKET];
    let end = config.lifetime.map(|life| epoch + life);
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        let next = pending.peek().map(|p| epoch + p.0.at);
        tokio::select! {
            biased;
            () = &mut stopped => break,
            () = sleep_until_opt(end) => {
                tracing::info!("netsim: lifetime reached, stopping");
                break;
            }
            () = sleep_until_opt(next) => {
                let now = epoch.elapsed();
                while pending.peek().is_some_and(|p| p.0.at <= now) {
                    let Some(Reverse(packet)) = pending.pop() else { break };
                    let sent = match packet.direction {
                        Direction::Up => clients[packet.client].socket.try_send(&packet.bytes),
                        Direction::Down => {
                            front.try_send_to(&packet.bytes, clients[packet.client].addr)
                        }
                    };
                    if sent.is_err() {
                        shared.dropped_send_failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            received = front.recv_from(&mut buf) => {
                let Ok((len, from)) = received else { continue };
                let client = match by_addr.get(&from) {
                    Some(&client) => client,
                    None if clients.len() >= config.max_clients => {
                        shared.dropped_too_many_clients.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    None => match connect_upstream(config.upstream, clients.len(), &from_server_tx).await {
                        Ok(client) => {
                            let client = Client { addr: from, ..client };
                            by_addr.insert(from, clients.len());
                            clients.push(client);
                            shared.clients.fetch_add(1, Ordering::Relaxed);
                            clients.len() - 1
                        }
                        Err(e) => {
                            tracing::warn!("netsim: no upstream socket for {from}: {e}");
                            continue;
                        }
                    },
                };
                let fate = up.on_packet(epoch.elapsed(), len);
                *shared.up.lock().unwrap_or_else(|e| e.into_inner()) = up.counters();
                schedule(&mut pending, &mut seq, &config, shared, fate, Direction::Up, client, &buf[..len]);
            }
            Some((client, bytes)) = from_server.recv() => {
                let fate = down.on_packet(epoch.elapsed(), bytes.len());
                *shared.down.lock().unwrap_or_else(|e| e.into_inner()) = down.counters();
                schedule(&mut pending, &mut seq, &config, shared, fate, Direction::Down, client, &bytes);
            }
        }
    }
    for client in clients {
        client.reader.abort();
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[allow(clippy::too_many_arguments)]
fn schedule(
    pending: &mut BinaryHeap<Reverse<Pending>>,
    seq: &mut u64,
    config: &ProxyConfig,
    shared: &Shared,
    fate: Fate,
    direction: Direction,
    client: usize,
    bytes: &[u8],
) {
    let Fate::Deliver { at, copies } = fate else {
        return;
    };
    for _ in 0..copies {
        if pending.len() >= config.max_pending {
            shared.dropped_pending_full.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *seq += 1;
        pending.push(Reverse(Pending {
            at,
            seq: *seq,
            direction,
            client,
            bytes: bytes.to_vec(),
        }));
    }
}

/// A socket toward the server for one client, and the task that reads the server's
/// packets from it into the proxy.
async fn connect_upstream(
    upstream: SocketAddr,
    index: usize,
    to_proxy: &mpsc::Sender<(usize, Vec<u8>)>,
) -> std::io::Result<Client> {
    let bind: SocketAddr = if upstream.is_ipv6() {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    } else {
        (std::net::Ipv4Addr::LOCALHOST, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(upstream).await?;
    let socket = Arc::new(socket);
    let reader = {
        let (socket, to_proxy) = (socket.clone(), to_proxy.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_PACKET];
            while let Ok(len) = socket.recv(&mut buf).await {
                // A full channel drops the packet, as a full NIC queue would.
                let _ = to_proxy.try_send((index, buf[..len].to_vec()));
            }
        })
    };
    Ok(Client {
        addr: upstream,
        socket,
        reader,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP echo server on loopback, for the proxy to sit in front of.
    fn echo_server() -> (SocketAddr, std::thread::JoinHandle<()>) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                if &buf[..len] == b"quit" {
                    break;
                }
                let _ = socket.send_to(&buf[..len], from);
            }
        });
        (addr, thread)
    }

    #[test]
    fn a_non_loopback_address_is_refused() {
        let spec = NetsimSpec::default();
        let config = ProxyConfig::new("192.0.2.1:4433".parse().unwrap(), spec);
        assert!(matches!(
            Proxy::start(config),
            Err(ProxyError::NotLoopback(_))
        ));
    }

    #[test]
    fn packets_go_through_both_ways_and_are_counted() {
        let (server, echo) = echo_server();
        let spec: NetsimSpec = "down:loss=100%,up:mtu=100".parse().unwrap();
        let proxy = Proxy::start(ProxyConfig::new(server, NetsimSpec::default())).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 64];
        for i in 0..10u8 {
            client.send_to(&[i; 20], proxy.local_addr()).unwrap();
            let len = client.recv(&mut buf).expect("the echo comes back");
            assert_eq!(&buf[..len], &[i; 20]);
        }
        let report = proxy.stop();
        assert_eq!(report.clients, 1);
        assert_eq!((report.up.delivered, report.down.delivered), (10, 10));

        // Now a link that clamps the way up and loses the way down.
        let proxy = Proxy::start(ProxyConfig::new(server, spec)).unwrap();
        client.send_to(&[0; 101], proxy.local_addr()).unwrap();
        client.send_to(&[0; 100], proxy.local_addr()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(client.recv(&mut buf).is_err(), "nothing comes back");
        let report = proxy.stop();
        assert_eq!(report.up.dropped_mtu, 1);
        assert_eq!(report.up.delivered, 1);
        assert_eq!(report.down.dropped_loss, 1);
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(b"quit", server)
            .unwrap();
        echo.join().unwrap();
    }
}
