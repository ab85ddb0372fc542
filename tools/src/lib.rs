//! tickcast-tools: operator tools around a tickcast server.
//!
//! Now: `tickcast-token`, which mints connect tokens with the server's key, the way a
//! game backend would. Recording replay, a link-conditioning proxy and the benchmark
//! driver are planned here (see the open issues).
//!
//! What it never does: change a server's files other than the ones it is asked to write.
