//! The project's own three-node RabbitMQ cluster (`scripts/cluster.sh`) as the cluster
//! drills use it: started (idempotent), a quorum queue's leader found, a node killed
//! with `kill -9` and brought back. A guard brings a killed node back also when the
//! drill fails half-way, so the cluster is left whole for the next drill.

use std::process::Command;

fn script() -> std::path::PathBuf {
    crate::repo_root().join("scripts/cluster.sh")
}

/// Runs `scripts/cluster.sh ARGS…` (blocking); its stdout, or its stderr as the error.
fn cluster_sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .map_err(|e| format!("cannot run scripts/cluster.sh: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "scripts/cluster.sh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

async fn cluster_sh_async(args: &'static [&'static str]) -> Result<String, String> {
    tokio::task::spawn_blocking(move || cluster_sh(args))
        .await
        .unwrap_or_else(|e| Err(format!("scripts/cluster.sh task: {e}")))
}

/// Starts the cluster unless it runs (joins its nodes, waits for their management
/// APIs); panics with the script's message if it cannot.
pub async fn ensure_started() {
    if let Err(e) = cluster_sh_async(&["start"]).await {
        panic!("the cluster did not start: {e}");
    }
}

/// The node (1-3) that leads quorum queue `queue` of `vhost`.
pub async fn leader(vhost: &str, queue: &str) -> u32 {
    let (vhost, queue) = (vhost.to_owned(), queue.to_owned());
    let out = tokio::task::spawn_blocking(move || cluster_sh(&["leader", &vhost, &queue]))
        .await
        .unwrap_or_else(|e| Err(format!("task: {e}")));
    match out.map(|s| s.parse::<u32>()) {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => panic!("scripts/cluster.sh leader: not a node number: {e}"),
        Err(e) => panic!("{e}"),
    }
}

/// A node killed with `kill -9`; dropping the guard (or [`NodeDown::end`]) starts it
/// again and waits until the cluster has three running members.
pub struct NodeDown {
    pub node: u32,
    restored: bool,
}

impl NodeDown {
    /// `kill -9` of node `node`'s Erlang VM.
    pub async fn kill9(node: u32) -> NodeDown {
        let guard = NodeDown {
            node,
            restored: false,
        };
        let n = node.to_string();
        let killed = tokio::task::spawn_blocking(move || {
            let pid = cluster_sh(&["pid", &n])?;
            let status = Command::new("kill")
                .args(["-9", &pid])
                .status()
                .map_err(|e| format!("kill: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("kill -9 {pid} failed"))
            }
        })
        .await
        .unwrap_or_else(|e| Err(format!("task: {e}")));
        if let Err(e) = killed {
            panic!("could not kill node {node}: {e}");
        }
        guard
    }

    /// Starts the node again and waits for the whole cluster.
    pub async fn end(mut self) {
        let back = cluster_sh_async(&["start"]).await;
        self.restored = true;
        if let Err(e) = back {
            panic!("node {} did not come back: {e}", self.node);
        }
    }
}

impl Drop for NodeDown {
    fn drop(&mut self) {
        if !self.restored
            && let Err(e) = cluster_sh(&["start"])
        {
            eprintln!(
                "cluster node {} could not be restarted ({e}): scripts/cluster.sh start",
                self.node
            );
        }
    }
}
