//! The memory budget end to end: a server given a budget with room for a few clients
//! admits that many and refuses the next with `over_memory_budget`.
//!
//! A test binary of its own: the server sizes its budget from this process's resident
//! set, which other tests running beside it would move by megabytes.
//!
//! This process hosts the clients as well as the server, so its resident set grows with
//! both ends of every connection and with the clients' runtime, and the budget's measured
//! check (`MeasuredBudget::admits`: resident set + headroom + the charge of clients joining)
//! would count the clients' side too. A ballast held while the server measures its
//! baseline, and freed before the first client, stands for that: the plan's count is what
//! this test is about. The measured check is tested in `tickcast-net`'s unit tests and,
//! with the server in a real memory cgroup of its own, in `tests/cgroup.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tickcast_clients::{ClientError, Session, client_endpoint, connect, mint_token};
use tickcast_net::budget::{BudgetSource, MemoryBudget};
use tickcast_net::tls::{TOKEN_KEY_FILE, load_token_key};
use tickcast_net::{NetConfig, NetCounters};
use tickcast_server::{Server, ServerConfig};
use tickcast_shared::msg::RejectReason;
use tickcast_sim::SimConfig;

const PATIENCE: Duration = Duration::from_secs(10);

/// More than glibc's largest dynamic mmap threshold (32 MiB), so the allocation is always
/// its own mapping and freeing it gives the pages back to the system at once.
const BALLAST_BYTES: usize = 64 << 20;

fn start(data_dir: &Path, memory_budget: Option<u64>) -> Server {
    // Resident while the server starts (see the module doc); non-zero bytes, as zeroed
    // pages would not be.
    let ballast = vec![1u8; BALLAST_BYTES];
    let server = Server::start(ServerConfig {
        net: NetConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            memory_budget,
            ..NetConfig::default()
        },
        sim: SimConfig {
            npcs: 20,
            ..SimConfig::default()
        },
        record: None,
        ..ServerConfig::default()
    })
    .expect("server starts");
    // Freed only now that the server has measured its baseline.
    drop(std::hint::black_box(ballast));
    server
}

/// A server whose budget has room for 2 to 4 clients. The server measures its baseline
/// itself, at start, after allocating its world, so the test cannot know it in advance:
/// each start's budget is sized from the baseline the previous start measured, and a
/// start that lands outside the range is retried. The baselines settle within a few
/// starts (the allocator reuses what the earlier servers freed).
fn start_with_room_for_a_few(data_dir: &Path) -> Server {
    let probe = start(data_dir, None);
    let mut estimate = probe.memory_plan();
    probe.stop();
    for _ in 0..8 {
        let budget = estimate.baseline_rss + estimate.headroom + estimate.per_client() * 7 / 2;
        let server = start(data_dir, Some(budget));
        let plan = server.memory_plan();
        assert_eq!(
            plan.budget,
            Some(MemoryBudget {
                bytes: budget,
                source: BudgetSource::Configured
            })
        );
        assert_eq!(
            plan.clients as u64,
            budget.saturating_sub(plan.baseline_rss + plan.headroom) / plan.per_client(),
            "{plan}"
        );
        if (2..=4).contains(&plan.clients) {
            return server;
        }
        server.stop();
        estimate = plan;
    }
    panic!("no start had room for 2 to 4 clients in eight tries");
}

#[test]
fn a_client_beyond_the_memory_budget_is_refused_with_over_memory_budget() {
    let data_dir: PathBuf =
        std::env::temp_dir().join(format!("tickcast-budget-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let server = start_with_room_for_a_few(&data_dir);
    let room = server.memory_plan().clients;
    let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
    let addr = server.local_addr();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let endpoint = client_endpoint(addr, server.fingerprint()).unwrap();
        let join = |client_id: u64| {
            let token = mint_token(&key, client_id, Duration::from_secs(60)).unwrap();
            connect(&endpoint, addr, token, PATIENCE)
        };
        let mut admitted: Vec<Session> = Vec::new();
        for client_id in 0..room as u64 {
            admitted.push(join(client_id).await.expect("within the budget"));
        }
        match join(100).await {
            Err(ClientError::Rejected {
                reason: Some(RejectReason::OverMemoryBudget),
                ..
            }) => {}
            Err(other) => panic!("expected over_memory_budget, got {other}"),
            Ok(_) => panic!(
                "client {} of a budget with room for {room} was welcomed",
                room + 1
            ),
        }
        let counters = server.net_counters();
        assert_eq!(counters.rejects_for(RejectReason::OverMemoryBudget), 1);
        assert_eq!(counters.rejects_for(RejectReason::ServerFull), 0);

        // A client that leaves gives its room back.
        admitted.pop().unwrap().close();
        tokio::time::timeout(PATIENCE, async {
            while NetCounters::get(&counters.peers) as usize != room - 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the server notices the client leaving");
        join(101).await.expect("room again after a client left");
    });
    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
}
