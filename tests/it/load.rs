//! Load: many concurrent queries on one session give the answers they give alone, within the
//! session's memory pool, which the BAM scan accounts for its buffers.

use std::sync::Arc;

use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_bam::{BamOptions, BamSessionExt};

use crate::oracle::data;
use crate::query;

const QUERIES: [&str; 8] = [
    "SELECT count(*) FROM s",
    "SELECT rname, count(*) FROM s GROUP BY rname ORDER BY rname",
    "SELECT count(*) FROM s WHERE rname = 'chr1' AND pos <= 50000 AND endpos >= 10000",
    "SELECT count(*) FROM s WHERE mapq >= 30 AND flag & 1024 = 0",
    "SELECT qname, count(*) AS c FROM n GROUP BY qname ORDER BY c DESC, qname LIMIT 5",
    "SELECT sum(length(seq)), sum(length(qual)) FROM u",
    "SELECT qname, pos FROM s ORDER BY pos DESC, qname LIMIT 10",
    "SELECT count(DISTINCT qname) FROM s",
];

async fn session(pool: Arc<dyn MemoryPool>) -> SessionContext {
    let runtime = RuntimeEnvBuilder::new().with_memory_pool(pool).build_arc().unwrap();
    let ctx = SessionContext::new_with_config_rt(SessionConfig::new().with_target_partitions(3), runtime);
    ctx.enable_bam().unwrap();
    for (name, file) in [("s", "sample.bam"), ("n", "name_sorted.bam"), ("u", "unaligned.bam")] {
        ctx.register_bam(name, data(file).to_str().unwrap(), BamOptions::default()).await.unwrap();
    }
    ctx
}

async fn answer(ctx: &SessionContext, sql: &str) -> String {
    let batches = query(ctx, sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_queries_answer_as_alone_within_the_memory_pool() {
    let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(512 << 20));
    let ctx = session(Arc::clone(&pool)).await;
    let mut alone = Vec::new();
    for sql in QUERIES {
        alone.push(answer(&ctx, sql).await);
    }
    // Every query four times, all at once.
    let tasks: Vec<_> = (0..4 * QUERIES.len())
        .map(|i| {
            let ctx = ctx.clone();
            tokio::spawn(async move { (i % QUERIES.len(), answer(&ctx, QUERIES[i % QUERIES.len()]).await) })
        })
        .collect();
    for task in tasks {
        let (q, got) = task.await.unwrap();
        assert_eq!(got, alone[q], "{} under load", QUERIES[q]);
    }
    assert_eq!(pool.reserved(), 0, "every reservation is released");
}

#[tokio::test]
async fn the_scan_reserves_its_buffers_in_the_memory_pool() {
    let ctx = session(Arc::new(GreedyMemoryPool::new(1 << 20))).await;
    let err = query(&ctx, "SELECT * FROM s").await.unwrap_err().to_string();
    assert!(err.contains("Resources exhausted") && err.contains("BAM scan of"), "{err}");
}
