//! Integration tests: one binary, so the dependencies link once.

mod bad_input;
mod codec;
mod corpus;
mod damage;
mod cram;
mod depth;
mod fidelity;
mod fuzz;
mod odd_crams;
mod layout;
mod load;
mod object_stores;
mod oracle;
mod partitions;
mod regions;
mod s3_server;
mod sam;
mod sql;
mod table;
mod write;

use arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use datafusion_bam::BamSessionExt;

/// A session with BAM enabled and paths usable as tables.
pub fn context() -> SessionContext {
    let ctx = SessionContext::new().enable_url_table();
    ctx.enable_bam().unwrap();
    ctx
}

pub async fn query(ctx: &SessionContext, sql: &str) -> datafusion::error::Result<Vec<RecordBatch>> {
    ctx.sql(sql).await?.collect().await
}
