//! Self tests of the test support: PostgreSQL databases and private servers
//! (`support::pg`), network namespaces and partitions (`support::netns`), a world on a
//! bridge address, and `orchestrator serve` children (`support::serve`). The suites
//! for leader election and the PostgreSQL journal stand on these; each must prove the
//! failure it stages is real. Needs root (namespaces; postgres runs as `postgres`).

mod support;

use sqlx::{Connection, Row};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use support::netns::Net;
use support::pg::{fresh_database, PgServer, TestDb, LOOPBACK};
use support::serve::ServeSpec;
use support::world::{World, WorldOptions};

async fn select_one(url: &str) -> Result<i32, sqlx::Error> {
    let mut c = sqlx::PgConnection::connect(url).await?;
    let v: i32 = sqlx::query("SELECT 1").fetch_one(&mut c).await?.get(0);
    c.close().await?;
    Ok(v)
}

async fn db_exists(name: &str) -> bool {
    let mut c = sqlx::PgConnection::connect(&support::pg::admin_url()).await.unwrap();
    let n: i64 = sqlx::query("SELECT count(*) FROM pg_database WHERE datname = $1").bind(name).fetch_one(&mut c).await.unwrap().get(0);
    n == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_database_is_new_usable_and_dropped_with_its_guard() {
    let db = TestDb::create().await;
    assert!(db.url().starts_with("postgres://postgres@127.0.0.1:5432/orch_test_") || std::env::var("ORCH_TEST_PG").is_ok(), "{}", db.url());
    let mut c = sqlx::PgConnection::connect(db.url()).await.unwrap();
    assert_eq!(sqlx::query("SELECT 1").fetch_one(&mut c).await.unwrap().get::<i32, _>(0), 1);
    let tables: i64 = sqlx::query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetch_one(&mut c).await.unwrap().get(0);
    assert_eq!(tables, 0, "a new database is empty");
    sqlx::raw_sql("CREATE TABLE t (x int)").execute(&mut c).await.unwrap();
    // Another is another: nothing of the first is in it.
    let other = fresh_database().await;
    assert_ne!(other, db.url());
    let mut o = sqlx::PgConnection::connect(&other).await.unwrap();
    let tables: i64 = sqlx::query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetch_one(&mut o).await.unwrap().get(0);
    assert_eq!(tables, 0);
    o.close().await.unwrap();
    let other_name = other.rsplit('/').next().unwrap().to_string();
    // `fresh_database` leaves its database to the cleanup: do it here.
    drop(TestDb::adopt(&other_name));
    assert!(!db_exists(&other_name).await);

    // The guard drops its database although a connection is still open to it.
    let name = db.name().to_string();
    assert!(db_exists(&name).await);
    drop(db);
    assert!(!db_exists(&name).await, "dropped with its guard");
    assert!(c.ping().await.is_err(), "the open connection was ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_server_stops_starts_again_and_survives_a_kill() {
    let pg = tokio::task::spawn_blocking(|| PgServer::start(LOOPBACK)).await.unwrap();
    let url = pg.url("postgres");
    assert_eq!(select_one(&url).await.unwrap(), 1);
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)").execute(&mut c).await.unwrap();
    let db = pg.create_database("second").await;
    assert_eq!(select_one(&db).await.unwrap(), 1);
    let (port, addr) = (pg.port(), pg.addr());

    // stop: gone, refused, and the open connection is ended.
    let pg = std::sync::Arc::new(pg);
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.stop()).await.unwrap();
    assert!(pg.pid().is_none());
    assert_eq!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap_err().kind(), ErrorKind::ConnectionRefused);
    assert!(select_one(&url).await.is_err());
    assert!(c.ping().await.is_err());

    // start_again: same port, same data.
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.start_again()).await.unwrap();
    assert_eq!(pg.port(), port);
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let x: i32 = sqlx::query("SELECT x FROM kept").fetch_one(&mut c).await.unwrap().get(0);
    assert_eq!(x, 42);

    // kill (SIGKILL to postmaster and backends): stale lock files and crash recovery
    // do not stop the next start; the open connection is reset at once.
    let old_pid = pg.pid().unwrap();
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.kill()).await.unwrap();
    assert!(pg.data_dir().join("postmaster.pid").exists(), "a kill leaves the lock file behind");
    let t = Instant::now();
    assert!(c.ping().await.is_err());
    assert!(t.elapsed() < Duration::from_secs(5), "a killed server's connection fails fast");
    assert!(select_one(&url).await.is_err());
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.start_again()).await.unwrap();
    assert_ne!(pg.pid().unwrap(), old_pid);
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let x: i32 = sqlx::query("SELECT x FROM kept").fetch_one(&mut c).await.unwrap().get(0);
    assert_eq!(x, 42, "committed data survives a kill (fsync is off, but the OS kept the pages)");
    c.close().await.unwrap();

    // restart = stop + start_again.
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.restart()).await.unwrap();
    assert_eq!(select_one(&url).await.unwrap(), 1);

    // Drop kills it and removes its directory.
    let dir = pg.data_dir();
    let pid = pg.pid().unwrap();
    drop(std::sync::Arc::try_unwrap(pg).unwrap());
    assert!(!dir.exists());
    assert!(!running(pid as i32), "the postmaster is gone");
}

/// An echo server on `listener`, one thread per connection.
fn echo(listener: TcpListener) {
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 256];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn round_trip(s: &mut TcpStream, byte: u8) -> std::io::Result<u8> {
    s.write_all(&[byte])?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    Ok(b[0])
}

#[test]
fn a_cut_drops_new_and_established_connections_both_ways_and_heal_restores_them() {
    let net = Net::new(2);
    let listener = TcpListener::bind((net.host_ip(), 0)).unwrap();
    let host: SocketAddr = listener.local_addr().unwrap();
    echo(listener);
    // A listener inside namespace 0, on its bridge address: the other direction.
    let inside = net.run_in(0, {
        let ip = net.ip(0);
        move || TcpListener::bind((ip, 0)).unwrap()
    });
    let inside_addr = inside.local_addr().unwrap();
    echo(inside);

    let mut est = net.connect(0, host, Duration::from_secs(2)).expect("namespace 0 reaches the host bridge address");
    est.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    assert_eq!(round_trip(&mut est, b'a').unwrap(), b'a');
    assert!(TcpStream::connect_timeout(&inside_addr, Duration::from_secs(2)).is_ok(), "the host reaches namespace 0");
    // A namespace reaches nothing but what the net made: no default route, so the
    // route lookup fails and no packet leaves (a documentation address, RFC 5737).
    let outside = SocketAddr::from(([192, 0, 2, 1], 80));
    assert_eq!(net.connect(0, outside, Duration::from_secs(1)).unwrap_err().kind(), ErrorKind::NetworkUnreachable);

    net.cut(0);
    assert!(net.is_cut(0));
    let err = net.connect(0, host, Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "a new connection from the cut namespace times out (no refusal, no ICMP): {err:?}");
    let err = TcpStream::connect_timeout(&inside_addr, Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "nor can the host reach it: {err:?}");
    let err = round_trip(&mut est, b'b').unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "the established connection stops delivering: {err:?}");
    // Only instance 0 is cut.
    let mut other = net.connect(1, host, Duration::from_secs(2)).expect("namespace 1 still reaches the host");
    other.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(round_trip(&mut other, b'c').unwrap(), b'c');
    // The admin link stays up.
    let admin = net.run_in(0, {
        let ip = net.admin_ip(0);
        move || TcpListener::bind((ip, 0)).unwrap()
    });
    let admin_addr = admin.local_addr().unwrap();
    echo(admin);
    let mut a = TcpStream::connect_timeout(&admin_addr, Duration::from_secs(2)).expect("the admin address answers during a cut");
    a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(round_trip(&mut a, b'd').unwrap(), b'd');

    net.heal(0);
    assert!(!net.is_cut(0));
    let mut fresh = net.connect(0, host, Duration::from_secs(5)).expect("a new connection works after heal");
    fresh.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(round_trip(&mut fresh, b'e').unwrap(), b'e');
    // The established connection delivers again: first the byte sent during the cut
    // (TCP retransmitted it), then new ones.
    est.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut b = [0u8; 1];
    est.read_exact(&mut b).expect("the established connection resumes after heal");
    assert_eq!(b[0], b'b');
    assert_eq!(round_trip(&mut est, b'f').unwrap(), b'f');
    assert!(TcpStream::connect_timeout(&inside_addr, Duration::from_secs(2)).is_ok());

    // Drop removes the namespaces and the bridge (the connections first, as a test's
    // declaration order does: their closing is then not retransmitted into nothing).
    drop((est, fresh, other, a));
    let ns = net.ns_name(0);
    drop(net);
    let list = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&ns), "{ns} is gone");
    let id = &ns["orch-".len()..ns.len() - 2];
    let links = std::process::Command::new("ip").args(["-o", "link", "show"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&format!("oh{id}")) && !links.contains(&format!("ob{id}")), "its links are gone: {links}");
}

fn psql(net: &Net, i: usize, pg: &PgServer) -> std::process::Output {
    net.command(i, "psql")
        .args(["-X", "-At", "-h", &pg.listen().to_string(), "-p", &pg.port().to_string(), "-U", "postgres", "-d", "postgres"])
        .args(["-c", "SELECT 1"])
        .env("PGCONNECT_TIMEOUT", "2")
        .output()
        .expect("psql")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_server_on_the_bridge_is_reachable_from_a_namespace_until_cut() {
    let net = Net::new(1);
    let ip = net.host_ip();
    let pg = tokio::task::spawn_blocking(move || PgServer::start(ip)).await.unwrap();
    let out = psql(&net, 0, &pg);
    assert!(out.status.success(), "psql from the namespace: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    // It listens on the bridge address only.
    assert!(TcpStream::connect_timeout(&SocketAddr::new(LOOPBACK, pg.port()), Duration::from_secs(1)).is_err());

    net.cut(0);
    let out = psql(&net, 0, &pg);
    assert!(!out.status.success(), "psql from a cut namespace fails");
    // The root namespace still reaches it: the cut is the instance's, not the database's.
    assert_eq!(select_one(&pg.url("postgres")).await.unwrap(), 1);
    net.heal(0);
    let out = psql(&net, 0, &pg);
    assert!(out.status.success(), "after heal: {}", String::from_utf8_lossy(&out.stderr));
}

fn proc_state(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 1..].split_whitespace().next().unwrap_or("").to_string()))
}

/// Whether `pid` is a live process (a zombie awaiting tokio's reaper is not).
fn running(pid: i32) -> bool {
    proc_state(pid).is_some_and(|state| state != "Z" && state != "X")
}

fn redis_ping(net: &Net, i: usize, url: &str) -> bool {
    let addr: SocketAddr = url.trim_start_matches("redis://").parse().unwrap();
    let Ok(mut s) = net.connect(i, addr, Duration::from_secs(2)) else { return false };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_world_on_the_bridge_serves_a_namespaced_orchestrator() {
    let net = Net::new(2);
    let w = World::start_with(WorldOptions { bind: Some(net.host_ip()), ..Default::default() }).await;
    let host = net.host_ip().to_string();
    for key in ["SANDBOX_PRIMARY_URL", "SANDBOX_BACKUP_URL", "SANDBOX_SERVICE_URL", "SANDBOX_PLATFORM_URL"] {
        assert!(w.env[key].contains(&format!("//{host}:")), "{key}={} is on the bridge", w.env[key]);
    }
    assert!(redis_ping(&net, 0, &w.env["SANDBOX_PRIMARY_URL"]));
    assert!(redis_ping(&net, 1, &w.env["SANDBOX_BACKUP_URL"]));
    assert!(w.job_completes(Duration::from_secs(10)).await, "the service works against its Redis on the bridge");
    // The playbook written for the world names the bridge address.
    let pb = w.load(&w.playbook_file(&[]));
    assert_eq!(pb.service.base_url.host_str(), Some(host.as_str()), "the loaded playbook targets the bridge address");

    // serve inside namespace 0: up, answering on its admin address, also under a cut.
    // A file journal even under ORCH_TEST_DB=postgres: the shared server listens on
    // 127.0.0.1, which inside a namespace is the namespace's own loopback.
    let journal = w.dir.path().join("ns-journal.db");
    let spec = ServeSpec::new(&journal, &[&w.playbook_file(&[])]).env(&w.env).arg("--no-watch");
    let mut inst = spec.spawn_in_netns(&net, 0).await;
    assert_eq!(inst.addr.ip(), net.admin_ip(0));
    assert!(inst.peer_url().unwrap().contains(&net.ip(0).to_string()));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let r = client.get(format!("{}/healthz", inst.url())).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", inst.stderr());
    // Its peers reach it on the bridge: from namespace 1.
    let peer: SocketAddr = SocketAddr::new(net.ip(0), inst.addr.port());
    assert!(net.connect(1, peer, Duration::from_secs(2)).is_ok(), "namespace 1 reaches instance 0's API on the bridge");
    net.cut(0);
    assert!(net.connect(1, peer, Duration::from_secs(1)).is_err(), "not when instance 0 is cut");
    assert!(!redis_ping(&net, 0, &w.env["SANDBOX_PRIMARY_URL"]), "a cut instance does not reach Redis");
    let r = client.get(format!("{}/healthz", inst.url())).send().await.unwrap();
    assert_eq!(r.status(), 200, "the admin address answers during the cut");
    net.heal(0);
    assert!(redis_ping(&net, 0, &w.env["SANDBOX_PRIMARY_URL"]));

    // freeze/cont, then SIGTERM: a clean exit.
    inst.freeze();
    let frozen = client.get(format!("{}/healthz", inst.url())).timeout(Duration::from_millis(500)).send().await;
    let pid = inst.pid().unwrap() as i32;
    assert!(frozen.is_err(), "a frozen instance answers nothing: {frozen:?} (pid {pid}, state {:?})", proc_state(pid));
    inst.cont();
    assert_eq!(client.get(format!("{}/healthz", inst.url())).send().await.unwrap().status(), 200);
    let status = inst.stop_within(Duration::from_secs(20)).await.expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}: {}", inst.stderr());

    // A dropped instance is killed.
    let inst = spec.spawn_in_netns(&net, 1).await;
    let pid = inst.pid().unwrap() as i32;
    drop(inst);
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(pid) {
        assert!(Instant::now() < deadline, "a dropped instance is killed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_as_a_child_in_the_root_namespace() {
    let w = World::start().await;
    let mut inst = ServeSpec::new(w.journal_path(), &[&w.playbook_file(&[])]).env(&w.env).arg("--no-watch").spawn().await;
    assert!(inst.addr.ip().is_loopback());
    let r = reqwest::get(format!("{}/healthz", inst.url())).await.unwrap();
    assert_eq!(r.status(), 200, "{}", inst.stderr());
    inst.kill().await;
    assert!(reqwest::get(format!("{}/healthz", inst.url())).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespaced_serve_keeps_its_journal_on_a_private_server_across_the_bridge() {
    let net = Net::new(1);
    let ip = net.host_ip();
    let pg = tokio::task::spawn_blocking(move || PgServer::start(ip)).await.unwrap();
    let db = pg.create_database("journal").await;
    let w = World::start_with(WorldOptions { bind: Some(net.host_ip()), ..Default::default() }).await;
    let spec = ServeSpec::new(&db, &[&w.playbook_file(&[])]).env(&w.env).arg("--no-watch");
    let mut inst = spec.spawn_in_netns(&net, 0).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let r = client.get(format!("{}/healthz", inst.url())).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", inst.stderr());
    // The journal's schema is on the private server: the instance reached it from its
    // namespace, across the bridge.
    let mut c = sqlx::PgConnection::connect(&db).await.unwrap();
    let tables: i64 = sqlx::query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetch_one(&mut c).await.unwrap().get(0);
    assert!(tables > 0, "serve created its journal on {db}");
    c.close().await.unwrap();
    inst.stop().await;
}

/// A net, a private server and a database exist while their guards live and are gone
/// once dropped. Also the child of [`what_a_killed_test_leaves_is_reaped_by_the_next`]
/// (with `ORCH_HARNESS_LEAVE`): then it says where they are and waits to be killed,
/// so that no guard runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_net_a_server_and_a_database_are_removed_by_their_guards() {
    let net = Net::new(1);
    let pg = tokio::task::spawn_blocking(|| PgServer::start(LOOPBACK)).await.unwrap();
    let db = TestDb::create().await;
    let (ns, dir, pm, name) = (net.ns_name(0), pg.data_dir().parent().unwrap().to_path_buf(), pg.pid(), db.name().to_string());
    if std::env::var("ORCH_HARNESS_LEAVE").is_ok() {
        let left = serde_json::json!({ "ns": ns, "pg_dir": dir, "pg_pid": pm, "db": name });
        println!("LEFT {left}");
        tokio::time::sleep(Duration::from_secs(120)).await;
        return;
    }
    let netns_list =
        || String::from_utf8_lossy(&std::process::Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned();
    let pm = pm.expect("the server runs") as i32;
    assert!(netns_list().contains(&ns) && running(pm) && dir.exists() && db_exists(&name).await, "all three exist while held");
    drop(db);
    drop(pg);
    drop(net);
    assert!(!netns_list().contains(&ns), "the namespace is removed with its net");
    assert!(!running(pm) && !dir.exists(), "the server is stopped and its directory removed");
    assert!(!db_exists(&name).await, "the database is dropped with its guard");
}

/// Kills its child on drop, should the test fail before it does.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_killed_test_leaves_is_reaped_by_the_next() {
    use std::io::BufRead;
    let mut child = KillOnDrop(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["a_net_a_server_and_a_database_are_removed_by_their_guards", "--exact", "--nocapture", "--test-threads=1"])
            .env("ORCH_HARNESS_LEAVE", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        // libtest's `test NAME ... ` precedes it on the same line.
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).find_map(|l| l.split_once("LEFT ").map(|(_, j)| j.to_string()))
    });
    let line =
        tokio::time::timeout(Duration::from_secs(60), line).await.expect("the child reports within 60 s").unwrap().expect("LEFT line");
    let left: serde_json::Value = serde_json::from_str(&line).unwrap();
    let (ns, dir, pm, db) = (
        left["ns"].as_str().unwrap().to_string(),
        std::path::PathBuf::from(left["pg_dir"].as_str().unwrap()),
        left["pg_pid"].as_u64().unwrap() as i32,
        left["db"].as_str().unwrap().to_string(),
    );
    // SIGKILL to the test process alone: no Drop runs, and its postmaster (in its
    // process group, which nobody signals here) is orphaned.
    let _ = child.0.kill();
    let _ = child.0.wait();
    let netns_list =
        || String::from_utf8_lossy(&std::process::Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned();
    assert!(netns_list().contains(&ns), "the killed test left its namespace");
    assert!(running(pm) && dir.exists(), "and its server");
    assert!(db_exists(&db).await, "and its database");

    let net = Net::new(1);
    assert!(!netns_list().contains(&ns), "the next Net::new removed the namespace");
    let pg = tokio::task::spawn_blocking(|| PgServer::start(LOOPBACK)).await.unwrap();
    assert!(!running(pm) && !dir.exists(), "the next PgServer::start killed the server and removed its directory");
    let _db = TestDb::create().await;
    assert!(!db_exists(&db).await, "the next TestDb::create dropped the database");
    drop((net, pg));
}
