//! A private RabbitMQ node for the tests that cannot share the node on
//! 5672 (they stop it, or give it a TLS listener): its own node name, AMQP
//! and distribution ports, Erlang cookie (in its own HOME), data and log
//! directories, no plugins and no configuration from /etc/rabbitmq; stopped
//! on drop, so also when a test fails. With [`PrivateBrokerOptions::tls`]
//! it also listens for AMQP over TLS with certificates made for it by
//! openssl ([`Certs`]): a test CA, a server certificate for `localhost` and
//! 127.0.0.1, and a client certificate, which the node requires.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use super::{free_port, kill, temp_dir, wait_until, PROTOCOL_HEADER};

pub const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

fn alive(pid: u32) -> bool {
    // A zombie has no /proc/PID/exe target any more; `kill -0` would say alive.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Test certificates, made by openssl in a folder of their own (EC P-256,
/// valid two days): `ca.pem` signs `server.pem` (for `localhost` and
/// 127.0.0.1) and `client.pem`; `other-ca.pem` is a CA that signed
/// neither, for the tests of a failed verification.
pub struct Certs {
    pub dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    pub fn generate(dir: &Path) -> Certs {
        std::fs::create_dir_all(dir).unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let (key, pem, subj) = (
                format!("{ca}.key"),
                format!("{ca}.pem"),
                format!("/CN=amqptrace test {ca}"),
            );
            let mut args = vec![
                "req", "-x509", "-days", "2", "-subj", &subj, "-keyout", &key, "-out", &pem,
            ];
            args.extend(ec);
            args.extend([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl(dir, &args);
        }
        let leaves = [
            (
                "server",
                "localhost",
                "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "amqptrace-test-client",
                "extendedKeyUsage=clientAuth\n",
            ),
        ];
        for (name, cn, ext) in leaves {
            let (key, csr, pem, extfile) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            std::fs::write(
                dir.join(&extfile),
                format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}"),
            )
            .unwrap();
            let subj = format!("/CN={cn}");
            let mut args = vec!["req", "-new", "-subj", &subj, "-keyout", &key, "-out", &csr];
            args.extend(ec);
            openssl(dir, &args);
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &extfile,
                    "-out",
                    &pem,
                ],
            );
        }
        Certs {
            dir: dir.to_path_buf(),
        }
    }

    /// A file of this folder (`ca.pem`, `server.key`, …).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// [`Certs::path`] as a string, for command lines and URLs.
    pub fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// What a [`PrivateBroker`] is started with.
pub struct PrivateBrokerOptions<'a> {
    /// In the node name and cookie: `amqptrace-NAME-PID@localhost`.
    pub name: &'a str,
    /// Also a TLS listener, requiring a client certificate.
    pub tls: bool,
    /// The default user and its password (created at first boot).
    pub user: &'a str,
    pub password: &'a str,
}

impl Default for PrivateBrokerOptions<'_> {
    fn default() -> Self {
        PrivateBrokerOptions {
            name: "faults",
            tls: false,
            user: "guest",
            password: "guest",
        }
    }
}

/// A private RabbitMQ node (see the module). Stopped on drop.
pub struct PrivateBroker {
    dir: tempfile::TempDir,
    /// The plain AMQP port.
    pub port: u16,
    /// The TLS port, with [`PrivateBrokerOptions::tls`].
    pub tls_port: Option<u16>,
    /// The certificates of the TLS listener and its clients.
    pub certs: Option<Certs>,
    env: Vec<(String, String)>,
    /// Client addresses of the readiness probes (direct connections, not the proxy's).
    pub probes: Mutex<HashSet<SocketAddr>>,
}

impl PrivateBroker {
    /// A plain node with guest/guest.
    pub fn start() -> PrivateBroker {
        PrivateBroker::start_with(PrivateBrokerOptions::default())
    }

    pub fn start_with(opts: PrivateBrokerOptions<'_>) -> PrivateBroker {
        assert!(
            Path::new(RABBITMQ_SERVER).exists(),
            "{RABBITMQ_SERVER} missing: a private node needs a RabbitMQ installation \
             (apt-get install rabbitmq-server)"
        );
        let dir = temp_dir();
        let d = dir.path();
        for sub in ["home", "mnesia", "log"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(d.join("env.conf"), "").unwrap();
        // A client that sends nothing is closed after 2 s instead of 10.
        let mut conf = format!(
            "handshake_timeout = 2000\nlog.console = false\nlog.file.level = warning\n\
             default_user = {}\ndefault_pass = {}\n",
            opts.user, opts.password
        );
        let (tls_port, certs) = if opts.tls {
            let certs = Certs::generate(&d.join("certs"));
            let port = free_port();
            conf.push_str(&format!(
                "listeners.ssl.default = 127.0.0.1:{port}\n\
                 ssl_options.cacertfile = {}\nssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\nssl_options.verify = verify_peer\n\
                 ssl_options.fail_if_no_peer_cert = true\n\
                 ssl_options.versions.1 = tlsv1.3\nssl_options.versions.2 = tlsv1.2\n",
                certs.arg("ca.pem"),
                certs.arg("server.pem"),
                certs.arg("server.key"),
            ));
            (Some(port), Some(certs))
        } else {
            (None, None)
        };
        std::fs::write(d.join("rabbitmq.conf"), conf).unwrap();
        let cookie = d.join("home/.erlang.cookie");
        let cookie_text = format!("amqptrace{}{}", opts.name, std::process::id());
        std::fs::write(&cookie, cookie_text).unwrap();
        let chmod = Command::new("chmod").arg("400").arg(&cookie).status();
        assert!(chmod.is_ok_and(|s| s.success()));
        let (port, dist) = (free_port(), free_port());
        let p = |s: &str| d.join(s).display().to_string();
        let env = vec![
            ("HOME".into(), p("home")),
            ("RABBITMQ_CONF_ENV_FILE".into(), p("env.conf")),
            (
                "RABBITMQ_NODENAME".into(),
                format!("amqptrace-{}-{}@localhost", opts.name, std::process::id()),
            ),
            ("RABBITMQ_NODE_IP_ADDRESS".into(), "127.0.0.1".into()),
            ("RABBITMQ_NODE_PORT".into(), port.to_string()),
            ("RABBITMQ_DIST_PORT".into(), dist.to_string()),
            ("RABBITMQ_CONFIG_FILE".into(), p("rabbitmq.conf")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE".into(), p("enabled_plugins")),
            ("RABBITMQ_MNESIA_BASE".into(), p("mnesia")),
            ("RABBITMQ_LOG_BASE".into(), p("log")),
            ("RABBITMQ_PID_FILE".into(), p("pid")),
            ("ERL_EPMD_ADDRESS".into(), "127.0.0.1".into()),
            (
                "ERL_FLAGS".into(),
                "-kernel inet_dist_use_interface {127,0,0,1}".into(),
            ),
        ];
        let broker = PrivateBroker {
            dir,
            port,
            tls_port,
            certs,
            env,
            probes: Mutex::default(),
        };
        broker.boot();
        broker
    }

    /// The plain listener's `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Starts the node (detached) and waits until it answers the AMQP header
    /// (and, with TLS, accepts connections on its TLS port).
    pub fn boot(&self) {
        let _ = std::fs::remove_file(self.dir.path().join("pid"));
        let status = Command::new(RABBITMQ_SERVER)
            .arg("-detached")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("start rabbitmq-server");
        assert!(status.success(), "rabbitmq-server -detached: {status}");
        let up = wait_until(Duration::from_secs(90), || self.answers());
        assert!(up, "private RabbitMQ did not start: {}", self.log_tail());
        if let Some(port) = self.tls_port {
            let up = wait_until(Duration::from_secs(30), || {
                TcpStream::connect(("127.0.0.1", port)).is_ok_and(|s| {
                    if let Ok(a) = s.local_addr() {
                        self.probes.lock().unwrap().insert(a);
                    }
                    true
                })
            });
            assert!(up, "no TLS listener on {port}: {}", self.log_tail());
        }
    }

    /// The broker sends connection.start (a method frame) for a protocol header.
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(self.addr()) else {
            return false;
        };
        if let Ok(a) = s.local_addr() {
            self.probes.lock().unwrap().insert(a);
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut b = [0u8; 1];
        s.write_all(PROTOCOL_HEADER).is_ok() && s.read(&mut b).is_ok_and(|n| n == 1) && b[0] == 1
    }

    /// Stops the node gracefully (SIGTERM: the broker closes every client
    /// with connection.close 320) and waits until it is gone.
    pub fn stop(&self) {
        let Some(pid) = self.pid() else { return };
        kill("-TERM", pid);
        if !wait_until(Duration::from_secs(30), || !alive(pid)) {
            kill("-KILL", pid);
            wait_until(Duration::from_secs(5), || !alive(pid));
        }
    }

    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.path().join("log")) {
            for e in rd.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                out.push_str(&format!("--- {}\n", e.path().display()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
    }
}
