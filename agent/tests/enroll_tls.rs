//! Checks, over real TCP and TLS, that enrollment tells a manager with the wrong
//! CA (fatal: a person must fix the token or --ca-cert) from a manager that is
//! down or drops the connection (transient: retry). The peer here is only a TLS
//! listener that completes or fails the handshake and hangs up; it speaks no
//! gRPC, so it is no stand-in for the manager.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use drover_agent::enroll;
use drover_agent::error::AgentError;
use drover_agent::facts;
use drover_proto::tls::{Fingerprint, ManagerAddr};
use drover_proto::token::EnrollmentToken;
use rcgen::{BasicConstraints, CertificateParams, CertifiedKey, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

fn ca(name: &str) -> CertifiedKey {
    let key_pair = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key_pair).expect("self-sign");
    CertifiedKey { cert, key_pair }
}

/// Serves TLS on 127.0.0.1 with a server certificate issued by `ca`, presenting
/// `[server, CA]` as the manager does, and closes every connection after the
/// handshake.
async fn tls_listener(ca: &CertifiedKey) -> SocketAddr {
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    let server = params.signed_by(&key, &ca.cert, &ca.key_pair).expect("sign");
    let chain = vec![CertificateDer::from(server.der().to_vec()), CertificateDer::from(ca.cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(drover_proto::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    addr
}

fn manager(addr: SocketAddr) -> ManagerAddr {
    format!("https://127.0.0.1:{}", addr.port()).parse().expect("manager addr")
}

fn token(fingerprint: Option<Fingerprint>) -> EnrollmentToken {
    EnrollmentToken {
        id: "abcd1234".into(),
        secret: "0123456789abcdefghijklmnopqrstuv".into(),
        ca_fingerprint: fingerprint,
    }
}

async fn try_enroll(addr: SocketAddr, fingerprint: Option<Fingerprint>, ca_pem: Option<&str>) -> AgentError {
    let facts = facts::collect(Some("enroll-test"));
    let result = enroll::enroll(&manager(addr), &token(fingerprint), ca_pem, &facts, &BTreeMap::new()).await;
    match result {
        Ok(identity) => panic!("enrollment cannot succeed without a manager, got {identity:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn a_manager_without_the_tokens_ca_is_a_fatal_fingerprint_mismatch() {
    let addr = tls_listener(&ca("manager CA")).await;
    let other = ca("someone else's CA");
    let err = try_enroll(addr, Some(Fingerprint::of_der(other.cert.der())), None).await;
    assert!(matches!(err, AgentError::CaFingerprintMismatch(_)), "{err:?}");
    assert!(err.is_fatal());
    assert_eq!(err.exit_code(), 2);
    let msg = err.to_string();
    assert!(msg.starts_with("CA fingerprint mismatch"), "{msg}");
    assert!(msg.contains("check that the enrollment token"), "{msg}");
}

#[tokio::test]
async fn a_manager_not_signed_by_the_ca_cert_file_is_fatal() {
    let addr = tls_listener(&ca("manager CA")).await;
    let other = ca("someone else's CA");
    let err = try_enroll(addr, None, Some(&other.cert.pem())).await;
    assert!(matches!(err, AgentError::ServerCertificateRejected(_)), "{err:?}");
    assert!(err.is_fatal());
    assert!(err.to_string().contains("--ca-cert"), "{err}");
}

#[tokio::test]
async fn the_right_ca_that_hangs_up_is_transient() {
    let manager_ca = ca("manager CA");
    let addr = tls_listener(&manager_ca).await;
    let err = try_enroll(addr, Some(Fingerprint::of_der(manager_ca.cert.der())), None).await;
    assert!(!err.is_fatal(), "a dropped connection must be retried: {err:?}");
    let err = try_enroll(addr, None, Some(&manager_ca.cert.pem())).await;
    assert!(!err.is_fatal(), "a dropped connection must be retried: {err:?}");
}

#[tokio::test]
async fn a_manager_that_is_down_is_transient() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let err = try_enroll(addr, Some(Fingerprint::of_der(b"x")), None).await;
    assert!(matches!(err, AgentError::Unavailable(_)), "{err:?}");
    assert!(!err.is_fatal());
}

#[tokio::test]
async fn no_way_to_authenticate_the_manager_is_fatal() {
    let err = try_enroll("127.0.0.1:9".parse().expect("addr"), None, None).await;
    assert!(matches!(err, AgentError::NoServerTrust), "{err:?}");
    assert!(err.to_string().contains("--ca-cert"), "{err}");
}
