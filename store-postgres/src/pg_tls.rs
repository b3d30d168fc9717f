//! TLS to PostgreSQL with libpq's settings: `sslmode` (`disable`, `allow`, `prefer` — the
//! default —, `require`, `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file of trusted
//! roots, or `system` for the machine's), in the URL's query or the key=value string.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, checks no certificate itself
//! and refuses `sslrootcert`; so both settings are taken out of the URL here, the driver is told
//! whether TLS is wanted, and rustls (on ring) checks the server as libpq would:
//!
//! | sslmode | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` | when the server offers it | not checked (libpq's too), unless `sslrootcert` is given |
//! | `require` | always | not checked, unless `sslrootcert` is given (then as `verify-ca`, as libpq does) |
//! | `verify-ca` | always | signed by a root of `sslrootcert` |
//! | `verify-full` | always | signed by a root of `sslrootcert`, and issued for the host connected to |
//!
//! Without `sslrootcert`, the verifying modes read `~/.postgresql/root.crt`, libpq's default,
//! and are refused with a clear error when it is not there. `sslcert` and `sslkey` (PEM) present
//! a client certificate, for servers that authenticate by it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use taskledger_store::StoreError;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, StoreError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(StoreError::Config(format!(
                    "the PostgreSQL URL's sslmode {other:?} is not one of disable, allow, \
                     prefer, require, verify-ca, verify-full"
                )))
            }
        })
    }

    /// What tokio-postgres is told: whether TLS is attempted, and whether it is required.
    fn driver(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            // libpq's allow tries without TLS first; a server that insists gets TLS from prefer.
            SslMode::Allow | SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
        }
    }
}

/// Where trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    File(PathBuf),
    /// `sslrootcert=system`: the machine's trust store.
    System,
}

/// The URL's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<RootCerts>,
    /// `sslcert` and `sslkey`: the client's certificate chain and key (PEM), for servers that
    /// authenticate clients by certificate (`hostssl … cert` in pg_hba.conf).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Takes `sslmode` and `sslrootcert` out of a libpq URL (`postgres://…?sslmode=…`) or key=value
/// string (`host=… sslmode=…`); returns the string tokio-postgres is given (with the `sslmode` it
/// knows) and the settings.
pub fn split_tls(url: &str) -> Result<(String, TlsSettings), StoreError> {
    let mut mode = None;
    let mut root_cert = None;
    let (mut client_cert, mut client_key) = (None, None);
    let mut take = |key: &str, value: String| -> Result<bool, StoreError> {
        match key {
            "sslmode" => mode = Some(SslMode::parse(&value)?),
            "sslrootcert" => {
                root_cert = Some(if value == "system" {
                    RootCerts::System
                } else {
                    RootCerts::File(PathBuf::from(value))
                })
            }
            "sslcert" => client_cert = Some(PathBuf::from(value)),
            "sslkey" => client_key = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let rest = if is_url {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    let decoded = percent_decode(value).ok_or_else(|| {
                        StoreError::Config(format!(
                            "the PostgreSQL URL's {key} is not valid percent-encoding"
                        ))
                    })?;
                    if !take(key, decoded)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (token, key, value) in key_values(url)? {
            if !take(&key, value)? {
                kept.push(token);
            }
        }
        kept.join(" ")
    };
    let client_cert = match (client_cert, client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => {
            return Err(StoreError::Config(
                "the PostgreSQL URL names sslcert or sslkey without the other: a client \
                 certificate needs both"
                    .into(),
            ))
        }
    };
    let settings = TlsSettings {
        mode: mode.unwrap_or(SslMode::Prefer),
        root_cert,
        client_cert,
    };
    let separator = match (is_url, rest.contains('?')) {
        (false, _) => " ",
        (true, true) => "&",
        (true, false) => "?",
    };
    let driver = format!("{rest}{separator}sslmode={}", settings.mode.driver());
    Ok((driver, settings))
}

/// The tokens of a key=value string, each with its key and (unquoted) value.
fn key_values(text: &str) -> Result<Vec<(&str, String, String)>, StoreError> {
    let mut tokens = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let equals = rest.find('=').ok_or_else(|| {
            StoreError::Config(format!(
                "the PostgreSQL connection string has {:?} without a value",
                rest.split_whitespace().next().unwrap_or(rest)
            ))
        })?;
        let key = rest[..equals].trim().to_string();
        let mut value = String::new();
        let mut chars = rest[equals + 1..].trim_start().char_indices();
        let value_start = rest.len() - rest[equals + 1..].trim_start().len();
        let mut end = rest.len();
        let mut quoted = false;
        let mut first = true;
        while let Some((index, c)) = chars.next() {
            match c {
                '\'' if first => quoted = true,
                '\'' if quoted => {
                    end = value_start + index + 1;
                    quoted = false;
                    break;
                }
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                c if c.is_whitespace() && !quoted => {
                    end = value_start + index;
                    break;
                }
                c => value.push(c),
            }
            first = false;
        }
        if quoted {
            return Err(StoreError::Config(format!(
                "the PostgreSQL connection string's {key} has an unclosed quote"
            )));
        }
        tokens.push((&rest[..end], key, value));
        rest = rest[end..].trim_start();
    }
    Ok(tokens)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The connector for these settings (also for `disable`: the driver then never uses it).
///
/// Each connector carries its own crypto provider (ring): nothing is installed for the process.
pub fn connector(settings: &TlsSettings) -> Result<MakeRustlsConnect, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| StoreError::Config(format!("TLS: {error}")))?;
    let verifying = matches!(settings.mode, SslMode::VerifyCa | SslMode::VerifyFull);
    let root_cert = match &settings.root_cert {
        Some(root_cert) => Some(root_cert.clone()),
        None if verifying => match default_root_cert() {
            Some(path) => Some(RootCerts::File(path)),
            None => {
                return Err(StoreError::Config(format!(
                    "sslmode={} checks the server's certificate: name the roots it must be \
                     signed by with sslrootcert=FILE (PEM) or sslrootcert=system",
                    if settings.mode == SslMode::VerifyCa {
                        "verify-ca"
                    } else {
                        "verify-full"
                    }
                )))
            }
        },
        None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match root_cert {
        None => Arc::new(Unchecked {
            algorithms: provider.signature_verification_algorithms,
        }),
        Some(root_cert) => {
            let roots = Arc::new(load_roots(&root_cert)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|error| StoreError::Config(format!("TLS roots: {error}")))?;
            if settings.mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(AnyName { inner: webpki })
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &settings.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certificates("sslcert", cert)?;
            let private = PrivateKeyDer::from_pem_file(key).map_err(|error| {
                StoreError::Config(format!(
                    "sslkey {}: cannot read a private key from it: {error}",
                    key.display()
                ))
            })?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|error| {
                    StoreError::Config(format!(
                        "sslcert {} and sslkey {}: {error}",
                        cert.display(),
                        key.display()
                    ))
                })?
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// libpq's default root file, when it exists.
fn default_root_cert() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".postgresql").join("root.crt");
    path.is_file().then_some(path)
}

fn load_roots(root_cert: &RootCerts) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(StoreError::Config(
                    "sslrootcert=system: this machine's trust store holds no certificate".into(),
                ));
            }
        }
        RootCerts::File(path) => {
            for cert in read_certificates("sslrootcert", path)? {
                roots.add(cert).map_err(|error| {
                    StoreError::Config(format!(
                        "sslrootcert {}: a certificate is not usable as a root: {error}",
                        path.display()
                    ))
                })?;
            }
        }
    }
    Ok(roots)
}

/// The certificates of a PEM file named by URL setting `setting`: at least one.
fn read_certificates(
    setting: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| {
            StoreError::Config(format!(
                "{setting} {}: cannot read its certificates: {error}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(StoreError::Config(format!(
            "{setting} {}: holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// `prefer` and `require` without roots, as libpq: the session is encrypted and the server's
/// handshake signature checked against the certificate it presents, but not who signed it.
#[derive(Debug)]
struct Unchecked {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca` (and `require` with roots): the chain is checked, the host name is not.
#[derive(Debug)]
struct AnyName {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, TlsSettings) {
        split_tls(url).unwrap()
    }

    #[test]
    fn a_url_without_tls_settings_prefers_tls_as_libpq_does() {
        let (driver, settings) = split("postgres://u@h:5432/db");
        assert_eq!(driver, "postgres://u@h:5432/db?sslmode=prefer");
        assert_eq!(settings.mode, SslMode::Prefer);
        assert_eq!(settings.root_cert, None);
    }

    #[test]
    fn url_settings_are_taken_out_and_the_rest_kept_in_order() {
        let (driver, settings) = split(
            "postgres://u@a:1,b:2/db?target_session_attrs=read-write&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca%201.pem&connect_timeout=3&sslcert=/c.pem&sslkey=/k.pem",
        );
        assert_eq!(
            driver,
            "postgres://u@a:1,b:2/db?target_session_attrs=read-write&connect_timeout=3\
             &sslmode=require"
        );
        assert_eq!(settings.mode, SslMode::VerifyFull);
        assert_eq!(
            settings.root_cert,
            Some(RootCerts::File(PathBuf::from("/etc/ca 1.pem")))
        );
        assert_eq!(
            settings.client_cert,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
        );
        let (driver, settings) = split("postgresql://h/db?sslmode=disable");
        assert_eq!(driver, "postgresql://h/db?sslmode=disable");
        assert_eq!(settings.mode, SslMode::Disable);
        let (_, settings) = split("postgres://h/db?sslmode=require&sslrootcert=system");
        assert_eq!(settings.root_cert, Some(RootCerts::System));
    }

    #[test]
    fn key_value_settings_are_taken_out_quotes_and_all() {
        let (driver, settings) =
            split("host=db1 sslmode=verify-ca  sslrootcert='/my certs/ca.pem' dbname=ledger");
        assert_eq!(driver, "host=db1 dbname=ledger sslmode=require");
        assert_eq!(settings.mode, SslMode::VerifyCa);
        assert_eq!(
            settings.root_cert,
            Some(RootCerts::File(PathBuf::from("/my certs/ca.pem")))
        );
        let (driver, _) = split(r"host=db1 password='it\'s x' user=a");
        assert_eq!(driver, r"host=db1 password='it\'s x' user=a sslmode=prefer");
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        let error = split_tls("postgres://h/db?sslmode=verify").unwrap_err();
        assert!(error.to_string().contains("sslmode \"verify\""), "{error}");
        let error = split_tls("postgres://h/db?sslrootcert=%zz").unwrap_err();
        assert!(error.to_string().contains("sslrootcert"), "{error}");
        let error = split_tls("postgres://h/db?sslcert=/c.pem").unwrap_err();
        assert!(error.to_string().contains("needs both"), "{error}");
        let error = split_tls("host=h sslrootcert='/x").unwrap_err();
        assert!(error.to_string().contains("unclosed quote"), "{error}");
        let error = connector(&TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: Some(RootCerts::File("/nonexistent/ca.pem".into())),
            client_cert: None,
        })
        .err()
        .unwrap();
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    }
}
