//! Every test that opens a socket, in one binary: a real server on 127.0.0.1 (port 0 or
//! a port found free), real QUIC clients. The rules these tests exercise end to end are
//! tested without sockets in `tickcast-net` and `tickcast-sim`. `cli` runs the
//! `tickcast-server` binary itself: its config file, `--print-config` and its logs.
//!
//! `memory_budget` is the one socket test in a binary of its own: the server sizes its
//! budget from this process's resident set, which other tests beside it would move.

mod agones;
mod bots;
mod churn;
mod cli;
mod common;
mod drain;
mod end_to_end;
mod flood;
mod metrics;
mod netsim;
mod network;
mod progress;
mod recording;
mod schema_only;
mod scrape;
