//! BAM files in an object store: a real S3-compatible server (moto, from PyPI, started on
//! loopback) serves them; partitions, the index and pushdown work as on local files.
//!
//! The server runs from a virtual environment beside the build (`<target>/moto-venv`), made on
//! first use.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;
use datafusion_bam::{BamOptions, BamSessionExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::oracle::{data, samtools_count_of, samtools_rows, table_rows};
use crate::partitions::split_context;
use crate::query;

const BUCKET: &str = "bam-test";
const MOTO: &str = "moto[server]>=5,<6";

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The Python of `<target>/moto-venv`, made once: the tests of this binary run on parallel threads, and
/// the first makes it while the others wait (two makers would clear each other's venv).
fn moto_python() -> PathBuf {
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
struct S3Server {
    child: Child,
    endpoint: String,
}

impl S3Server {
    fn start() -> Self {
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

    fn store(&self) -> Arc<dyn ObjectStore> {
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

    async fn upload(&self, files: &[&str]) {
        self.upload_as(&files.iter().map(|name| (*name, *name)).collect::<Vec<_>>()).await;
    }

    /// Uploads test data files under other keys: `(key, file)`.
    async fn upload_as(&self, files: &[(&str, &str)]) {
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

fn register_store(ctx: &SessionContext, server: &S3Server) {
    let url = datafusion::execution::object_store::ObjectStoreUrl::parse(format!("s3://{BUCKET}")).unwrap();
    ctx.register_object_store(url.as_ref(), server.store());
}

fn count(batches: &[arrow::array::RecordBatch]) -> i64 {
    use arrow::array::AsArray;
    batches[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_scans_equal_samtools_with_partitions_index_and_pushdown() {
    let server = S3Server::start();
    server.upload(&["sample.bam", "sample.bam.bai", "name_sorted.bam"]).await;
    let ctx = split_context(3);
    register_store(&ctx, &server);

    ctx.register_bam("s", &format!("s3://{BUCKET}/sample.bam"), BamOptions::default()).await.unwrap();
    let mut rows = table_rows(&query(&ctx, "SELECT * FROM s").await.unwrap());
    rows.sort();
    let mut expected = samtools_rows(&data("sample.bam"), &[]);
    expected.sort();
    assert_eq!(rows, expected, "all rows over S3, 3 partitions");

    let region = "SELECT count(*) FROM s WHERE rname = 'chr1' AND pos <= 60000 AND endpos >= 40000";
    assert_eq!(
        count(&query(&ctx, region).await.unwrap()),
        samtools_count_of(&data("sample.bam"), &["chr1:40000-60000"])
    );
    let plan = query(&ctx, &format!("EXPLAIN {}", region.replace("count(*)", "qname"))).await.unwrap();
    let plan = arrow::util::pretty::pretty_format_batches(&plan).unwrap().to_string();
    assert!(plan.contains("chunks") && plan.contains("sample.bam.bai"), "the index comes from the store:\n{plan}");
    let mapq = "SELECT count(*) FROM s WHERE mapq >= 30 AND flag & 1024 = 0";
    assert_eq!(
        count(&query(&ctx, mapq).await.unwrap()),
        samtools_count_of(&data("sample.bam"), &["-q", "30", "-F", "1024"])
    );

    // A directory of the store: both files.
    ctx.register_bam("all", &format!("s3://{BUCKET}/"), BamOptions::default()).await.unwrap();
    let both = samtools_count_of(&data("sample.bam"), &[]) + samtools_count_of(&data("name_sorted.bam"), &[]);
    assert_eq!(count(&query(&ctx, "SELECT count(*) FROM all").await.unwrap()), both);
    // A glob in the URL: only the files it matches.
    ctx.register_bam("globbed", &format!("s3://{BUCKET}/s*.bam"), BamOptions::default()).await.unwrap();
    assert_eq!(
        count(&query(&ctx, "SELECT count(*) FROM globbed").await.unwrap()),
        samtools_count_of(&data("sample.bam"), &[])
    );
}

/// Partition directories in a bucket become columns, with indexes beside the files (which are
/// not read as BAM files), as in a local directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_partition_directories_become_columns() {
    let server = S3Server::start();
    let files = [
        ("runs/sample=a/x.bam", "sample.bam"),
        ("runs/sample=a/x.bam.bai", "sample.bam.bai"),
        ("runs/sample=b/y.bam", "name_sorted.bam"),
    ];
    server.upload_as(&files).await;
    let ctx = split_context(2);
    register_store(&ctx, &server);
    let expected = format!(
        "a {}, b {}",
        samtools_count_of(&data("sample.bam"), &[]),
        samtools_count_of(&data("name_sorted.bam"), &[])
    );
    for (name, partitioned) in [("inferred", ""), ("named", "PARTITIONED BY (sample)")] {
        let create = format!("CREATE EXTERNAL TABLE {name} STORED AS BAM {partitioned} LOCATION 's3://{BUCKET}/runs/'");
        query(&ctx, &create).await.unwrap_or_else(|e| panic!("{create}: {e}"));
        let batches =
            query(&ctx, &format!("SELECT sample, count(*) FROM {name} GROUP BY sample ORDER BY sample")).await.unwrap();
        let counts: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                (0..b.num_rows()).map(move |i| {
                    let text = |c: usize| arrow::util::display::array_value_to_string(b.column(c), i).unwrap();
                    format!("{} {}", text(0), text(1))
                })
            })
            .collect();
        assert_eq!(counts.join(", "), expected, "{name}");
    }
    // Globs in URLs, two of them in one table; they cannot carry partition columns.
    let globs = format!("LOCATION ('s3://{BUCKET}/runs/sample=a/*.bam', 's3://{BUCKET}/runs/sample=b/y*')");
    query(&ctx, &format!("CREATE EXTERNAL TABLE globbed STORED AS BAM {globs}")).await.unwrap();
    let both = samtools_count_of(&data("sample.bam"), &[]) + samtools_count_of(&data("name_sorted.bam"), &[]);
    assert_eq!(count(&query(&ctx, "SELECT count(*) FROM globbed").await.unwrap()), both);
    let err = query(&ctx, &format!("CREATE EXTERNAL TABLE bad STORED AS BAM PARTITIONED BY (sample) {globs}"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("a glob in a URL cannot be combined with partition columns"), "{err}");
}

/// The CLI reads `s3://` with the store's options in `OPTIONS`, with and without BAM options: a
/// file, a glob in the URL and a directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reads_s3_locations() {
    let server = S3Server::start();
    server.upload(&["sample.bam", "sample.bam.bai", "name_sorted.bam"]).await;
    let store = format!(
        "'aws.endpoint' '{}', 'aws.allow_http' 'true', 'aws.region' 'us-east-1', \
         'aws.access_key_id' 'test', 'aws.secret_access_key' 'test'",
        server.endpoint
    );
    let in_sample = samtools_count_of(&data("sample.bam"), &["-q", "30"]);
    let in_both = in_sample + samtools_count_of(&data("name_sorted.bam"), &["-q", "30"]);
    // A glob matching sample.bam only, and the directory, whose index is not read as a BAM file.
    let cases = [
        ("sample.bam", "", in_sample),
        ("sam*.bam", ", 'tags' 'NM', 'skip_damaged' 'true'", in_sample),
        ("", "", in_both),
    ];
    for (location, extra, expected) in cases {
        let create = format!(
            "CREATE EXTERNAL TABLE r STORED AS BAM LOCATION 's3://{BUCKET}/{location}' OPTIONS ({store}{extra})"
        );
        let out = Command::new(env!("CARGO_BIN_EXE_datafusion-bam"))
            .args(["-q", "--format", "csv", "-c", &create, "-c", "SELECT count(*) FROM r WHERE mapq >= 30"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{location}{extra}: {}", String::from_utf8_lossy(&out.stderr));
        let n: i64 = text.lines().rev().find_map(|l| l.trim().parse().ok()).unwrap();
        assert_eq!(n, expected, "{location}{extra}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("test"), "credentials must not be printed");
    }
}

/// `http://` locations: plain ranged GETs (the moto server serves public objects over HTTP), with
/// the index fetched the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reads_http_locations() {
    let server = S3Server::start();
    let upload = format!(
        "import boto3\n\
         s3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')\n\
         for name in ['sample.bam', 'sample.bam.bai']:\n    s3.upload_file('{}/' + name, '{BUCKET}', name, ExtraArgs={{'ACL': 'public-read'}})\n",
        server.endpoint,
        data("").display()
    );
    run(Command::new(moto_python()).args(["-c", &upload]));
    let create = format!("CREATE EXTERNAL TABLE h STORED AS BAM LOCATION '{}/{BUCKET}/sample.bam'", server.endpoint);
    let region = "SELECT count(*) FROM h WHERE rname = 'chr1' AND pos <= 60000 AND endpos >= 40000";
    let out = Command::new(env!("CARGO_BIN_EXE_datafusion-bam"))
        .args([
            "-q",
            "--format",
            "csv",
            "-c",
            &create,
            "-c",
            "SELECT count(qname) FROM h WHERE mapq >= 30",
            "-c",
            region,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let numbers: Vec<i64> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
    let expected = vec![
        samtools_count_of(&data("sample.bam"), &["-q", "30"]),
        samtools_count_of(&data("sample.bam"), &["chr1:40000-60000"]),
    ];
    assert_eq!(numbers, expected);

    // Plain HTTP cannot list a directory: the error says so.
    let directory = format!("{}/{BUCKET}/", server.endpoint);
    let create = format!("CREATE EXTERNAL TABLE d STORED AS BAM LOCATION '{directory}'");
    let out = Command::new(env!("CARGO_BIN_EXE_datafusion-bam")).args(["-q", "-c", &create]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&format!("BAM location {directory}: cannot list it")), "{err}");
    assert!(err.contains("an http(s) location must name a file"), "{err}");
}

/// `gs://` locations through object_store's Google Cloud Storage client. That client speaks the
/// GCS XML API (path-style GET, HEAD and `list-type=2` listing), which is the S3 protocol, so the
/// moto server stands in for Google's endpoint: `gcs_base_url` in the service account key points
/// the client at it, and `disable_oauth` leaves out the token exchange. The directory holds an
/// index beside its BAM files: only the `.bam` files are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reads_gs_locations() {
    const SECRET: &str = "key-id-not-to-be-printed";
    // The GCS client writes a `-` in a bucket name as `%2D`, which moto does not decode.
    const GS_BUCKET: &str = "bamgs";
    let server = S3Server::start();
    let upload = format!(
        "import boto3\n\
         s3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')\n\
         s3.create_bucket(Bucket='{GS_BUCKET}', ACL='public-read')\n\
         for name in ['sample.bam', 'sample.bam.bai', 'name_sorted.bam']:\n    s3.upload_file('{}/' + name, '{GS_BUCKET}', name, ExtraArgs={{'ACL': 'public-read'}})\n",
        server.endpoint,
        data("").display()
    );
    run(Command::new(moto_python()).args(["-c", &upload]));
    let key = format!(
        r#"{{"gcs_base_url": "{}", "disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": "{SECRET}"}}"#,
        server.endpoint
    );
    let options = format!("OPTIONS ('gcp.service_account_key' '{key}')");
    let sql = [
        format!("CREATE EXTERNAL TABLE g STORED AS BAM LOCATION 'gs://{GS_BUCKET}/sample.bam' {options}"),
        "SELECT count(qname) FROM g WHERE mapq >= 30".to_string(),
        "SELECT count(*) FROM g WHERE rname = 'chr1' AND pos <= 60000 AND endpos >= 40000".to_string(),
        "EXPLAIN SELECT qname FROM g WHERE rname = 'chr1' AND pos <= 60000 AND endpos >= 40000".to_string(),
        format!("CREATE EXTERNAL TABLE d STORED AS BAM LOCATION 'gs://{GS_BUCKET}/' {options}"),
        "SELECT count(*) FROM d".to_string(),
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_datafusion-bam"));
    cmd.args(["-q", "--format", "csv", "--maxrows", "inf"]);
    for statement in &sql {
        cmd.args(["-c", statement]);
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let numbers: Vec<i64> = stdout.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let sample = data("sample.bam");
    let expected = vec![
        samtools_count_of(&sample, &["-q", "30"]),
        samtools_count_of(&sample, &["chr1:40000-60000"]),
        samtools_count_of(&sample, &[]) + samtools_count_of(&data("name_sorted.bam"), &[]),
    ];
    assert_eq!(numbers, expected);
    assert!(
        stdout.contains("chunks") && stdout.contains("sample.bam.bai"),
        "the index comes from the store:\n{stdout}"
    );
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET), "credentials must not be printed");
}
