//! A real OCI registry for the tests: Debian's `docker-registry` (the CNCF
//! distribution server, installed by `scripts/test-tools.sh`) on a free
//! loopback port with its storage in a temporary directory, stopped when
//! dropped.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The login of the registry started with [`LocalRegistry::with_logins`].
pub const USERNAME: &str = "ci";
pub const PASSWORD: &str = "flowcraft-test-password";
/// [`PASSWORD`] hashed with bcrypt (cost 4), as the registry's htpasswd file
/// holds it.
const PASSWORD_BCRYPT: &str = "$2b$04$y9b.ox5qKhHpcvfzpPuYZuVEoBg5cGflbFbBQMbze9yHAmXEJLvuq";

pub struct LocalRegistry {
    pub address: SocketAddr,
    pub storage: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
}

impl LocalRegistry {
    /// A registry anyone may push to and pull from.
    pub fn anonymous() -> Self {
        Self::start(false)
    }

    /// A registry that takes only [`USERNAME`] and [`PASSWORD`].
    pub fn with_logins() -> Self {
        Self::start(true)
    }

    fn start(logins: bool) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let htpasswd = logins.then(|| {
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, format!("{USERNAME}:{PASSWORD_BCRYPT}\n")).expect("htpasswd");
            path
        });
        let storage = dir.path().join("storage");
        let port = free_port();
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let auth = htpasswd.map_or_else(String::new, |path| {
            format!(
                "auth:\n  htpasswd:\n    realm: flowcraft-test\n    path: {}\n",
                path.display()
            )
        });
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n{auth}",
                storage.display()
            ),
        )
        .expect("registry config");
        // Its log (every refused request is an error there) stays in the
        // directory; it is shown if the registry does not start.
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry is not installed: run scripts/test-tools.sh");
        let mut registry = Self {
            address,
            storage,
            child,
            dir,
        };
        registry.wait_until_listening();
        registry
    }

    /// `127.0.0.1:<port>`, as a reference names the registry.
    pub fn host(&self) -> String {
        self.address.to_string()
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.address).is_err() {
            if let Some(status) = self.child.try_wait().expect("registry process") {
                let log = std::fs::read_to_string(self.dir.path().join("registry.log"));
                panic!("docker-registry exited at start-up ({status}): {log:?}");
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}
