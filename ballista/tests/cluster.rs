//! A Ballista scheduler and two executors on loopback run a `COPY` over several BAM files; the
//! Parquet they write holds exactly the rows a local run gives.

use std::path::Path;
use std::sync::Arc;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_executor::new_standalone_executor_from_state;
use ballista_scheduler::standalone::new_standalone_scheduler_from_state;
use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_bam::{BamDepthFunction, BamOptions, BamSessionExt, BamTable};
use datafusion_bam_ballista::bam_session_state;

const EXECUTORS: usize = 2;

fn repo_data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data").join(name)
}

/// Rows as sorted text lines, for comparing results regardless of order.
fn sorted_lines(batches: &[RecordBatch]) -> Vec<String> {
    let text = datafusion::arrow::util::pretty::pretty_format_batches(batches).unwrap().to_string();
    let mut lines: Vec<String> = text.lines().filter(|l| l.starts_with('|')).map(str::to_string).collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copy_on_a_cluster_equals_a_local_run() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    for name in ["sample.bam", "name_sorted.bam", "unaligned.bam"] {
        std::fs::copy(repo_data(name), inputs.join(name)).unwrap();
    }
    let inputs = format!("{}/", inputs.display());

    // The cluster: a scheduler and two executors, each with the BAM codecs.
    // Small files split into byte ranges too, as large ones do.
    let config = SessionConfig::new_with_ballista()
        .with_target_partitions(4)
        .set_usize("datafusion.optimizer.repartition_file_min_size", 0);
    let state = bam_session_state(config).unwrap();
    let scheduler = new_standalone_scheduler_from_state(&state).await.unwrap();
    let url = format!("http://localhost:{}", scheduler.port());
    for _ in 0..EXECUTORS {
        let client = loop {
            match SchedulerGrpcClient::connect(url.clone()).await {
                Ok(client) => break client,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        };
        new_standalone_executor_from_state(client, 2, &state).await.unwrap();
    }
    let cluster = SessionContext::remote_with_state(&format!("df://localhost:{}", scheduler.port()), state.clone())
        .await
        .unwrap();
    let table = BamTable::open(&cluster.state(), &inputs, BamOptions::default()).await.unwrap();
    cluster.register_table("reads", Arc::new(table)).unwrap();

    let query = "SELECT qname, flag, rname, pos, mapq, cigar, seq, tags FROM reads WHERE mapq >= 30 OR rname IS NULL";
    let plan = cluster.sql(&format!("EXPLAIN {query}")).await.unwrap().collect().await.unwrap();
    let plan = datafusion::arrow::util::pretty::pretty_format_batches(&plan).unwrap().to_string();
    // The scheduler's stages, with the files split into byte ranges and the filter in the scan.
    assert!(
        plan.contains("distributed_plan")
            && plan.contains("ShuffleWriterExec")
            && plan.contains("sample.bam:0..")
            && plan.contains("predicate=mapq"),
        "the query is planned by the scheduler:\n{plan}"
    );
    let out = dir.path().join("out");
    let copy = format!("COPY ({query}) TO '{}/' STORED AS PARQUET", out.display());
    cluster.sql(&copy).await.unwrap().collect().await.unwrap();

    let local = SessionContext::new();
    local.register_bam("reads", &inputs, BamOptions::default()).await.unwrap();
    let expected = local.sql(query).await.unwrap().collect().await.unwrap();
    let written =
        local.read_parquet(format!("{}/", out.display()), Default::default()).await.unwrap().collect().await.unwrap();
    let rows: usize = written.iter().map(|b| b.num_rows()).sum();
    assert!(rows > 40_000, "{rows} rows written");
    assert_eq!(sorted_lines(&written), sorted_lines(&expected));

    // bam_depth on the cluster, one task per piece: windows and a region's runs, as locally.
    cluster.register_udtf("bam_depth", Arc::new(BamDepthFunction));
    local.register_udtf("bam_depth", Arc::new(BamDepthFunction));
    let sample = repo_data("sample.bam");
    // Without an index, one task counts the file's byte ranges and merges their edges.
    let unindexed = dir.path().join("unindexed.bam");
    std::fs::copy(&sample, &unindexed).unwrap();
    for query in [
        format!("SELECT * FROM bam_depth('{}', 'window=5000 thresholds=1,10')", sample.display()),
        format!("SELECT * FROM bam_depth('{}', 'chr1:1-100000')", sample.display()),
        format!("SELECT * FROM bam_depth('{}', 'max_span=1000')", unindexed.display()),
    ] {
        let got = cluster.sql(&query).await.unwrap().collect().await.unwrap();
        let expected = local.sql(&query).await.unwrap().collect().await.unwrap();
        assert!(got.iter().map(|b| b.num_rows()).sum::<usize>() > 50, "{query}");
        let (got, expected) = (sorted_lines(&got), sorted_lines(&expected));
        let only_got: Vec<_> = got.iter().filter(|l| !expected.contains(l)).collect();
        let only_expected: Vec<_> = expected.iter().filter(|l| !got.contains(l)).collect();
        assert!(only_got.is_empty() && only_expected.is_empty(), "{query}: {only_got:?} instead of {only_expected:?}");
    }

    // COPY ... STORED AS BAM of a cluster query, one BAM per value of a PARTITIONED BY column:
    // the executors write BAM (the sink travels in the plan), each file as samtools reads it.
    let table = BamTable::open(&cluster.state(), sample.to_str().unwrap(), BamOptions::default()).await.unwrap();
    cluster.register_table("s", Arc::new(table)).unwrap();
    local.register_bam("s", sample.to_str().unwrap(), BamOptions::default()).await.unwrap();
    let bams = dir.path().join("bams");
    let select = "SELECT *, CASE WHEN mapq >= 30 THEN 'good' ELSE 'poor' END AS quality FROM s";
    let copy = format!("COPY ({select}) TO '{}/' STORED AS BAM PARTITIONED BY (quality)", bams.display());
    cluster.sql(&copy).await.unwrap().collect().await.unwrap();
    for quality in ["good", "poor"] {
        let files: Vec<_> =
            std::fs::read_dir(bams.join(format!("quality={quality}"))).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(!files.is_empty() && files.iter().all(|f| f.extension().is_some_and(|e| e == "bam")), "{files:?}");
        let mut records = 0;
        for file in &files {
            let out = std::process::Command::new("samtools").args(["view", "-c"]).arg(file).output().unwrap();
            assert!(out.status.success(), "samtools cannot read {}", file.display());
            records += String::from_utf8(out.stdout).unwrap().trim().parse::<usize>().unwrap();
        }
        let count = format!("SELECT count(*) FROM ({select}) WHERE quality = '{quality}'");
        let expected = local.sql(&count).await.unwrap().collect().await.unwrap();
        let expected = datafusion::arrow::array::AsArray::as_primitive::<datafusion::arrow::datatypes::Int64Type>(
            expected[0].column(0),
        )
        .value(0);
        assert_eq!(records as i64, expected, "quality={quality}");
    }
}

/// Child processes killed on drop.
struct Processes(Vec<std::process::Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The shipped binaries as separate processes: a scheduler and two executors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shipped_binaries_run_a_cluster() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let scheduler_port = free_port();
    let mut processes = Processes(vec![Command::new(env!("CARGO_BIN_EXE_bam-ballista-scheduler"))
        .args(["--bind-host", "127.0.0.1", "--bind-port", &scheduler_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()]);
    for i in 0..EXECUTORS {
        let work = dir.path().join(format!("executor-{i}"));
        std::fs::create_dir(&work).unwrap();
        processes.0.push(
            Command::new(env!("CARGO_BIN_EXE_bam-ballista-executor"))
                .args(["--scheduler-host", "127.0.0.1", "--scheduler-port", &scheduler_port.to_string()])
                .args(["--bind-host", "127.0.0.1", "--external-host", "127.0.0.1"])
                .args(["--bind-port", &free_port().to_string(), "--bind-grpc-port", &free_port().to_string()])
                .args(["--scheduler-connect-timeout-seconds", "30", "--work-dir", work.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }

    // Small files split into byte ranges too, as large ones do.
    let config = SessionConfig::new_with_ballista()
        .with_target_partitions(4)
        .set_usize("datafusion.optimizer.repartition_file_min_size", 0);
    let state = bam_session_state(config).unwrap();
    let sample = repo_data("sample.bam");
    let query = "SELECT rname, count(*) AS n, sum(mapq) AS q FROM reads WHERE mapq >= 30 GROUP BY rname ORDER BY rname";
    // The executors register within seconds; until then the scheduler has nowhere to run tasks.
    let started = std::time::Instant::now();
    let answer = loop {
        let attempt = async {
            let cluster =
                SessionContext::remote_with_state(&format!("df://127.0.0.1:{scheduler_port}"), state.clone()).await?;
            let table = BamTable::open(&cluster.state(), sample.to_str().unwrap(), BamOptions::default()).await?;
            cluster.register_table("reads", Arc::new(table))?;
            cluster.sql(query).await?.collect().await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(60), attempt).await {
            Ok(Ok(batches)) => break batches,
            Ok(Err(e)) if started.elapsed() < std::time::Duration::from_secs(120) => {
                eprintln!("cluster not ready yet: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Ok(Err(e)) => panic!("the cluster failed: {e}"),
            Err(_) => panic!("the cluster did not answer within 60 s"),
        }
    };
    let local = SessionContext::new();
    local.register_bam("reads", sample.to_str().unwrap(), BamOptions::default()).await.unwrap();
    let expected = local.sql(query).await.unwrap().collect().await.unwrap();
    assert_eq!(sorted_lines(&answer), sorted_lines(&expected));
    drop(processes);
}
