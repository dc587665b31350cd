//! A MariaDB server for tests: its own datadir, port and socket under a
//! temporary directory, row-based binlog with full images and metadata,
//! started with mariadbd and stopped by PID. Shared with the integration
//! tests (`#[path]`), so it depends on nothing but std and tempfile.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct MariaDb {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub socket: PathBuf,
    child: Option<Child>,
}

fn tool(name: &str) -> String {
    for dir in ["/usr/sbin", "/usr/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p.display().to_string();
        }
    }
    panic!("{name} is not installed: MariaDB tests need the Debian package mariadb-server (make test installs it)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl MariaDb {
    /// A fresh server with `extra` lines added to its [mariadbd] section.
    pub fn start(extra: &str) -> MariaDb {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path();
        let socket = d.join("mdb.sock");
        let cnf = format!(
            "[mariadbd]\nuser=root\ndatadir={d}/data\nsocket={s}\npid-file={d}/mdb.pid\nport={port}\nbind-address=127.0.0.1\n\
             server_id=1\nlog_bin={d}/data/binlog\nbinlog_format=ROW\nbinlog_row_image=FULL\nbinlog_row_metadata=FULL\n\
             tmpdir={d}\nskip-name-resolve\ninnodb_buffer_pool_size=32M\ninnodb_log_file_size=16M\nperformance_schema=OFF\n{extra}\n",
            d = d.display(),
            s = socket.display()
        );
        std::fs::write(d.join("my.cnf"), cnf).unwrap();
        let out = Command::new(tool("mariadb-install-db"))
            .arg(format!("--defaults-file={}", d.join("my.cnf").display()))
            .arg("--auth-root-authentication-method=normal")
            .output()
            .unwrap();
        assert!(out.status.success(), "mariadb-install-db failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut db = MariaDb { dir, port, socket, child: None };
        db.run();
        db.sql(
            "CREATE USER 'cdc'@'%' IDENTIFIED BY 'cdc-secret'; \
             GRANT SELECT, RELOAD, REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR ON *.* TO 'cdc'@'%';",
        );
        db
    }

    /// Starts mariadbd on the existing datadir and waits until it answers.
    pub fn run(&mut self) {
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("server.log")).unwrap();
        let child = Command::new(tool("mariadbd"))
            .arg(format!("--defaults-file={}", d.join("my.cnf").display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() || !self.try_sql("SELECT 1") {
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start: {}",
                std::fs::read_to_string(d.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn client(&self, sql: &str) -> std::process::Output {
        Command::new(tool("mariadb"))
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-uroot", "-N", "-B", "-e", sql])
            .output()
            .unwrap()
    }

    fn try_sql(&self, sql: &str) -> bool {
        self.client(sql).status.success()
    }

    /// Runs SQL as root; panics with the server's message on failure.
    pub fn sql(&self, sql: &str) -> String {
        let out = self.client(sql);
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops the server (kill -9 when `hard`), keeping the datadir.
    pub fn stop(&mut self, hard: bool) {
        if let Some(mut c) = self.child.take() {
            if hard {
                let _ = c.kill();
            } else {
                let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop(true);
    }
}
