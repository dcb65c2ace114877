//! `up` → `status` → `down` on a second, private stack: both components come up healthy, `up`
//! again attaches instead of starting twice, and `down` leaves no process behind.

use std::net::TcpListener;
use std::time::Duration;

use offport_devstack::stack::{self, StackOptions};

/// Four distinct free ports: all four listeners are held until every port is known, so the
/// kernel cannot hand out the same one twice.
fn free_ports() -> [u16; 4] {
    let listeners: Vec<TcpListener> = (0..4)
        .filter_map(|_| TcpListener::bind("127.0.0.1:0").ok())
        .collect();
    let mut ports = [0u16; 4];
    for (slot, listener) in ports.iter_mut().zip(&listeners) {
        *slot = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    }
    ports
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !matches!(
                stat.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next()),
                Some("Z" | "X")
            )
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn up_status_down_leaves_no_process_behind() -> anyhow::Result<()> {
    let shared = StackOptions::from_env()?;
    let run_dir = std::env::temp_dir().join(format!(
        "offport-lifecycle-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let [kafka_port, controller_port, registry_port, registry_management_port] = free_ports();
    let options = StackOptions {
        run_dir: run_dir.clone(),
        kafka_port,
        controller_port,
        registry_port,
        registry_management_port,
        partitions: 2,
        start_timeout: Duration::from_secs(180),
        ..shared
    };

    let state = stack::up(&options).await?;
    let result = async {
        let health = stack::status(&options);
        assert_eq!(health.len(), 2);
        assert!(health.iter().all(|c| c.healthy()), "{health:#?}");
        assert!(alive(state.kafka_pid) && alive(state.registry_pid));

        let again = stack::up(&options).await?;
        assert_eq!(
            (again.kafka_pid, again.registry_pid),
            (state.kafka_pid, state.registry_pid)
        );
        anyhow::Ok(())
    }
    .await;

    let stopped = stack::down(&options)?;
    result?;
    assert_eq!(stopped, vec!["registry", "kafka"]);
    // The children were reaped by this process (their parent) only if it waits; here they are
    // zombies at worst, which `alive` does not count.
    assert!(
        !alive(state.kafka_pid),
        "kafka pid {} still running",
        state.kafka_pid
    );
    assert!(
        !alive(state.registry_pid),
        "registry pid {} still running",
        state.registry_pid
    );
    assert!(stack::status(&options).iter().all(|c| !c.process_alive));
    assert!(
        stack::down(&options)?.is_empty(),
        "a second down finds nothing"
    );
    std::fs::remove_dir_all(&run_dir).ok();
    Ok(())
}
