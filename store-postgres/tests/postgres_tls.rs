//! TLS to a real PostgreSQL server that refuses unencrypted connections, with libpq's
//! `sslmode` and `sslrootcert` (store/src/pg_tls.rs): the certificates come from a CA made here.

use taskledger_testkit::pg_cluster;

use taskledger_store::{EventStore, ExpectedVersion, NewEvent, StreamAppend};

use taskledger_store_postgres::{PostgresConfig, PostgresStore};

struct Certificates {
    ca: String,
    other_ca: String,
    /// Issued by `ca` for `localhost` only (not for 127.0.0.1).
    server: String,
    server_key: String,
    /// Client certificates for user `certified`: one issued by `ca`, one by `other_ca`.
    client: (String, String),
    client_of_other_ca: (String, String),
}

fn certificates() -> Certificates {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("taskledger test CA");
    let (other_cert, other_key) = ca("another CA");
    let server_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = params.signed_by(&server_key, &ca_cert, &ca_key).unwrap();
    let client = |issuer: &rcgen::Certificate, issuer_key: &KeyPair| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "certified");
        let cert = params.signed_by(&key, issuer, issuer_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Certificates {
        client: client(&ca_cert, &ca_key),
        client_of_other_ca: client(&other_cert, &other_key),
        ca: ca_cert.pem(),
        other_ca: other_cert.pem(),
        server: server.pem(),
        server_key: server_key.serialize_pem(),
    }
}

fn event(n: u128) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::from_u128(n + 1),
        event_type: "TaskEnqueued".into(),
        schema_version: 1,
        recorded_at_ms: 1_700_000_000_000 + n as i64,
        data: format!("{{\"n\":{n}}}").into_bytes(),
    }
}

async fn open(url: &str) -> Result<PostgresStore, String> {
    PostgresStore::open(PostgresConfig::new(url))
        .await
        .map_err(|error| error.to_string())
}

/// The events a store opened with `url` reads (the connection works both ways).
async fn events_read(url: &str) -> usize {
    let store = open(url).await.unwrap();
    store.read_all(0, 10).await.unwrap().len()
}

/// Opening with `url` fails with an error that contains `expected`; `what` names the case.
async fn refused(url: &str, expected: &str, what: &str) {
    let error = open(url)
        .await
        .err()
        .unwrap_or_else(|| panic!("{what}: must be refused"));
    assert!(error.contains(expected), "{what}: {error}");
    println!("{what}: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_as_libpq_checks_it() {
    if !taskledger_testkit::runs(
        "postgres",
        "tls_as_libpq_checks_it",
        pg_cluster::unavailable_reason(),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = pg_cluster::free_port().unwrap();
    let server =
        pg_cluster::PgServer::start_primary(&dir.path().join("primary"), port, false).unwrap();
    let certs = certificates();
    server
        .require_tls(&certs.server, &certs.server_key, Some(&certs.ca))
        .unwrap();
    server.create_database("ledger").unwrap();
    server
        .psql("ledger", "CREATE ROLE certified LOGIN SUPERUSER")
        .unwrap();
    let ca = dir.path().join("ca.pem");
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&ca, &certs.ca).unwrap();
    std::fs::write(&other_ca, &certs.other_ca).unwrap();
    let by_name = format!("postgres://postgres@localhost:{port}/ledger?hostaddr=127.0.0.1");
    let by_address = format!("postgres://postgres@127.0.0.1:{port}/ledger");
    let (ca, other_ca) = (ca.display(), other_ca.display());

    // verify-full: the chain and the name. Appends and reads go over it.
    let store = open(&format!("{by_name}&sslmode=verify-full&sslrootcert={ca}"))
        .await
        .unwrap();
    let appended = store
        .append(vec![StreamAppend {
            stream: "task-1".into(),
            expected: ExpectedVersion::Length(0),
            events: vec![event(0), event(1)],
        }])
        .await
        .unwrap();
    assert!(appended[0].is_ok());
    let read = store.read_all(0, 10).await.unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(read[1].data, event(1).data);
    drop(store);

    // The certificate names localhost, not 127.0.0.1: verify-full refuses, verify-ca takes it.
    refused(
        &format!("{by_address}?sslmode=verify-full&sslrootcert={ca}"),
        "certificate",
        "verify-full, wrong name",
    )
    .await;
    assert_eq!(
        events_read(&format!("{by_address}?sslmode=verify-ca&sslrootcert={ca}")).await,
        2
    );

    // Signed by a CA that is not the trusted one: refused by both, and by require with roots.
    for mode in ["verify-full", "verify-ca", "require"] {
        refused(
            &format!("{by_name}&sslmode={mode}&sslrootcert={other_ca}"),
            "certificate",
            &format!("{mode}, another CA"),
        )
        .await;
    }

    // require and prefer (the default) without roots: encrypted, not checked (libpq's too).
    for query in ["?sslmode=require", ""] {
        assert_eq!(
            events_read(&format!("{by_address}{query}")).await,
            2,
            "{query}"
        );
    }

    // disable: the server refuses the unencrypted connection, and the error says so.
    refused(
        &format!("{by_address}?sslmode=disable"),
        "no encryption",
        "disable",
    )
    .await;

    // User `certified` signs in by client certificate only (sslcert, sslkey).
    let pem = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (cert, key) = (
        pem("client.pem", &certs.client.0),
        pem("client.key", &certs.client.1),
    );
    let (other_cert, other_key) = (
        pem("other-client.pem", &certs.client_of_other_ca.0),
        pem("other-client.key", &certs.client_of_other_ca.1),
    );
    let certified = format!(
        "postgres://certified@localhost:{port}/ledger?hostaddr=127.0.0.1&sslmode=verify-full\
         &sslrootcert={ca}"
    );
    assert_eq!(
        events_read(&format!("{certified}&sslcert={cert}&sslkey={key}")).await,
        2
    );
    refused(&certified, "certificate", "no client certificate").await;
    refused(
        &format!("{certified}&sslcert={other_cert}&sslkey={other_key}"),
        "UnknownCA",
        "client certificate of another CA",
    )
    .await;
    refused(
        &format!("{certified}&sslcert={cert}&sslkey={other_key}"),
        "sslkey",
        "the wrong key",
    )
    .await;

    // A verifying mode without roots is a clear error before any connection.
    refused(
        &format!("{by_name}&sslmode=verify-full"),
        "sslrootcert",
        "verify-full without roots",
    )
    .await;
}
