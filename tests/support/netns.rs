//! Real network partitions for the integration tests: one Linux network namespace per
//! orchestrator instance, each joined by a veth pair to a bridge in the root namespace,
//! where PostgreSQL and the world's services listen on the bridge's address.
//!
//! ```text
//!  root namespace                               namespace i (`ns_name(i)`)
//!  bridge ob<id>  10.A.B.1/24  <── oh<id><i> ══ veth0  10.A.B.(10+i)/24   ← cut(i)/heal(i)
//!                 10.A.B+1.(4i+1)/30 oa<id><i> ══ adm0  10.A.B+1.(4i+2)/30 ← never cut
//! ```
//!
//! The bridge link carries everything an instance does (PostgreSQL, Redis, the
//! service and platform APIs, other instances); [`Net::cut`] takes it down. The admin
//! link is a point-to-point pair only the test uses to reach an instance's own HTTP
//! API ([`Net::admin_ip`]), so a test can still ask a partitioned instance what it
//! thinks. No namespace gets a default route: an instance reaches the addresses made
//! here and its own loopback, nothing else.
//!
//! Inside a namespace, 127.0.0.1 is the namespace's own loopback: what runs in the
//! root namespace on loopback (the shared PostgreSQL at 127.0.0.1:5432, a default
//! [`World`](super::world::World), hence `ORCH_TEST_DB=postgres` journals) is out of
//! reach. Put it on [`Net::host_ip`]: `PgServer::start(net.host_ip())`,
//! `WorldOptions { bind: Some(net.host_ip()), .. }`.
//!
//! Needs root and `ip` (iproute2). Everything is removed on drop; what a killed test
//! process leaves is removed by the next [`Net::new`] (its state file names the pid),
//! or by `scripts/netns-cleanup.sh`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where each live [`Net`] records its id and owner pid, for reaping after a kill.
const STATE_DIR: &str = "/tmp/orch-netns";
/// More instances would not fit the admin links' /30s in one /24.
pub const MAX_INSTANCES: usize = 60;

pub struct Net {
    id: String,
    /// 10.a.b.0/24 is the bridge's subnet, 10.a.(b+1).0/24 the admin links'.
    a: u8,
    b: u8,
    n: usize,
    cut: Mutex<Vec<bool>>,
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output().map_err(|e| io::Error::new(e.kind(), format!("cannot run `ip` (iproute2): {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip").args(args).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

/// An exclusive lock on `STATE_DIR/.lock` while choosing a subnet and creating the
/// bridge, so two test processes never pick the same one; released on drop.
struct Lock(std::fs::File);

impl Lock {
    fn take() -> io::Result<Lock> {
        std::fs::create_dir_all(STATE_DIR)?;
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(Path::new(STATE_DIR).join(".lock"))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Lock(f))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The IPv4 prefixes already in use in the root namespace (addresses and routes of
/// every table), to keep ours clear of them.
fn used_prefixes() -> Vec<(u32, u8)> {
    let mut text = ip_output(&["-4", "-o", "addr", "show"]);
    text.push_str(&ip_output(&["-4", "route", "show", "table", "all"]));
    text.split_whitespace()
        .filter_map(|w| {
            let (addr, len) = w.split_once('/').unwrap_or((w, "32"));
            let addr: Ipv4Addr = addr.parse().ok()?;
            Some((u32::from(addr), len.parse().ok()?))
        })
        .collect()
}

fn overlaps((x, xl): (u32, u8), (y, yl): (u32, u8)) -> bool {
    let l = xl.min(yl).min(32);
    let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
    x & mask == y & mask
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    pid > 0 && (unsafe { libc::kill(pid, 0) } == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Removes everything of a net. The veth pairs go first, by their root-namespace
/// ends (deleting one end deletes both): deleting a namespace only unmounts its name,
/// and the namespace with its links lives on while a socket made in it does — a
/// closed connection retransmitting its FIN into a cut link holds it for minutes.
fn remove_all(id: &str) {
    for link in links_of(Some(id)) {
        let _ = ip(&["link", "del", &link]);
    }
    for ns in ip_output(&["netns", "list"]).lines().filter_map(|l| l.split_whitespace().next()) {
        if ns.strip_prefix(&format!("orch-{id}-")).is_some_and(|i| i.parse::<usize>().is_ok()) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
    let _ = ip(&["link", "del", &format!("ob{id}")]);
    let _ = std::fs::remove_file(Path::new(STATE_DIR).join(id));
}

/// The root-namespace veth ends (`oh<id><i>`, `oa<id><i>`) of net `id`, or of every net.
fn links_of(id: Option<&str>) -> Vec<String> {
    ip_output(&["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .filter(|name| {
            let Some(rest) = name.strip_prefix("oh").or_else(|| name.strip_prefix("oa")) else { return false };
            rest.len() > 6
                && rest.is_char_boundary(6)
                && rest[..6].bytes().all(|b| b.is_ascii_hexdigit())
                && rest[6..].bytes().all(|b| b.is_ascii_digit())
                && id.is_none_or(|id| &rest[..6] == id)
        })
        .collect()
}

fn reap_stale() {
    // Links of nets that no state file names any more (a net still being made has
    // written its file first, under the same lock).
    for link in links_of(None) {
        if !Path::new(STATE_DIR).join(&link[2..8]).exists() {
            let _ = ip(&["link", "del", &link]);
        }
    }
    let Ok(rd) = std::fs::read_dir(STATE_DIR) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let pid = std::fs::read_to_string(e.path()).ok().and_then(|s| s.trim().parse::<i32>().ok());
        if !pid.is_some_and(pid_alive) {
            remove_all(&name);
        }
    }
}

impl Net {
    /// `n` namespaces joined to a new bridge. Panics (with `ip`'s message) when that
    /// cannot be done: not root, no iproute2, no netns support.
    pub fn new(n: usize) -> Net {
        Self::try_new(n).unwrap_or_else(|e| panic!("cannot build the test network (needs root and iproute2): {e}"))
    }

    pub fn try_new(n: usize) -> io::Result<Net> {
        assert!((1..=MAX_INSTANCES).contains(&n), "Net::new(n) takes 1..={MAX_INSTANCES} instances");
        let lock = Lock::take()?;
        reap_stale();
        let used = used_prefixes();
        let (a, b) = loop {
            // 10.64.0.0–10.254.255.0: clear of the low 10.x nets hosts and containers
            // tend to use; checked against the routes besides.
            let a = rand::random_range(64..=254u8);
            let b = rand::random_range(0..=127u8) * 2;
            let ours = (u32::from(Ipv4Addr::new(10, a, b, 0)), 23);
            if !used.iter().any(|p| overlaps(*p, ours)) {
                break (a, b);
            }
        };
        // The state file is the id's reservation: made new, under the lock.
        let id = loop {
            let id = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
            match std::fs::OpenOptions::new().write(true).create_new(true).open(Path::new(STATE_DIR).join(&id)) {
                Ok(mut f) => {
                    std::io::Write::write_all(&mut f, std::process::id().to_string().as_bytes())?;
                    break id;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        };
        let net = Net { id, a, b, n, cut: Mutex::new(vec![false; n]) };
        // From here on, a failure drops `net`, which removes what was made.
        let bridge = net.bridge();
        // A fixed MAC: a bridge otherwise takes its ports' lowest, which changes as
        // ports come and go, and the namespaces' static neighbour entries name it.
        ip(&["link", "add", &bridge, "address", &net.bridge_mac(), "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}/24", net.host_ip()), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        drop(lock);
        for i in 0..n {
            let ns = net.ns_name(i);
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // The bridge link: the peer is made inside the namespace, so its name
            // (veth0) never collides with another net's.
            let host_end = net.host_link(i);
            ip(&["link", "add", &host_end, "type", "veth", "peer", "name", "veth0", "address", &net.mac(i), "netns", &ns])?;
            ip(&["link", "set", &host_end, "master", &bridge])?;
            ip(&["link", "set", &host_end, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", net.ip(i)), "dev", "veth0"])?;
            ip(&["-n", &ns, "link", "set", "veth0", "up"])?;
            // The admin link.
            let admin_end = format!("oa{}{i}", net.id);
            ip(&["link", "add", &admin_end, "type", "veth", "peer", "name", "adm0", "netns", &ns])?;
            ip(&["addr", "add", &format!("{}/30", net.admin_host_ip(i)), "dev", &admin_end])?;
            ip(&["link", "set", &admin_end, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/30", net.admin_ip(i)), "dev", "adm0"])?;
            ip(&["-n", &ns, "link", "set", "adm0", "up"])?;
        }
        // Static neighbour entries on the bridge's subnet, both ways and between the
        // namespaces: no ARP, so a cut is pure loss. With ARP, resolution fails during
        // a cut and the kernel answers the sockets waiting on it "No route to host" —
        // even a connection made just after heal, while a resolution begun during the
        // cut is still failing. Permanent entries survive the carrier loss of a cut.
        for i in 0..n {
            ip(&["neigh", "replace", &net.ip(i).to_string(), "lladdr", &net.mac(i), "dev", &bridge, "nud", "permanent"])?;
            let ns = net.ns_name(i);
            ip(&[
                "-n",
                &ns,
                "neigh",
                "replace",
                &net.host_ip().to_string(),
                "lladdr",
                &net.bridge_mac(),
                "dev",
                "veth0",
                "nud",
                "permanent",
            ])?;
            for j in (0..n).filter(|j| *j != i) {
                ip(&["-n", &ns, "neigh", "replace", &net.ip(j).to_string(), "lladdr", &net.mac(j), "dev", "veth0", "nud", "permanent"])?;
            }
        }
        for i in 0..n {
            net.wait_forwarding(i);
        }
        Ok(net)
    }

    pub fn len(&self) -> usize {
        self.n
    }

    /// The bridge's address in the root namespace: bind PostgreSQL, redis-servers and
    /// the sandbox's HTTP servers here (`PgServer::start(net.host_ip())`,
    /// `WorldOptions { bind: Some(net.host_ip()), .. }`).
    pub fn host_ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, self.a, self.b, 1))
    }

    /// Namespace `i`'s name, for `ip netns exec`.
    pub fn ns_name(&self, i: usize) -> String {
        assert!(i < self.n, "instance {i} of a net of {}", self.n);
        format!("orch-{}-{i}", self.id)
    }

    /// Instance `i`'s address on the bridge: what PostgreSQL and the services see as
    /// its source, and where the other instances reach it. Cut by [`cut`](Self::cut).
    pub fn ip(&self, i: usize) -> IpAddr {
        assert!(i < self.n, "instance {i} of a net of {}", self.n);
        IpAddr::V4(Ipv4Addr::new(10, self.a, self.b, 10 + i as u8))
    }

    /// Instance `i`'s address on its admin link, reachable from the root namespace
    /// (the test) only, and never cut: where the test talks to the instance's API.
    pub fn admin_ip(&self, i: usize) -> IpAddr {
        assert!(i < self.n, "instance {i} of a net of {}", self.n);
        IpAddr::V4(Ipv4Addr::new(10, self.a, self.b + 1, 4 * i as u8 + 2))
    }

    fn admin_host_ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, self.a, self.b + 1, 4 * i as u8 + 1))
    }

    /// Locally administered MACs from the net's id: `02:6f:ID:i` for namespace `i`'s
    /// veth0, `02:6f:ID:ff` for the bridge.
    fn mac(&self, i: usize) -> String {
        format!("02:6f:{}:{}:{}:{:02x}", &self.id[0..2], &self.id[2..4], &self.id[4..6], i)
    }

    fn bridge_mac(&self) -> String {
        self.mac(0xff)
    }

    fn bridge(&self) -> String {
        format!("ob{}", self.id)
    }

    fn host_link(&self, i: usize) -> String {
        format!("oh{}{i}", self.id)
    }

    /// Partitions instance `i` from everything on the bridge, both ways: the bridge
    /// port of its veth goes down, so every frame to or from it is dropped (no RST, no
    /// ICMP — packets vanish, as in a real partition). Established TCP connections
    /// are not closed: they stop delivering and retransmit, and resume after
    /// [`heal`](Self::heal) unless a timeout (TCP's, keepalive, the client's) ended
    /// them first. New connections time out (the neighbours are static: no ARP to
    /// fail, so no quick "No route to host"). The admin link stays up.
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.host_link(i), "down"]).unwrap_or_else(|e| panic!("cut({i}): {e}"));
        self.cut.lock().unwrap()[i] = true;
    }

    /// Undoes [`cut`](Self::cut). Returns once the link forwards again; a connection
    /// mid-retransmission delivers at its next retry (TCP's backoff: up to about as
    /// long again as the cut lasted).
    pub fn heal(&self, i: usize) {
        ip(&["link", "set", &self.host_link(i), "up"]).unwrap_or_else(|e| panic!("heal({i}): {e}"));
        self.wait_forwarding(i);
        self.cut.lock().unwrap()[i] = false;
    }

    /// Waits (bounded) until instance `i`'s bridge link carries frames: both ends
    /// have carrier and the bridge port forwards. `ip link set up` returns before
    /// that — carrier changes reach the bridge through the kernel's linkwatch, which
    /// may take a second — and a SYN sent meanwhile is dropped and only retried a
    /// second later.
    fn wait_forwarding(&self, i: usize) {
        let link = self.host_link(i);
        let ns = self.ns_name(i);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let host_up = std::fs::read_to_string(format!("/sys/class/net/{link}/operstate")).is_ok_and(|s| s.trim() == "up");
            // 3: BR_STATE_FORWARDING.
            let forwarding = std::fs::read_to_string(format!("/sys/class/net/{link}/brport/state")).is_ok_and(|s| s.trim() == "3");
            let peer_up = ip_output(&["-n", &ns, "-o", "link", "show", "veth0"]).contains("state UP");
            if host_up && forwarding && peer_up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{link} did not come up within 10 s (operstate up {host_up}, forwarding {forwarding}, peer up {peer_up})"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn is_cut(&self, i: usize) -> bool {
        self.cut.lock().unwrap()[i]
    }

    /// `ip netns exec NS program`: a command run inside namespace `i`. The child's pid
    /// is the program's own (`ip` execs it), so signals reach the program.
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec"]).arg(self.ns_name(i)).arg(program);
        cmd
    }

    /// [`command`](Self::command) as a tokio command.
    pub fn tokio_command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        tokio::process::Command::from(self.command(i, program))
    }

    /// Runs `f` on a thread that has entered namespace `i`: sockets it creates belong
    /// to that namespace for good, and may be used from any thread afterwards.
    pub fn run_in<T: Send + 'static>(&self, i: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = PathBuf::from("/run/netns").join(self.ns_name(i));
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
            // SAFETY: setns on a descriptor we own; CLONE_NEWNET moves only this thread.
            let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into {}: {}", path.display(), io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// A TCP connection made from inside namespace `i`.
    pub fn connect(&self, i: usize, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        self.run_in(i, move || TcpStream::connect_timeout(&addr, timeout))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        remove_all(&self.id);
    }
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net").field("id", &self.id).field("host_ip", &self.host_ip()).field("n", &self.n).finish()
    }
}
