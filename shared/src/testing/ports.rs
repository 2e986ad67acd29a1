//! Ports for test peers, without the bind-and-release race.
//!
//! Whatever can bind port 0 does so, and the harness reads the port it got:
//! in-process through the listener, for a child process through
//! [`listening_port`], which finds the process's listening socket in `/proc`
//! (independent of its log level and log format).
//!
//! Peers that need fixed ports written in a config file (Kannel's bearerbox and
//! smsbox) take a [`PortLease`]: a port from a range below the kernel's ephemeral
//! range — so neither `bind(0)` nor an outgoing connection is ever given it — held by
//! an exclusive lock on `/tmp/meter-test-ports/PORT.lock` for as long as the lease
//! lives. Parallel test processes therefore never hand out the same port; the lock
//! goes with the process, even on `kill -9`. Something outside the scheme may still
//! listen on a port of the range: a lease is only given for a port that binds now,
//! and a peer that still finds its port taken is started again on new leases.
//!
//! The range is `TEST_PORT_RANGE` (`LOW-HIGH`, default `26000-32000`: above
//! RabbitMQ's 25672 and Kannel's defaults, below Linux's default ephemeral range
//! 32768–60999, and cut to end below the machine's actual ephemeral range).

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{READY_WAIT, eventually};

const DEFAULT_RANGE: (u16, u16) = (26000, 32000);

/// A port reserved for this test process until dropped.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    /// Holds the exclusive lock; released when dropped (or the process ends).
    _lock: File,
}

impl PortLease {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// One port that no other lease holds and that binds on 127.0.0.1 now.
    pub fn take() -> PortLease {
        PortLease::take_n(1).pop().expect("one lease")
    }

    /// `n` different ports (see [`PortLease::take`]).
    pub fn take_n(n: usize) -> Vec<PortLease> {
        let (low, high) = range();
        let span = u32::from(high - low) + 1;
        // Start each search somewhere else, so parallel processes rarely contend
        // for the same lock files.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let start = std::process::id().wrapping_mul(7919) + NEXT.fetch_add(97, Ordering::Relaxed);
        let dir = lock_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let mut leases = Vec::with_capacity(n);
        for i in 0..span {
            if leases.len() == n {
                break;
            }
            let port = low + ((start + i) % span) as u16;
            if let Some(lease) = try_lease(&dir, port) {
                leases.push(lease);
            }
        }
        assert_eq!(
            leases.len(),
            n,
            "no {n} free test ports in {low}-{high} (TEST_PORT_RANGE)"
        );
        leases
    }
}

fn try_lease(dir: &std::path::Path, port: u16) -> Option<PortLease> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{port}.lock")))
        .ok()?;
    file.try_lock().ok()?;
    // Held by our lock, and outside the ephemeral range: free now means nobody in
    // the scheme takes it; the probe only catches listeners outside the scheme.
    std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
    Some(PortLease { port, _lock: file })
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("meter-test-ports")
}

/// The configured range, cut to end below the kernel's ephemeral range.
fn range() -> (u16, u16) {
    let configured = std::env::var("TEST_PORT_RANGE")
        .ok()
        .and_then(|r| {
            let (a, b) = r.split_once('-')?;
            let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (a <= b).then_some((a, b))
        })
        .unwrap_or(DEFAULT_RANGE);
    let (low, mut high) = configured;
    if let Some(ephemeral_low) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        && ephemeral_low > low
    {
        high = high.min(ephemeral_low - 1);
    }
    // A kernel whose ephemeral range covers the whole test range: use it anyway; the
    // bind probe and the retry on new leases are then what is left against a port
    // handed out by the kernel.
    if low > high {
        return configured;
    }
    (low, high)
}

/// Waits until process `pid` listens on a TCP port and returns it (the first
/// found, for a process that listens on one). Panics if the process is gone.
/// Reads `/proc/PID/fd` (its sockets) and `/proc/PID/net/tcp{,6}` (listeners).
pub async fn listening_port(pid: u32, what: &str) -> u16 {
    eventually(
        &format!("{what} (pid {pid}) listening"),
        READY_WAIT,
        || async move {
            let port = listening_ports(pid).into_iter().next();
            if port.is_none() {
                assert!(running(pid), "{what} (pid {pid}) exited before it listened");
            }
            port
        },
    )
    .await
}

/// Whether `pid` exists and is not a zombie (exited, not yet reaped).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `pid (comm) state …`; comm may hold spaces and parentheses.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// The TCP ports process `pid` listens on now.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            if *state != "0A" || !inodes.iter().any(|i| i == inode) {
                continue;
            }
            if let Some(port) = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                && !ports.contains(&port)
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// Runs `start` with fresh leases until it succeeds; a failure (`Err` with what the
/// peer said) is retried with new ports only because something outside the lease
/// scheme may have taken one. Panics after `tries`.
pub async fn with_leases<T, F, Fut>(n: usize, tries: usize, mut start: F) -> T
where
    F: FnMut(Vec<PortLease>) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut last = String::new();
    for attempt in 1..=tries {
        match start(PortLease::take_n(n)).await {
            Ok(v) => return v,
            Err(e) => {
                eprintln!("start on leased ports failed (try {attempt} of {tries}): {e}");
                last = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    panic!("did not start on leased ports after {tries} tries: {last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_in_one_process_are_distinct_and_held() {
        let a = PortLease::take_n(3);
        let b = PortLease::take_n(3);
        let mut ports: Vec<u16> = a.iter().chain(&b).map(PortLease::port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 6, "{ports:?}");
        let (low, high) = range();
        assert!(ports.iter().all(|p| (low..=high).contains(p)));
    }

    #[test]
    fn a_held_lease_is_not_given_again_until_dropped() {
        let lease = PortLease::take();
        let dir = lock_dir();
        assert!(try_lease(&dir, lease.port()).is_none(), "locked");
        let port = lease.port();
        drop(lease);
        assert!(try_lease(&dir, port).is_some(), "free again");
    }

    #[tokio::test]
    async fn finds_the_port_a_process_listens_on() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(listening_ports(std::process::id()).contains(&port));
        drop(listener);
        assert!(!listening_ports(std::process::id()).contains(&port));
    }
}
