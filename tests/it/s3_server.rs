//! A real S3-compatible server (moto, from PyPI, started on loopback) for the object-store
//! tests of the library and of the CLI.
//!
//! The server runs from a virtual environment beside the build (`<target>/moto-venv`), made on
//! first use.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::oracle::data;

pub const BUCKET: &str = "bam-test";
const MOTO: &str = "moto[server]>=5,<6";

pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The Python of `<target>/moto-venv`, made once: the tests of this binary run on parallel threads, and
/// the first makes it while the others wait (two makers would clear each other's venv).
pub fn moto_python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(make_moto_venv).clone()
}

fn make_moto_venv() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap();
    let venv = target.join("moto-venv");
    let python = venv.join("bin/python");
    // A marker alone is not enough: a cached target may hold a venv whose interpreter link no
    // longer resolves (another Python, another path), so ask the venv itself.
    let usable = std::fs::read_to_string(venv.join("installed.txt")).ok().as_deref() == Some(MOTO)
        && Command::new(&python).args(["-c", "import moto.server"]).output().is_ok_and(|out| out.status.success());
    if !usable {
        let system_python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
        run(Command::new(system_python).args(["-m", "venv", "--clear"]).arg(&venv));
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", MOTO]));
        std::fs::write(venv.join("installed.txt"), MOTO).unwrap();
    }
    python
}

/// A moto S3 server on a free loopback port, with bucket [`BUCKET`]; stopped on drop.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl S3Server {
    pub fn start() -> Self {
        let python = moto_python();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // `python -m` rather than the `moto_server` script, whose shebang holds the venv's
        // absolute path at creation.
        let child = Command::new(&python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self { child, endpoint: format!("http://127.0.0.1:{port}") };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(60), "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let create =
            format!("import urllib.request as r; r.urlopen(r.Request('{}/{BUCKET}', method='PUT'))", server.endpoint);
        run(Command::new(&python).args(["-c", &create]));
        server
    }

    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_bucket_name(BUCKET)
                .with_region("us-east-1")
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .build()
                .unwrap(),
        )
    }

    pub async fn upload(&self, files: &[&str]) {
        self.upload_as(&files.iter().map(|name| (*name, *name)).collect::<Vec<_>>()).await;
    }

    /// Uploads test data files under other keys: `(key, file)`.
    pub async fn upload_as(&self, files: &[(&str, &str)]) {
        let store = self.store();
        for (key, file) in files {
            let bytes = std::fs::read(data(file)).unwrap();
            store.put(&ObjectPath::from(*key), bytes.into()).await.unwrap();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
