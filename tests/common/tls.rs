//! TLS material, and throwaway servers configured for TLS or for passwords
//! (`tests/tls.rs`, `tests/secrets.rs`). Built on `throwaway.rs`: the servers are
//! started, stopped and cleaned up by its guards; this module only writes their
//! certificates and settings.
//!
//! Certificates come from `/usr/bin/openssl` (Debian: `openssl`). A missing openssl
//! fails the test with the reason; it never passes silently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlx::{Connection, PgConnection};

use super::throwaway::{chown_to, free_port, fresh_dir, run, ThrowawayPostgres, ThrowawayRabbit};

const OPENSSL: &str = "/usr/bin/openssl";

/// A test CA with a server certificate and a client certificate, in a directory of
/// its own (removed on drop).
///
/// The server certificate names the IP address 127.0.0.1 and nothing else: a client
/// that checks the name must have connected to `127.0.0.1`, and one that connects to
/// `localhost` fails `verify-full` (which is how the tests tell verify-full from
/// verify-ca). Keys are ECDSA P-256 in PKCS#8 PEM.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn generate() -> Pki {
        assert!(
            Path::new(OPENSSL).is_file(),
            "TLS tests need {OPENSSL} to make their certificates; it is missing: install it (Debian: apt-get install openssl)"
        );
        let dir = fresh_dir("pki");
        let at = |f: &str| dir.join(f);
        let openssl = |args: &[&str], what: &str| {
            let mut c = Command::new(OPENSSL);
            c.current_dir(&dir).args(args);
            run(c, what);
        };
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let ca_args = [
            &["req", "-x509", "-new", "-nodes"][..],
            &key,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=sagaflow test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat();
        openssl(&ca_args, "openssl: the test CA");
        for (name, cn, ext) in [
            (
                "server",
                "/CN=127.0.0.1",
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "/CN=sagaflow-test-client",
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
            ),
        ] {
            std::fs::write(at(&format!("{name}.ext")), ext).unwrap();
            let (k, csr, pem, extfile) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            let req = [
                &["req", "-new", "-nodes"][..],
                &key,
                &["-keyout", &k, "-out", &csr, "-subj", cn],
            ]
            .concat();
            openssl(&req, &format!("openssl: the {name} key"));
            openssl(
                &[
                    "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key",
                    "-CAcreateserial", "-days", "2", "-out", &pem, "-extfile", &extfile,
                ],
                &format!("openssl: the {name} certificate"),
            );
        }
        Pki {
            ca: at("ca.pem"),
            server_cert: at("server.pem"),
            server_key: at("server.key"),
            client_cert: at("client.pem"),
            client_key: at("client.key"),
            dir,
        }
    }

    /// Copies the CA, the server certificate and its key into `dir`, owned by `user`
    /// (the server's own account), the key readable by it alone. Returns
    /// (ca, certificate, key).
    pub fn install_server(&self, dir: &Path, user: &str) -> (PathBuf, PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).unwrap();
        let copy = |from: &Path, name: &str| {
            let to = dir.join(name);
            std::fs::copy(from, &to).unwrap();
            to
        };
        let files = (
            copy(&self.ca, "ca.pem"),
            copy(&self.server_cert, "server.pem"),
            copy(&self.server_key, "server.key"),
        );
        std::fs::set_permissions(&files.2, std::fs::Permissions::from_mode(0o600)).unwrap();
        chown_to(dir, user);
        files
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Rewrites the server's `pg_hba.conf` to `hba`, turns TLS on with `pki`'s server
/// certificate when given, and reloads. Goes through a plain connection as the
/// trusted `postgres` user, so call it on a server fresh from
/// `ThrowawayPostgres::start`; waits until `ready` holds (the reload is asynchronous).
pub async fn configure_postgres<F, Fut>(
    pg: &ThrowawayPostgres,
    hba: &str,
    pki: Option<&Pki>,
    ready: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut conn = PgConnection::connect(&format!("{}?sslmode=disable", pg.url("postgres")))
        .await
        .expect("a plain connection to the fresh throwaway postgres");
    let setting = |name: &'static str| format!("SELECT current_setting('{name}')");
    let data: String = sqlx::query_scalar(&setting("data_directory"))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let hba_file: String = sqlx::query_scalar(&setting("hba_file"))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    if let Some(pki) = pki {
        let (_, cert, key) = pki.install_server(&Path::new(&data).join("tls"), "postgres");
        for sql in [
            format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert.display()),
            format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
            "ALTER SYSTEM SET ssl = on".to_string(),
        ] {
            sqlx::query(&sql).execute(&mut conn).await.unwrap();
        }
    }
    // Writing the file in place keeps its owner (the server's account).
    std::fs::write(&hba_file, hba).unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    let mut ready = ready;
    let reloaded = super::wait_until(Duration::from_secs(30), || {
        let probe = ready();
        async move {
            if probe.await {
                Ok(())
            } else {
                Err(())
            }
        }
    })
    .await;
    if reloaded.is_err() {
        panic!(
            "postgres did not reload its TLS and pg_hba settings within 30 s:\n{}",
            pg.log_tail()
        );
    }
}

/// A throwaway RabbitMQ node with a TLS listener on `tls_port` that requires a
/// client certificate signed by `pki`'s CA (`ssl_options.verify = verify_peer`,
/// `fail_if_no_peer_cert = true`). Its plain listener (`rabbit.port`) stays for the
/// harness's start-up check. Blocking: call it inside `block_in_place`.
pub struct TlsRabbit {
    pub rabbit: ThrowawayRabbit,
    pub tls_port: u16,
    files: PathBuf,
}

impl TlsRabbit {
    pub fn start(pki: &Pki) -> TlsRabbit {
        let files = fresh_dir("rmq-tls");
        let (ca, cert, key) = pki.install_server(&files, "rabbitmq");
        let tls_port = free_port();
        let conf = format!(
            "listeners.ssl.default = 127.0.0.1:{tls_port}\n\
             ssl_options.cacertfile = {}\n\
             ssl_options.certfile = {}\n\
             ssl_options.keyfile = {}\n\
             ssl_options.verify = verify_peer\n\
             ssl_options.fail_if_no_peer_cert = true\n",
            ca.display(),
            cert.display(),
            key.display()
        );
        let rabbit = ThrowawayRabbit::start_with(&conf);
        // The TLS listener opens with the plain one; wait for it all the same.
        let addr: std::net::SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            assert!(
                std::time::Instant::now() < until,
                "the throwaway node {} opened no TLS listener on {addr} within 60 s",
                rabbit.node
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        TlsRabbit {
            rabbit,
            tls_port,
            files,
        }
    }

    /// `amqps://guest:guest@127.0.0.1:<tls_port>/%2f` with the CA and the client
    /// certificate of `pki`.
    pub fn url(&self, pki: &Pki) -> String {
        format!(
            "amqps://guest:guest@127.0.0.1:{}/%2f?cacertfile={}&certfile={}&keyfile={}",
            self.tls_port,
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        )
    }
}

impl Drop for TlsRabbit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.files);
    }
}

/// `rabbitmqctl -n <node> <args>` (panics with its output when it fails).
pub fn rabbitmqctl(node: &str, args: &[&str]) -> String {
    let mut c = Command::new("/usr/sbin/rabbitmqctl");
    c.current_dir("/tmp").arg("-n").arg(node).args(args);
    run(c, &format!("rabbitmqctl -n {node} {}", args.join(" ")))
}
