//! A Ballista executor that runs BAM scans: Ballista's own executor binary (same options,
//! `--help`), with the BAM codecs.

use std::sync::Arc;

use ballista_core::object_store::{runtime_env_with_s3_support, session_config_with_s3_support};
use ballista_executor::config::Config;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use clap::Parser;
use datafusion_bam_ballista::{logical_codec, physical_codec, with_bam_codecs};

#[tokio::main]
async fn main() -> ballista_core::error::Result<()> {
    let mut config: ExecutorProcessConfig = Config::parse().try_into()?;
    config.override_logical_codec = Some(logical_codec());
    config.override_physical_codec = Some(physical_codec());
    config.override_config_producer = Some(Arc::new(|| with_bam_codecs(session_config_with_s3_support())));
    config.override_runtime_producer = Some(Arc::new(runtime_env_with_s3_support));
    start_executor_process(Arc::new(config)).await
}
