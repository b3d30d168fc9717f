//! The fast slice of `bench/hostile-http.sh` (RELIABILITY.md): the accept loop's limits over a
//! real socket, with short times. Idle and half-sent connections are closed, an oversized head
//! gets 431, garbage a 4xx, hundreds of concurrent connections are all answered, and a
//! well-behaved client is answered throughout — also while hostile connections fill the
//! connection limit (it waits in the backlog until they time out).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskledger_domain::Policy;
use taskledger_ingest::{Ledger, LedgerConfig, SystemClock};
use taskledger_projections::{Kv, MemoryKv};
use taskledger_serve::{app, serve_with, AppState, Limits, ListenLimits};
use taskledger_store::{MemoryStore, SharedStore};

const CONNECTIONS_MAX: usize = 64;

fn start() -> (std::net::SocketAddr, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let address = runtime.block_on(async {
        let store = Arc::new(MemoryStore::new());
        let ledger = Arc::new(Ledger::new(
            store.clone() as SharedStore,
            Policy::default(),
            Arc::new(SystemClock),
            LedgerConfig::default(),
        ));
        let models: Arc<dyn Kv> = Arc::new(MemoryKv::new());
        let (sender, projected) = tokio::sync::watch::channel(0u64);
        std::mem::forget(sender);
        let state = Arc::new(AppState {
            ledger,
            store: store as SharedStore,
            models,
            tokens: Default::default(),
            limits: Limits::default(),
            projected,
            metrics: None,
            commit_stats: None,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = ListenLimits {
            connections_max: CONNECTIONS_MAX,
            header_read_timeout: Duration::from_millis(800),
            connection_idle: Duration::from_millis(1500),
            header_bytes_max: 16 * 1024,
            headers_max: 64,
        };
        tokio::spawn(serve_with(
            listener,
            app(state),
            std::future::pending::<()>(),
            limits,
        ));
        address
    });
    (address, runtime)
}

/// Sends `bytes`, half-closes, and returns the status of the answer (0: closed without one).
fn exchange(address: std::net::SocketAddr, bytes: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn healthz(address: std::net::SocketAddr) -> u16 {
    exchange(
        address,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
}

/// True when the server closes `stream` within `within` (it reads EOF or a reset).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn idle_and_half_sent_connections_are_closed() {
    let (address, _runtime) = start();
    let mut idle = TcpStream::connect(address).unwrap();
    let mut half = TcpStream::connect(address).unwrap();
    half.write_all(b"POST /v1/reports HTTP/1.1\r\nHost: localhost\r\nContent-Le")
        .unwrap();
    let mut keep_alive = TcpStream::connect(address).unwrap();
    keep_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut half, Duration::from_secs(5)),
        "half-sent head"
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)),
        "idle connection"
    );
    assert!(
        closed_within(&mut keep_alive, Duration::from_secs(5)),
        "idle keep-alive"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(healthz(address), 200);
}

#[test]
fn oversized_heads_and_garbage_get_a_4xx_never_a_5xx() {
    let (address, _runtime) = start();
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert_eq!(exchange(address, big.as_bytes()), 431);
    let many: String = (0..200).map(|i| format!("X-{i}: y\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\n{many}\r\n");
    let status = exchange(address, many.as_bytes());
    assert!((400..500).contains(&status) || status == 0, "{status}");
    for garbage in [
        &b"\x00\x01\x02 garbage\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /v1/reports HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcde",
        b"POST /v1/reports HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let status = exchange(address, garbage);
        assert!(status < 500, "{status} for {garbage:?}");
    }
    assert_eq!(healthz(address), 200);
}

#[test]
fn concurrent_connections_are_all_answered_and_a_full_limit_only_delays() {
    let (address, _runtime) = start();
    // Hostile connections fill the limit; a well-behaved request waits in the backlog and is
    // answered once they time out.
    let hostile: Vec<TcpStream> = (0..CONNECTIONS_MAX)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(healthz(address), 200);
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(hostile);
    // Many more connections at once than the limit (each thread connects and sends at once:
    // a connection that waits longer than the header read timeout to send is closed, rightly).
    let answered: Vec<std::thread::JoinHandle<u16>> = (0..400)
        .map(|_| std::thread::spawn(move || healthz(address)))
        .collect();
    let statuses: Vec<u16> = answered.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}
