//! Test certificates made with the `openssl` command line: a private CA with a server
//! certificate for 127.0.0.1 (trusted through `SSL_CERT_FILE`), and an unrelated
//! self-signed certificate that nothing trusts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct Certs {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    /// Signed by `ca`, valid for 127.0.0.1 and localhost.
    pub good_cert: PathBuf,
    pub good_key: PathBuf,
    /// Self-signed, not signed by `ca`.
    pub bad_cert: PathBuf,
    pub bad_key: PathBuf,
}

/// The process's certificates, made once. The first call also points `SSL_CERT_FILE`
/// at the CA, which is how the redis crate's rustls setup (rustls-native-certs) learns
/// which roots to trust; it replaces the platform's roots for this test process only.
pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let certs = make().expect("make test certificates with openssl");
        // Set once, before any TLS connection of this process reads it. Nothing else
        // in this test binary reads SSL_CERT_FILE.
        std::env::set_var("SSL_CERT_FILE", &certs.ca);
        certs
    })
}

fn make() -> Result<Certs, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let p = |name: &str| dir.path().join(name);
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

    openssl(
        dir.path(),
        &[&["req", "-x509"], &ec[..], &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=orchestrator test CA"]].concat(),
    )?;
    openssl(dir.path(), &[&["req"], &ec[..], &["-keyout", "good.key", "-out", "good.csr", "-subj", "/CN=127.0.0.1"]].concat())?;
    std::fs::write(p("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n").map_err(|e| e.to_string())?;
    openssl(
        dir.path(),
        &[
            "x509",
            "-req",
            "-in",
            "good.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "good.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    )?;
    openssl(
        dir.path(),
        &[
            &["req", "-x509"],
            &ec[..],
            &["-keyout", "bad.key", "-out", "bad.crt", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        ]
        .concat(),
    )?;

    Ok(Certs {
        ca: p("ca.crt"),
        good_cert: p("good.crt"),
        good_key: p("good.key"),
        bad_cert: p("bad.crt"),
        bad_key: p("bad.key"),
        _dir: dir,
    })
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out =
        Command::new("openssl").args(args).current_dir(dir).output().map_err(|e| format!("cannot run openssl (is it installed?): {e}"))?;
    if !out.status.success() {
        return Err(format!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}
