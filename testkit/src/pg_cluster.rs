//! Throwaway PostgreSQL servers from the machine's own packages (Debian's `postgresql`), for the
//! tests, the benchmarks and the failover loop: a primary, optionally with a synchronous
//! standby, each in a directory of its own on a port of its own, on loopback only.
//!
//! Not used by the product: it shells out to `initdb`, `pg_ctl` and `pg_basebackup`. As root
//! (CI), every command runs as the `postgres` user the package creates, which owns the
//! directories; PostgreSQL refuses to run as root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A server's start or promotion must finish within this.
const SERVER_WAIT_S: u64 = 60;

/// The newest installed PostgreSQL's `bin` directory, if any.
pub fn binaries() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// Why PostgreSQL tests cannot run here, or `None` when they can.
pub fn unavailable_reason() -> Option<String> {
    if binaries().is_none() {
        return Some(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; .ci/run installs Debian's postgresql)"
                .into(),
        );
    }
    if is_root() && !user_exists("postgres") {
        return Some("running as root and there is no `postgres` user to run the server as".into());
    }
    None
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn user_exists(user: &str) -> bool {
    Command::new("id")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}

/// A free TCP port on loopback (bound, read and released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether process `pid` still runs: a zombie (dead, not yet reaped by an init that reaps
/// late) does not.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// One server.
#[derive(Debug)]
pub struct PgServer {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    as_postgres: bool,
}

fn command(bin: &Path, as_postgres: bool, program: &str) -> Command {
    if as_postgres {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(bin.join(program));
        command
    } else {
        Command::new(bin.join(program))
    }
}

fn run(command: &mut Command, what: &str) -> std::io::Result<()> {
    let output = command.stdin(Stdio::null()).output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// Makes `dir` the server user's, and its parent passable (a temporary directory is 0700).
fn prepare_dir(dir: &Path, as_postgres: bool) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // PostgreSQL refuses a data directory others can read.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    if as_postgres {
        if let Some(parent) = dir.parent() {
            let mut permissions = std::fs::metadata(parent)?.permissions();
            permissions.set_mode(permissions.mode() | 0o011);
            std::fs::set_permissions(parent, permissions)?;
        }
        run(
            Command::new("chown").arg("postgres:postgres").arg(dir),
            "chown",
        )?;
    }
    Ok(())
}

impl PgServer {
    /// A new primary in `dir` (created; must not hold a cluster yet) on `port`. With
    /// `synchronous_standby`, every commit waits until a standby has flushed it
    /// (`synchronous_standby_names = '*'`, `synchronous_commit = on`).
    pub fn start_primary(
        dir: &Path,
        port: u16,
        synchronous_standby: bool,
    ) -> std::io::Result<PgServer> {
        let bin = binaries().ok_or_else(|| std::io::Error::other("PostgreSQL is not installed"))?;
        let as_postgres = is_root();
        prepare_dir(dir, as_postgres)?;
        let mut initdb = command(&bin, as_postgres, "initdb");
        initdb
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "-D",
            ])
            .arg(dir);
        run(&mut initdb, "initdb")?;
        let mut settings = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n\
             max_connections = 200\nwal_level = replica\nmax_wal_senders = 10\n\
             wal_keep_size = '256MB'\nhot_standby = on\nsynchronous_commit = on\n\
             fsync = on\nlog_min_messages = warning\n"
        );
        if synchronous_standby {
            settings.push_str("synchronous_standby_names = '*'\n");
        }
        let conf = dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str(&settings);
        std::fs::write(&conf, text)?;
        let server = PgServer {
            dir: dir.to_path_buf(),
            port,
            bin,
            as_postgres,
        };
        server.start()?;
        Ok(server)
    }

    /// A standby of `primary` in `dir` on `port`, streaming from it (`pg_basebackup -R`). It
    /// inherits `synchronous_standby_names`, so once promoted it waits for a standby of its own.
    pub fn start_standby(primary: &PgServer, dir: &Path, port: u16) -> std::io::Result<PgServer> {
        let as_postgres = primary.as_postgres;
        prepare_dir(dir, as_postgres)?;
        let mut backup = command(&primary.bin, as_postgres, "pg_basebackup");
        backup
            .args(["-h", "127.0.0.1", "-p"])
            .arg(primary.port.to_string())
            .args(["-U", "postgres", "-X", "stream", "-R", "-c", "fast", "-D"])
            .arg(dir);
        run(&mut backup, "pg_basebackup")?;
        let conf = dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str(&format!("port = {port}\n"));
        std::fs::write(&conf, text)?;
        let server = PgServer {
            dir: dir.to_path_buf(),
            port,
            bin: primary.bin.clone(),
            as_postgres,
        };
        server.start()?;
        Ok(server)
    }

    /// Starts the server (again, after [`PgServer::kill`] or [`PgServer::stop`]).
    pub fn start(&self) -> std::io::Result<()> {
        // A killed postmaster may linger as a zombie until an init that reaps late reaps it;
        // PostgreSQL would take its pid for a live server and refuse to start.
        if let Some(pid) = self.pid() {
            if !alive(pid) {
                std::fs::remove_file(self.dir.join("postmaster.pid"))?;
            }
        }
        let mut start = command(&self.bin, self.as_postgres, "pg_ctl");
        start
            .args(["-w", "-t"])
            .arg(SERVER_WAIT_S.to_string())
            .arg("-D")
            .arg(&self.dir)
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .arg("start");
        run(&mut start, "pg_ctl start").map_err(|error| {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(6).collect();
            std::io::Error::other(format!(
                "{error}; {}: {}",
                self.dir.join("server.log").display(),
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ))
        })
    }

    /// Promotes this standby to primary and waits until it accepts writes.
    pub fn promote(&self) -> std::io::Result<()> {
        let mut promote = command(&self.bin, self.as_postgres, "pg_ctl");
        promote
            .args(["-w", "-t"])
            .arg(SERVER_WAIT_S.to_string())
            .arg("-D")
            .arg(&self.dir)
            .arg("promote");
        run(&mut promote, "pg_ctl promote")
    }

    /// The postmaster's process id, from `postmaster.pid`.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGKILL to the postmaster and every backend: the machine lost, as far as clients can tell.
    pub fn kill(&self) -> std::io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| std::io::Error::other("no postmaster.pid"))?;
        // The backends are the postmaster's children: listed first, then the postmaster killed
        // (so it cannot restart them), then they.
        let children: Vec<String> = Command::new("pgrep")
            .args(["-P"])
            .arg(pid.to_string())
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        run(
            Command::new("kill").arg("-KILL").arg(pid.to_string()),
            "kill",
        )?;
        if !children.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(&children)
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && alive(pid) {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Until its children are gone too, one of them may still hold the port.
        while Instant::now() < deadline
            && std::net::TcpListener::bind(("127.0.0.1", self.port)).is_err()
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Serves TLS with this certificate and key (PEM) and, from now on, refuses every
    /// connection that is not encrypted (`hostnossl … reject`); with `client_ca` (PEM), user
    /// `certified` signs in only with a client certificate issued by it for that name
    /// (`hostssl all certified all cert`). Restarts the server.
    pub fn require_tls(
        &self,
        cert_pem: &str,
        key_pem: &str,
        client_ca: Option<&str>,
    ) -> std::io::Result<()> {
        let (cert, key) = (self.dir.join("server.crt"), self.dir.join("server.key"));
        let ca = self.dir.join("client-ca.crt");
        std::fs::write(&cert, cert_pem)?;
        std::fs::write(&key, key_pem)?;
        std::fs::write(&ca, client_ca.unwrap_or(""))?;
        // PostgreSQL refuses a key others can read.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        if self.as_postgres {
            run(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&cert)
                    .arg(&key)
                    .arg(&ca),
                "chown",
            )?;
        }
        let conf = self.dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        let mut first = "hostnossl all all all reject\n".to_string();
        if client_ca.is_some() {
            text.push_str("ssl_ca_file = 'client-ca.crt'\n");
            first.push_str("hostssl all certified all cert\n");
        }
        std::fs::write(&conf, text)?;
        let hba = self.dir.join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba)?;
        std::fs::write(&hba, format!("{first}{text}"))?;
        self.stop()?;
        self.start()
    }

    /// A fast shutdown.
    pub fn stop(&self) -> std::io::Result<()> {
        let mut stop = command(&self.bin, self.as_postgres, "pg_ctl");
        stop.args(["-w", "-m", "fast", "-D"])
            .arg(&self.dir)
            .arg("stop");
        run(&mut stop, "pg_ctl stop")
    }

    /// Creates database `name` (as the `postgres` superuser).
    pub fn create_database(&self, name: &str) -> std::io::Result<()> {
        let mut create = command(&self.bin, self.as_postgres, "createdb");
        create
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", "postgres", name]);
        run(&mut create, "createdb")
    }

    /// Runs `sql` in database `database` with `psql` (as the `postgres` superuser): what a test
    /// does to the database behind the ledger's back (tampering with a stored event).
    pub fn psql(&self, database: &str, sql: &str) -> std::io::Result<()> {
        let mut psql = command(&self.bin, self.as_postgres, "psql");
        psql.args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args([
                "-U",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-d",
                database,
                "-c",
                sql,
            ]);
        run(&mut psql, "psql")
    }

    /// A URL of database `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.pid().is_some() {
            let mut stop = command(&self.bin, self.as_postgres, "pg_ctl");
            stop.args(["-m", "immediate", "-D"])
                .arg(&self.dir)
                .arg("stop")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = stop.status();
        }
    }
}
