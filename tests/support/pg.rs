//! PostgreSQL for the integration tests: a fresh database on the shared local server
//! ([`fresh_database`], [`TestDb`]) for tests that only need somewhere to keep a
//! journal, and a private server ([`PgServer`]) for tests that stop, kill, restart or
//! partition the database itself.

use sqlx::Connection;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shared server's base URL when `ORCH_TEST_PG` is not set.
pub const DEFAULT_BASE: &str = "postgres://postgres@127.0.0.1:5432";

/// Every database this module creates is named `orch_test_<pid>_<random>`: the pid lets
/// a later run drop what a killed run (no Drop ran) left behind, and the prefix lets
/// `scripts/pg-test-cleanup.sh` find them all.
pub const DB_PREFIX: &str = "orch_test_";

/// The shared server's base URL: `ORCH_TEST_PG` (CI may point elsewhere), else
/// [`DEFAULT_BASE`]. A path in it (a database name) is ignored; a query string
/// (e.g. `?sslmode=disable`) is kept on every URL handed out.
pub fn base_url() -> url::Url {
    let raw = std::env::var("ORCH_TEST_PG").ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| DEFAULT_BASE.into());
    url::Url::parse(raw.trim()).unwrap_or_else(|e| panic!("ORCH_TEST_PG={raw:?} is not a URL: {e}"))
}

/// The shared server's `postgres` database, for administration.
pub fn admin_url() -> String {
    url_for("postgres")
}

fn url_for(db: &str) -> String {
    let mut u = base_url();
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// A new, empty database on the shared server; its URL. Nothing drops it when the test
/// ends: prefer [`TestDb`] (dropped with the guard). What is left is dropped by a later
/// [`TestDb::create`]/`fresh_database` once the creating process is gone (loopback
/// servers only), or by `scripts/pg-test-cleanup.sh`.
pub async fn fresh_database() -> String {
    let db = TestDb::create().await;
    let url = db.url().to_string();
    std::mem::forget(db);
    url
}

/// A database on the shared server that lives as long as this guard.
///
/// Dropping it drops the database synchronously, from a thread of its own with its
/// own runtime: Drop cannot `.await`, and blocking on the test's runtime from inside
/// it would deadlock a current-thread runtime. `DROP DATABASE .. WITH (FORCE)` ends
/// the connections still open to it (a pool in the test, an orchestrator child that
/// outlived it), so the drop does not wait for them.
pub struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let mut admin = admin_connection().await;
        reap_stale(&mut admin).await;
        let name = format!("{DB_PREFIX}{}_{}", std::process::id(), uuid::Uuid::new_v4().simple().to_string().get(..12).unwrap());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        let _ = admin.close().await;
        TestDb { url: url_for(&name), name }
    }

    /// Takes charge of an existing test database (e.g. one from [`fresh_database`]):
    /// dropped with the guard.
    pub fn adopt(name: &str) -> TestDb {
        assert!(name.starts_with(DB_PREFIX), "only test databases ({DB_PREFIX}*) are adopted, not {name:?}");
        TestDb { name: name.to_string(), url: url_for(name) }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://postgres@127.0.0.1:5432/orch_test_…` (on `ORCH_TEST_PG`'s server).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let dropper = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url()).await else { return };
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                    .execute(&mut admin)
                    .await;
                let _ = admin.close().await;
            })
        });
        let _ = dropper.join();
    }
}

async fn admin_connection() -> sqlx::PgConnection {
    let url = admin_url();
    // The shared server may still be starting on a fresh CI machine: retry briefly.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match sqlx::PgConnection::connect(&url).await {
            Ok(c) => return c,
            Err(e) if Instant::now() >= deadline => panic!("cannot reach the test PostgreSQL at {url} (set ORCH_TEST_PG): {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Drops the test databases whose creating process is gone. Only for a server on
/// loopback: there the pid in the name is one of this machine's; on a shared CI
/// server it could be another machine's live test.
async fn reap_stale(admin: &mut sqlx::PgConnection) {
    let loopback = match base_url().host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        // `postgres:` is not a special scheme to the url crate: its host is opaque, so
        // an IP address arrives here as text.
        Some(url::Host::Domain(d)) => d == "localhost" || d.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        None => true, // a Unix socket
    };
    if !loopback {
        return;
    }
    let sql = "SELECT datname::text FROM pg_database WHERE datname LIKE 'orch\\_test\\_%'";
    let names: Vec<(String,)> = match sqlx::query_as(sql).fetch_all(&mut *admin).await {
        Ok(names) => names,
        Err(e) => {
            eprintln!("listing stale test databases: {e}");
            return;
        }
    };
    for (name,) in names {
        // Exactly `<pid>_<12 hex>`: other helpers' databases share the prefix
        // (`pgdb.rs`: `orch_test_<16 hex>`) and are never taken for ours.
        let pid = name
            .strip_prefix(DB_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .filter(|(pid, tag)| {
                !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && tag.len() == 12 && tag.bytes().all(|b| b.is_ascii_hexdigit())
            })
            .and_then(|(pid, _)| pid.parse::<i32>().ok());
        if pid.is_some_and(|pid| !pid_alive(pid)) {
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut *admin).await {
                // Another test process may be dropping it at the same moment.
                eprintln!("dropping stale test database {name}: {e}");
            }
        }
    }
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence.
    pid > 0 && (unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// How long a private server may take to accept connections (crash recovery after a
/// kill included). Readiness is polled, so a fast start returns at once.
const START_DEADLINE: Duration = Duration::from_secs(30);
const STOP_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// A private PostgreSQL server: its own data directory (initdb'd into a temp dir owned
/// by the OS user `postgres`, trust auth, no fsync) and postmaster, on a free port of
/// `listen` only, e.g. a [`Net`](super::netns::Net)'s `host_ip()` so orchestrators in
/// network namespaces reach it. Postgres refuses to run as root, so initdb and the
/// postmaster run as `postgres` (setuid in the child; no `runuser` in between, so the
/// child's pid *is* the postmaster's).
///
/// All methods take `&self` so a server can be shared (e.g. behind an `Arc`). Dropping
/// it kills the server and removes its directory.
pub struct PgServer {
    listen: IpAddr,
    port: Mutex<u16>,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
    starts: Mutex<u32>,
}

/// The binaries: `ORCH_TEST_PG_BIN` (a directory), else the first directory that has
/// both `initdb` and `postgres`.
fn bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("ORCH_TEST_PG_BIN").map(PathBuf::from).into_iter().collect();
    dirs.push("/usr/local/bin".into());
    let mut versions: Vec<PathBuf> =
        std::fs::read_dir("/usr/lib/postgresql").map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect()).unwrap_or_default();
    versions.sort();
    dirs.extend(versions.into_iter().rev());
    dirs.push("/usr/bin".into());
    dirs.into_iter()
        .find(|d| d.join("initdb").exists() && d.join("postgres").exists())
        .map(|d| d.join(name))
        .unwrap_or_else(|| panic!("no PostgreSQL binaries found (set ORCH_TEST_PG_BIN to the directory holding initdb and postgres)"))
}

/// The private servers' temp dirs: `$TMPDIR/orch-pg-XXXX`, each with an `owner` file.
const DIR_PREFIX: &str = "orch-pg-";

/// Kills the private servers of test processes that are gone (SIGKILLed, so no Drop
/// ran, and not by their process group) and removes their directories. A postmaster
/// is only killed if its command line names that directory: the pid in a stale lock
/// file may belong to anyone by now.
fn reap_stale_servers() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in rd.flatten() {
        let dir = e.path();
        if !e.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let owner = std::fs::read_to_string(dir.join("owner")).ok().and_then(|s| s.trim().parse::<i32>().ok());
        // No owner file: a server being made right now, or not ours.
        if owner.is_none_or(pid_alive) {
            continue;
        }
        let pm = std::fs::read_to_string(dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
        if let Some(pm) = pm {
            let cmdline = std::fs::read(format!("/proc/{pm}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy()) {
                signal(pm, libc::SIGSTOP);
                let kids = children_of(pm);
                for k in &kids {
                    signal(*k, libc::SIGKILL);
                }
                signal(pm, libc::SIGKILL);
                wait_gone(&kids);
                wait_gone(&[pm]);
            }
            remove_stale_shmem(&dir.join("data/postmaster.pid"));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The uid and gid of the OS user `postgres`.
fn postgres_user() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam returns a pointer into static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "PgServer needs an OS user `postgres` (postgres refuses to run as root)");
    // SAFETY: non-null, points to a valid passwd record.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

fn chown(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn free_port(ip: IpAddr) -> u16 {
    loop {
        let port = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("no free port on {ip}: {e}")).local_addr().unwrap().port();
        // Never a default port: a developer's own PostgreSQL or Redis may live there.
        if port != 5432 && port != 6379 {
            return port;
        }
    }
}

impl PgServer {
    /// initdb, then start on a free port of `listen` and wait until it accepts
    /// connections. Panics (with the server log) if it cannot.
    pub fn start(listen: IpAddr) -> PgServer {
        let user = postgres_user();
        reap_stale_servers();
        let dir = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir().expect("temp dir");
        // Who owns it, for reap_stale_servers in a later run.
        std::fs::write(dir.path().join("owner"), std::process::id().to_string()).unwrap();
        // The temp dir is root's 0700: postgres must be able to enter it.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        chown(dir.path(), user);
        let sock = dir.path().join("sock");
        std::fs::create_dir(&sock).unwrap();
        chown(&sock, user);
        let log = dir.path().join("initdb.log");
        let out = std::fs::File::create(&log).unwrap();
        let status = Command::new(bin("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"])
            .uid(user.0)
            .gid(user.1)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .status()
            .expect("running initdb");
        assert!(status.success(), "initdb failed ({status}): {}", std::fs::read_to_string(&log).unwrap_or_default());
        // initdb's trust covers loopback only; instances in network namespaces come
        // from the bridge's subnet. `samenet` is every subnet the server's host is on;
        // who can connect at all is bounded by listen_addresses (one address).
        let hba = dir.path().join("data/pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        text.push_str("\nhost all all samenet trust\n");
        std::fs::write(&hba, text).unwrap();
        let server = PgServer { listen, port: Mutex::new(0), dir, child: Mutex::new(None), starts: Mutex::new(0) };
        // A free port can be taken by someone else between probing and binding it.
        let mut last = String::new();
        for _ in 0..5 {
            *server.port.lock().unwrap() = free_port(listen);
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("private PostgreSQL on {listen} did not start: {last}");
    }

    pub fn listen(&self) -> IpAddr {
        self.listen
    }

    pub fn port(&self) -> u16 {
        *self.port.lock().unwrap()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.listen, self.port())
    }

    /// `postgres://postgres@ADDR:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@{}/{db}", self.addr())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The current (or last) start's server log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The postmaster's pid, or None while stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(|c| c.id())
    }

    /// Creates a database (as the `postgres` superuser); its URL.
    pub async fn create_database(&self, name: &str) -> String {
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres")).await.expect("connecting to the private server");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await.expect("CREATE DATABASE");
        let _ = admin.close().await;
        self.url(name)
    }

    /// Fast shutdown (SIGINT: open sessions are ended, then a clean checkpoint), and
    /// wait until the postmaster has exited: afterwards connections are refused.
    /// Falls back to [`kill`](Self::kill) after 30 s. A no-op when stopped.
    pub fn stop(&self) {
        let mut guard = self.child.lock().unwrap();
        let Some(mut child) = guard.take() else { return };
        let kids = children_of(child.id() as i32);
        signal(child.id() as i32, libc::SIGINT);
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() >= deadline {
                kill_tree(&mut child);
                break;
            }
            std::thread::sleep(POLL);
        }
        wait_gone(&kids);
    }

    /// SIGKILL to the postmaster *and* its backends, the way a machine crash ends
    /// them: established connections are reset at once, not left to the backends
    /// noticing their postmaster's death. Waits until every one of them is gone, so a
    /// restart does not find the old shared memory still attached. A no-op when
    /// stopped.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            kill_tree(&mut child);
            // A crashed postgres leaves its System V segment to the next start; a test
            // server may have none (Drop), so remove it now. The lock file stays, as
            // after a real crash.
            remove_stale_shmem(&self.data_dir().join("postmaster.pid"));
        }
    }

    /// SIGSTOP to the postmaster and its backends: connections stay open (the kernel
    /// still completes handshakes) but nothing answers — a hung database. Undo with
    /// [`cont`](Self::cont).
    pub fn freeze(&self) {
        if let Some(c) = self.child.lock().unwrap().as_ref() {
            let pm = c.id() as i32;
            // The postmaster first, so it forks no backend we would miss.
            signal(pm, libc::SIGSTOP);
            for k in children_of(pm) {
                signal(k, libc::SIGSTOP);
            }
        }
    }

    /// SIGCONT: undo [`freeze`](Self::freeze).
    pub fn cont(&self) {
        if let Some(c) = self.child.lock().unwrap().as_ref() {
            let pm = c.id() as i32;
            for k in children_of(pm) {
                signal(k, libc::SIGCONT);
            }
            signal(pm, libc::SIGCONT);
        }
    }

    /// Starts the stopped (or killed) server again on the same data directory and
    /// port and waits until it accepts connections; the data survives (after a
    /// [`kill`](Self::kill), through crash recovery). A no-op when running.
    pub fn start_again(&self) {
        if self.pid().is_some() {
            return;
        }
        // The port is normally still free; someone may have taken it meanwhile, and a
        // listener bound in the moment of our exit may linger: retry until the deadline.
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => panic!("private PostgreSQL did not start again on {}: {e}", self.addr()),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// [`stop`](Self::stop), then [`start_again`](Self::start_again).
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("postgres-{}.log", *self.starts.lock().unwrap()))
    }

    fn spawn_and_wait(&self) -> Result<(), String> {
        let user = postgres_user();
        let data = self.data_dir();
        let sock = self.dir.path().join("sock");
        let port = self.port();
        // After a SIGKILL the lock files remain. The postmaster they name is known dead
        // (we reaped it), but its pid may since belong to another process of the user
        // postgres (the shared server's backends churn through pids), which postgres
        // would take for a live postmaster: remove them, and the old System V shared
        // memory segment they name (nothing is attached any more), which postgres
        // would otherwise have removed itself.
        remove_stale_shmem(&data.join("postmaster.pid"));
        let _ = std::fs::remove_file(data.join("postmaster.pid"));
        let _ = std::fs::remove_file(sock.join(format!(".s.PGSQL.{port}.lock")));
        let _ = std::fs::remove_file(sock.join(format!(".s.PGSQL.{port}")));
        *self.starts.lock().unwrap() += 1;
        let log = self.log_path();
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(bin("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&sock)
            .args(["-c", &format!("listen_addresses={}", self.listen)])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            // Enough for several orchestrators' pools plus the test's own.
            .args(["-c", "max_connections=200", "-c", "shared_buffers=16MB"])
            .uid(user.0)
            .gid(user.1)
            // In the test's process group (no process_group(0)): nextest ends a timed-out
            // test by its group, and the postmaster must go with it.
            .current_dir(self.dir.path())
            .env_remove("PGDATA")
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot run postgres: {e}"))?;
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let exited = self.child.lock().unwrap().as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child.lock().unwrap().take();
                return Err(format!("postgres exited during start ({status}): {}", tail(&self.log(), 8)));
            }
            // The log line alone is not enough (it is written just before the
            // listener accepts on every address), the port alone neither (it accepts
            // during crash recovery and refuses with "starting up").
            if self.log().contains("database system is ready to accept connections")
                && TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!("postgres did not accept connections within {START_DEADLINE:?}: {}", tail(&self.log(), 8)));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
        // TempDir's own drop removes the directory.
    }
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer").field("addr", &self.addr()).field("pid", &self.pid()).finish()
    }
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own child (or
    // its process group), not yet reaped, so it cannot have been reused.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The postmaster's children (backends, checkpointer, …). Each calls setsid(), so
/// they are not in the postmaster's process group: they are found by parent pid.
fn children_of(pm: i32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return vec![] };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|(state, ppid)| ppid == pm && state != 'Z'))
        .collect()
}

/// `(state, ppid)` from /proc/PID/stat.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

fn kill_tree(child: &mut Child) {
    let pm = child.id() as i32;
    // Stopped first, the postmaster forks nothing between listing its children and
    // their end; SIGKILL ends stopped processes too.
    signal(pm, libc::SIGSTOP);
    let kids = children_of(pm);
    for k in &kids {
        signal(*k, libc::SIGKILL);
    }
    signal(pm, libc::SIGKILL);
    let _ = child.wait();
    wait_gone(&kids);
}

/// Waits (bounded) until none of `pids` is a live process. Killed backends are not
/// our children, so init reaps them, not us; a zombie holds no shared memory and does
/// not count.
fn wait_gone(pids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| proc_stat(*p).is_some_and(|(state, _)| state != 'Z' && state != 'X')) && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
}

/// Removes the System V shared memory segment a dead postmaster's lock file names
/// (its 7th line: `key shmid`), once nothing is attached to it.
fn remove_stale_shmem(pid_file: &Path) {
    let Ok(text) = std::fs::read_to_string(pid_file) else { return };
    let Some(shmid) = text.lines().nth(6).and_then(|l| l.split_whitespace().nth(1)).and_then(|id| id.parse::<i32>().ok()) else {
        return;
    };
    // SAFETY: shmctl with IPC_STAT into a zeroed struct we own, then IPC_RMID.
    unsafe {
        let mut ds: libc::shmid_ds = std::mem::zeroed();
        if libc::shmctl(shmid, libc::IPC_STAT, &mut ds) == 0 && ds.shm_nattch == 0 {
            libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut());
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Loopback, for a private server only this process's tests reach.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
