//! A Ballista scheduler that plans BAM tables: Ballista's own scheduler binary (same options,
//! `--help`), with the BAM codecs and `STORED AS BAM` in its sessions.

use std::sync::Arc;

use ballista_core::object_store::{session_config_with_s3_support, session_state_with_s3_support};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{Config, SchedulerConfig};
use ballista_scheduler::scheduler_process::start_server;
use clap::Parser;
use datafusion_bam_ballista::{logical_codec, physical_codec, with_bam_codecs};

fn main() -> ballista_core::error::Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_io().enable_time().thread_stack_size(32 << 20).build()?;
    runtime.block_on(run())
}

async fn run() -> ballista_core::error::Result<()> {
    let opt = Config::parse();
    let addr = format!("{}:{}", opt.bind_host, opt.bind_port)
        .parse()
        .map_err(|e: std::net::AddrParseError| ballista_core::error::BallistaError::Configuration(e.to_string()))?;
    let mut config: SchedulerConfig = opt.try_into()?;
    config.override_logical_codec = Some(logical_codec());
    config.override_physical_codec = Some(physical_codec());
    let config = config
        .with_override_config_producer(Arc::new(|| with_bam_codecs(session_config_with_s3_support())))
        .with_override_session_builder(Arc::new(|session_config| {
            let mut state = session_state_with_s3_support(session_config)?;
            datafusion_bam::register_bam_format(&mut state)?;
            Ok(state)
        }));
    let cluster = BallistaCluster::new_from_config(&config).await?;
    start_server(cluster, addr, Arc::new(config)).await
}
