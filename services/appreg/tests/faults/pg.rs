//! A private PostgreSQL server (its own data directory and port), so the suite can crash and
//! restart it without touching the machine's shared server. Started with the server binaries
//! of the machine (`APPREG_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`); as root, the
//! server runs as the `postgres` user (PostgreSQL refuses root).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PrivatePostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    /// Server settings (`-c name=value …`) beyond the port and the sockets.
    settings: Vec<String>,
}

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("APPREG_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|p| p.join("initdb").exists());
    found.sort();
    found.pop().expect(
        "the fault suite needs PostgreSQL's server binaries (initdb, pg_ctl): \
         /usr/lib/postgresql/<version>/bin, or APPREG_PG_BIN",
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PrivatePostgres {
    /// Creates a cluster in a fresh directory and starts it on a free port (200 connections,
    /// as deploy/compose.yaml gives its server).
    pub fn start() -> PrivatePostgres {
        Self::start_with(&["-c".into(), "max_connections=200".into()])
    }

    /// The same with these server arguments (`-c name=value`, as given to `postgres`).
    pub fn start_with(settings: &[String]) -> PrivatePostgres {
        let dir = std::env::temp_dir().join(format!(
            "appreg-faults-pg-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of the private PostgreSQL directory");
        }
        let pg = PrivatePostgres {
            port: appreg_test_support::nats::free_port(),
            dir,
            bin: bin_dir(),
            as_postgres,
            settings: settings.to_vec(),
        };
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(pg.data())
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.up();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn up(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} {}",
            self.port,
            self.dir.display(),
            self.settings.join(" ")
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server the way a crash does (no shutdown checkpoint; recovery at the next
    /// start).
    pub fn crash(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }

    /// Starts it again after [`crash`](Self::crash).
    pub fn restart(&self) {
        self.up();
    }

    /// A URL of database `name` (`postgres` exists).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.crash();
        // After a failure, the logs are worth keeping.
        if std::thread::panicking() || std::env::var_os("APPREG_FAULTS_KEEP").is_some() {
            eprintln!("kept {} (server and service logs)", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
