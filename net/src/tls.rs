//! TLS for both ends: the server's identity (a self-signed certificate kept in the data
//! directory, or a PEM certificate and key given with `--cert`/`--key`), the
//! connect-token key, and rustls configs built with an explicit ring provider (two
//! providers in one process panic at runtime).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::rand::{SecureRandom, SystemRandom};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tickcast_shared::ALPN;
use tickcast_shared::token::{TOKEN_KEY_LEN, TokenKey};

use crate::NetError;

/// File name of the self-signed certificate (DER) in the data directory.
pub const CERT_FILE: &str = "cert.der";
/// File name of the certificate's private key (PKCS#8 DER) in the data directory.
pub const KEY_FILE: &str = "key.der";
/// File name of the connect-token key (32 raw bytes) in the data directory.
pub const TOKEN_KEY_FILE: &str = "token.key";

/// The ring provider every config here is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server's certificate and private key.
pub struct Identity {
    /// The certificate chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// SHA-256 of the leaf certificate: what clients pin.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.certs
            .first()
            .map(|cert| fingerprint(cert.as_ref()))
            .unwrap_or([0; 32])
    }
}

/// SHA-256 of a DER certificate.
pub fn fingerprint(cert_der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Lower-case hex of a fingerprint, as the server prints it and clients accept it.
pub fn fingerprint_hex(fingerprint: &[u8; 32]) -> String {
    tickcast_shared::hex::encode(fingerprint)
}

/// Parses a fingerprint from hex (colons allowed, case ignored).
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], NetError> {
    let digits: String = text.chars().filter(|c| *c != ':').collect();
    tickcast_shared::hex::decode_array(&digits).map_err(|_| {
        NetError::BadFile(format!(
            "'{text}' is not a SHA-256 fingerprint (64 hex digits)"
        ))
    })
}

/// Loads the self-signed identity from `data_dir`, creating it (and the directory) on
/// first run. The key file is written with mode 0600.
pub fn load_or_create_identity(data_dir: &Path) -> Result<Identity, NetError> {
    let cert_path = data_dir.join(CERT_FILE);
    let key_path = data_dir.join(KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        let cert = read(&cert_path)?;
        let key = read(&key_path)?;
        return Ok(Identity {
            certs: vec![CertificateDer::from(cert)],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        });
    }
    create_dir(data_dir)?;
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| NetError::Tls(format!("generating a self-signed certificate: {e}")))?;
    let cert = generated.cert.der().to_vec();
    let key = generated.signing_key.serialize_der();
    write_private(&key_path, &key)?;
    write_file(&cert_path, &cert)?;
    tracing::info!(path = %cert_path.display(), "created a self-signed certificate");
    Ok(Identity {
        certs: vec![CertificateDer::from(cert)],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
    })
}

/// Loads a certificate chain and its private key from PEM files (`--cert`, `--key`) and
/// checks that they belong together.
pub fn load_pem_identity(cert_file: &Path, key_file: &Path) -> Result<Identity, NetError> {
    let identity = identity_from_pem(&read(cert_file)?, &read(key_file)?).map_err(|e| {
        let why = match e {
            NetError::Tls(why) => why,
            other => other.to_string(),
        };
        NetError::Tls(format!(
            "{} and {}: {why}",
            cert_file.display(),
            key_file.display()
        ))
    })?;
    tracing::info!(path = %cert_file.display(), "loaded the certificate");
    Ok(identity)
}

/// Parses a PEM certificate chain (every `CERTIFICATE` section, leaf first) and the first
/// private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`) of `key_pem`, and
/// checks that the key is the leaf's.
pub fn identity_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Identity, NetError> {
    let pem_error = |what: &str, e: pem::Error| match e {
        pem::Error::NoItemsFound => NetError::Tls(format!("no {what} found in the PEM")),
        e => NetError::Tls(format!("reading the {what} PEM: {e}")),
    };
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("certificate", e))?;
    if certs.is_empty() {
        return Err(pem_error("certificate", pem::Error::NoItemsFound));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| pem_error("private key", e))?;
    let identity = Identity { certs, key };
    // The check rustls makes when the server config is built, made here so the error
    // names the files.
    rustls::sign::CertifiedKey::from_der(
        identity.certs.clone(),
        identity.key.clone_key(),
        &provider(),
    )
    .map_err(|e| {
        NetError::Tls(format!(
            "the private key is unusable or not the certificate's: {e}"
        ))
    })?;
    Ok(identity)
}

/// Reads the certificate in `data_dir` and returns its fingerprint (what a client on the
/// same machine pins).
pub fn fingerprint_from_data_dir(data_dir: &Path) -> Result<[u8; 32], NetError> {
    Ok(fingerprint(&read(&data_dir.join(CERT_FILE))?))
}

/// Loads the token key from `path`, or creates it there (mode 0600) if it does not exist.
pub fn load_or_create_token_key(path: &Path) -> Result<TokenKey, NetError> {
    if !path.exists() {
        if let Some(dir) = path.parent() {
            create_dir(dir)?;
        }
        let mut key = [0u8; TOKEN_KEY_LEN];
        fill_random(&mut key)?;
        write_private(path, &key)?;
        tracing::info!(path = %path.display(), "created a connect-token key");
    }
    load_token_key(path)
}

/// Loads an existing token key file (exactly 32 bytes).
pub fn load_token_key(path: &Path) -> Result<TokenKey, NetError> {
    let bytes = read(path)?;
    let key: [u8; TOKEN_KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
        NetError::BadFile(format!(
            "{} holds {} bytes; a token key is exactly {TOKEN_KEY_LEN}",
            path.display(),
            bytes.len()
        ))
    })?;
    Ok(TokenKey::from_bytes(&key))
}

/// Fills `out` from the system's secure random source.
pub fn fill_random(out: &mut [u8]) -> Result<(), NetError> {
    SystemRandom::new()
        .fill(out)
        .map_err(|_| NetError::Tls("the system random source failed".into()))
}

/// The rustls server config: TLS 1.3 only, ALPN `tickcast/1`, ring.
pub fn server_crypto(identity: Identity) -> Result<rustls::ServerConfig, NetError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(identity.certs, identity.key)
        .map_err(|e| NetError::Tls(format!("the certificate or key is not usable: {e}")))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The rustls client config that trusts exactly the certificate with this fingerprint.
pub fn client_crypto_pinned(fingerprint: [u8; 32]) -> Result<rustls::ClientConfig, NetError> {
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertVerifier {
            fingerprint,
            provider,
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// Trusts one certificate by its SHA-256, whatever its name or issuer, and still checks
/// that the server holds its key (the handshake signature).
#[derive(Debug)]
struct PinnedCertVerifier {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity.as_ref()) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered; QUIC requires it.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, NetError> {
    fs::read(path).map_err(|source| NetError::Io {
        what: format!("reading {}", path.display()),
        source,
    })
}

fn create_dir(dir: &Path) -> Result<(), NetError> {
    fs::create_dir_all(dir).map_err(|source| NetError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    fs::write(path, bytes).map_err(|source| NetError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    let io = |source| NetError::Io {
        what: format!("writing {}", PathBuf::from(path).display()),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip_through_hex() {
        let fp = fingerprint(b"a certificate");
        assert_eq!(parse_fingerprint(&fingerprint_hex(&fp)).unwrap(), fp);
        let with_colons = fingerprint_hex(&fp)
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&with_colons).unwrap(), fp);
        assert!(parse_fingerprint("abc").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    /// `u8::from_str_radix` took a sign: "+f" read as 0x0f.
    #[test]
    fn a_sign_in_a_fingerprint_is_not_a_hex_digit() {
        assert!(parse_fingerprint(&format!("+f{}", "00".repeat(31))).is_err());
    }

    #[test]
    fn identity_and_key_persist_across_runs_with_private_modes() {
        let dir = std::env::temp_dir().join(format!("tickcast-tls-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = load_or_create_identity(&dir).unwrap().fingerprint();
        let second = load_or_create_identity(&dir).unwrap().fingerprint();
        assert_eq!(first, second);
        assert_eq!(fingerprint_from_data_dir(&dir).unwrap(), first);
        load_or_create_token_key(&dir.join(TOKEN_KEY_FILE)).unwrap();
        #[cfg(unix)]
        for file in [KEY_FILE, TOKEN_KEY_FILE] {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(file)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        fs::write(dir.join("short.key"), [1u8; 5]).unwrap();
        assert!(load_token_key(&dir.join("short.key")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pem_certificate_and_key_load_and_serve_tls() {
        let dir = std::env::temp_dir().join(format!("tickcast-pem-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["game.example".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["other.example".into()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        fs::write(&cert, generated.cert.pem()).unwrap();
        fs::write(&key, generated.signing_key.serialize_pem()).unwrap();

        let identity = load_pem_identity(&cert, &key).unwrap();
        assert_eq!(identity.certs.len(), 1);
        assert_eq!(
            identity.fingerprint(),
            fingerprint(generated.cert.der()),
            "clients pin the leaf's DER, whatever file format it came in"
        );
        server_crypto(identity).unwrap();

        // Each file swapped for something else is refused with a reason, not served.
        let wrong_key = dir.join("other-key.pem");
        fs::write(&wrong_key, other.signing_key.serialize_pem()).unwrap();
        let Err(error) = load_pem_identity(&cert, &wrong_key) else {
            panic!("a key that is not the certificate's loaded");
        };
        assert!(
            error.to_string().contains("not the certificate's"),
            "{error}"
        );
        assert!(
            load_pem_identity(&key, &key).is_err(),
            "a key as the certificate"
        );
        assert!(
            load_pem_identity(&cert, &cert).is_err(),
            "a certificate as the key"
        );
        assert!(load_pem_identity(&cert, &dir.join("missing.pem")).is_err());
        assert!(identity_from_pem(b"not pem", b"not pem").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
