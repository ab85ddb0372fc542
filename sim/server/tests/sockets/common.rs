//! Shared by the integration tests that run a real server in-process.

use std::path::{Path, PathBuf};

use tickcast_net::NetConfig;
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
