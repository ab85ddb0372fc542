//! A client that vanishes: its socket falls silent without a CONNECTION_CLOSE, the way a
//! killed process or a dead radio leaves. The server hears nothing more and has to time
//! the connection out (`NetConfig::idle_timeout`). For fault drills, churn tests and the
//! bots' `vanish` behaviour.
//!
//! [`silenceable_endpoint`] is a client endpoint like [`crate::client_endpoint_with`]
//! whose socket a [`Silencer`] can mute: from then on every packet the endpoint would
//! send is dropped, including the close its connections send when they are dropped.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, UdpPoller};

use crate::session::{client_config, client_socket};
use crate::{ClientError, EndpointOptions};

/// Mutes a [`silenceable_endpoint`]'s socket.
#[derive(Debug, Clone)]
pub struct Silencer(Arc<AtomicBool>);

impl Silencer {
    /// From now on the endpoint sends nothing: no acknowledgement, no input, no close.
    pub fn silence(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`Self::silence`] was called.
    pub fn is_silent(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A client endpoint (call it inside a tokio runtime) whose socket the returned
/// [`Silencer`] can mute. To vanish: `silencer.silence()`, then drop the sessions and
/// the endpoint; quinn's closes go nowhere.
pub fn silenceable_endpoint(
    server: SocketAddr,
    fingerprint: [u8; 32],
    options: &EndpointOptions,
) -> Result<(quinn::Endpoint, Silencer), ClientError> {
    let config = client_config(fingerprint, options)?;
    let runtime = Arc::new(quinn::TokioRuntime);
    let inner = runtime
        .wrap_udp_socket(client_socket(server)?)
        .map_err(|e| ClientError::Setup(format!("wrapping the UDP socket: {e}")))?;
    let silent = Arc::new(AtomicBool::new(false));
    let socket = Arc::new(SilenceableSocket {
        inner,
        silent: silent.clone(),
    });
    let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        socket,
        runtime,
    )
    .map_err(|e| ClientError::Setup(e.to_string()))?;
    endpoint.set_default_client_config(config);
    Ok((endpoint, Silencer(silent)))
}

/// quinn's own socket, with sends dropped once silenced (reported as sent, so quinn
/// carries on as if the network lost them).
#[derive(Debug)]
struct SilenceableSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    silent: Arc<AtomicBool>,
}

impl AsyncUdpSocket for SilenceableSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        if self.silent.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
