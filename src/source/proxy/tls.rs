//! TLS on either side of the proxy, with rustls and its `ring` provider:
//! the client side towards a broker that only takes `amqps`
//! ([`UpstreamTls`]: the system's root store or a private CA, SNI from the
//! host name, an optional client certificate) and the server side for
//! clients that insist on TLS ([`ListenTls`]: a certificate and its key).
//! The tracer only ever sees the plaintext, so tracing is the same as on
//! plain TCP; the proxy forwards the plaintext it decrypted, unaltered.
//!
//! Owns certificate, key and CA loading, verification (never off unless
//! [`UpstreamTlsOptions::verify`] is false, which the caller must say on
//! every start), and the NSS key log of the proxy's own sessions
//! ([`KeyLogFile`]). Never prints a key, a secret or a line of a key file:
//! a PEM error is described by its kind only. Knows nothing of AMQP.
//!
//! The system's root store is read with rustls-native-certs (the
//! certificates the system trusts, `/etc/ssl/certs` on Debian, including a
//! private CA added with `update-ca-certificates`), as OpenSSL-based clients
//! such as pika read it: a worker that reached its broker directly reaches
//! it through the proxy, where a compiled-in Mozilla bundle (webpki-roots)
//! would not know a company's CA and would go stale with the binary.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::TcpStream;

use crate::url::TlsFiles;

/// How the proxy speaks TLS to the broker (`--upstream amqps://…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTlsOptions {
    /// The CAs to trust (`--upstream-ca`, `cacertfile=`) and the client
    /// certificate with its key (`--upstream-cert`/`--upstream-key`,
    /// `certfile=`/`keyfile=`).
    pub files: TlsFiles,
    /// The name to verify the broker's certificate against and send as SNI
    /// (`server_name_indication=NAME`); `None`: the upstream's host.
    pub server_name: Option<String>,
    /// Send no SNI (`server_name_indication=disable`); the certificate is
    /// still verified against the name.
    pub no_sni: bool,
    /// Verify the broker's certificate chain and name. `false` only when
    /// asked (`--upstream-insecure`, `verify=verify_none`).
    pub verify: bool,
}

impl UpstreamTlsOptions {
    /// Verification on, the system's roots, no client certificate.
    pub fn verified() -> UpstreamTlsOptions {
        UpstreamTlsOptions {
            verify: true,
            ..UpstreamTlsOptions::default()
        }
    }
}

/// Why a TLS side cannot be set up. Names the option and file; never
/// carries a byte of a certificate or key file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{option} {path}: {source}")]
    Read {
        option: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{option} {path}: {what}")]
    Pem {
        option: &'static str,
        path: String,
        what: &'static str,
    },
    #[error("{option} {path}: {source}")]
    Rejected {
        option: &'static str,
        path: String,
        #[source]
        source: rustls::Error,
    },
    #[error("--upstream-cert and --upstream-key go together (a client certificate needs its key)")]
    CertWithoutKey,
    #[error("'{0}' is not a host name or IP address a certificate can be verified against")]
    ServerName(String),
    #[error(
        "no trusted CA certificate in the system's root store ({0}); name one with --upstream-ca FILE"
    )]
    NoRoots(String),
    #[error("TLS settings refused: {0}")]
    Config(#[source] rustls::Error),
    #[error("--tls-keylog {path}: {source}")]
    KeyLog {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// A PEM error by its kind only: its `Display` can quote a line of the file.
fn pem_error(option: &'static str, path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    use rustls::pki_types::pem::Error as E;
    let path = path.display().to_string();
    let what = match e {
        E::Io(source) => {
            return TlsError::Read {
                option,
                path,
                source,
            }
        }
        E::NoItemsFound => "no PEM section of the expected kind in it",
        E::MissingSectionEnd { .. } => "a PEM section without its END line",
        E::IllegalSectionStart { .. } => "a malformed PEM BEGIN line",
        E::Base64Decode(_) => "a PEM section that is not valid base64",
        _ => "not a usable PEM file",
    };
    TlsError::Pem { option, path, what }
}

fn certificates(
    option: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(option, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(option, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            option,
            path: path.display().to_string(),
            what: "no CERTIFICATE section in it",
        });
    }
    Ok(certs)
}

fn private_key(option: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(option, path, e))
}

/// `build` given the certificate chain in `cert` and its private key in `key`
/// (PEM files, which the command-line `options` named, for the errors).
fn with_identity<C>(
    options: (&'static str, &'static str),
    cert: &Path,
    key: &Path,
    build: impl FnOnce(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) -> Result<C, rustls::Error>,
) -> Result<C, TlsError> {
    let chain = certificates(options.0, cert)?;
    let key_der = private_key(options.1, key)?;
    build(chain, key_der).map_err(|source| TlsError::Rejected {
        option: options.1,
        path: key.display().to_string(),
        source,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client side of the proxy's TLS to the broker.
pub struct UpstreamTls {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    verify: bool,
}

impl UpstreamTls {
    /// Loads what `opts` names, for a broker at `host` (its name or address,
    /// IPv6 without brackets); `keylog` receives the sessions' secrets.
    pub fn new(
        opts: &UpstreamTlsOptions,
        host: &str,
        keylog: Option<Arc<KeyLogFile>>,
    ) -> Result<UpstreamTls, TlsError> {
        let name = opts.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name)
            .map_err(|_| TlsError::ServerName(name.to_string()))?
            .to_owned();
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?;
        let builder = if opts.verify {
            builder.with_root_certificates(roots(opts.files.ca.as_deref())?)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoCertificateVerification(provider)))
        };
        let mut config = match (&opts.files.cert, &opts.files.key) {
            (Some(cert), Some(key)) => {
                let options = ("--upstream-cert", "--upstream-key");
                with_identity(options, cert, key, |chain, key_der| {
                    builder.with_client_auth_cert(chain, key_der)
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsError::CertWithoutKey),
        };
        config.enable_sni = !opts.no_sni;
        if let Some(k) = keylog {
            config.key_log = k;
        }
        Ok(UpstreamTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
            verify: opts.verify,
        })
    }

    /// Whether the broker's certificate is verified.
    pub fn verifies(&self) -> bool {
        self.verify
    }

    /// The TLS handshake over a connected socket.
    pub async fn connect(
        &self,
        tcp: TcpStream,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        self.connector.connect(self.server_name.clone(), tcp).await
    }
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

/// The CAs to trust: those of `ca_file`, or the system's root store.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certificates("--upstream-ca", path)? {
                store.add(cert).map_err(|source| TlsError::Rejected {
                    option: "--upstream-ca",
                    path: path.display().to_string(),
                    source,
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            // Unparsable system certificates are skipped, as OpenSSL skips them.
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = match found.errors.first() {
                    Some(e) => e.to_string(),
                    None => "none found".to_string(),
                };
                return Err(TlsError::NoRoots(why));
            }
        }
    }
    Ok(store)
}

/// The `ServerCertVerifier` methods that check a handshake signature: each
/// hands it to the rustls function of its TLS version, with the provider's
/// algorithms.
macro_rules! verify_signatures {
    ($($method:ident => $check:path),* $(,)?) => {
        $(
            fn $method(
                &self,
                message: &[u8],
                cert: &CertificateDer<'_>,
                dss: &DigitallySignedStruct,
            ) -> Result<HandshakeSignatureValid, rustls::Error> {
                $check(message, cert, dss, &self.0.signature_verification_algorithms)
            }
        )*
    };
}

/// `--upstream-insecure`: any certificate for any name is accepted (the
/// handshake's signatures are still checked, so the session is encrypted
/// to whoever holds the certificate's key — possibly not the broker).
#[derive(Debug)]
struct NoCertificateVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    // The handshake's signatures are checked as rustls checks them, for both versions.
    verify_signatures! {
        verify_tls12_signature => rustls::crypto::verify_tls12_signature,
        verify_tls13_signature => rustls::crypto::verify_tls13_signature,
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The server side for clients that speak TLS to the proxy (`--listen-tls`).
pub struct ListenTls {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl ListenTls {
    /// The proxy's identity: a certificate chain and its private key, PEM files.
    pub fn new(
        (cert, key): (&Path, &Path),
        keylog: Option<Arc<KeyLogFile>>,
    ) -> Result<Self, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth();
        let mut config = with_identity(("--cert", "--key"), cert, key, |chain, key_der| {
            builder.with_single_cert(chain, key_der)
        })?;
        if let Some(k) = keylog {
            config.key_log = k;
        }
        Ok(ListenTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The TLS handshake with a client that connected.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        self.acceptor.accept(tcp).await
    }
}

impl fmt::Debug for ListenTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenTls").finish_non_exhaustive()
    }
}

/// The secrets of the proxy's own TLS sessions, appended to a file in the
/// NSS key log format (`LABEL CLIENT_RANDOM SECRET`, hex) that Wireshark,
/// tshark and `amqptrace analyze --tls-keylog` read. Created owner-only
/// (0600); written nowhere else.
pub struct KeyLogFile {
    file: Mutex<File>,
}

impl KeyLogFile {
    /// Opens `path` for appending (created 0600 when missing).
    pub fn open(path: &Path) -> Result<KeyLogFile, TlsError> {
        let mut o = std::fs::OpenOptions::new();
        o.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let file = o.open(path).map_err(|source| TlsError::KeyLog {
            path: path.display().to_string(),
            source,
        })?;
        Ok(KeyLogFile {
            file: Mutex::new(file),
        })
    }
}

impl fmt::Debug for KeyLogFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyLogFile")
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl rustls::KeyLog for KeyLogFile {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let line = format!("{label} {} {}\n", hex(client_random), hex(secret));
        // A poisoned lock only means another session's write panicked; a
        // failed write loses that session's line, never the forwarding.
        let mut f = match self.file.lock() {
            Ok(f) => f,
            Err(p) => p.into_inner(),
        };
        let _ = f.write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_errors_name_the_option_and_never_quote_the_file() {
        let dir = std::env::temp_dir().join(format!("amqptrace-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("bad.key");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY----- s3cretline\nAAAA\n").unwrap();
        let cert = dir.join("none.pem");
        std::fs::write(&cert, "not pem at all s3cretline\n").unwrap();
        let e = ListenTls::new((&cert, &key), None).unwrap_err().to_string();
        assert!(e.starts_with("--cert "), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let e = private_key("--key", &key).unwrap_err().to_string();
        assert!(e.starts_with("--key ") && !e.contains("s3cret"), "{e}");
        let missing = dir.join("missing.pem");
        let e = certificates("--upstream-ca", &missing)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing.pem") && e.contains("No such file"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn client_certificate_needs_its_key_and_names_must_be_valid() {
        let opts = UpstreamTlsOptions {
            files: TlsFiles {
                cert: Some("c.pem".into()),
                ..TlsFiles::default()
            },
            ..UpstreamTlsOptions::verified()
        };
        let e = UpstreamTls::new(&opts, "broker", None).unwrap_err();
        assert!(matches!(e, TlsError::CertWithoutKey), "{e}");
        let e = UpstreamTls::new(&UpstreamTlsOptions::verified(), "bad name!", None).unwrap_err();
        assert!(matches!(e, TlsError::ServerName(_)), "{e}");
        // An IP address is a name a certificate can carry (no SNI is sent for it).
        let insecure = UpstreamTlsOptions::default();
        assert!(!UpstreamTls::new(&insecure, "::1", None).unwrap().verifies());
    }

    #[test]
    fn key_log_lines_are_nss_format() {
        let dir =
            std::env::temp_dir().join(format!("amqptrace-keylog-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys");
        let log = KeyLogFile::open(&path).unwrap();
        rustls::KeyLog::log(&log, "CLIENT_RANDOM", &[0, 0xab], &[1, 2, 0xff]);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "CLIENT_RANDOM 00ab 0102ff\n"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
