//! BAM files as Apache DataFusion tables.
//!
//! ```no_run
//! use datafusion::prelude::SessionContext;
//! use datafusion_bam::{BamOptions, BamSessionExt};
//!
//! # async fn run() -> datafusion::error::Result<()> {
//! let ctx = SessionContext::new();
//! ctx.enable_bam()?; // `STORED AS BAM` and `bam_header()` in SQL
//! ctx.register_bam("reads", "tests/data/sample.bam", BamOptions::default()).await?;
//! ctx.sql("COPY (SELECT * FROM reads) TO 'reads.parquet' STORED AS PARQUET").await?.collect().await?;
//! # Ok(()) }
//! ```
//!
//! The table has one row per alignment record; the README lists its columns.

// The modules form one chain, each using only those above it (README, "Layout").
mod schema;
mod parquet_output;
mod record;
mod mismatches;
mod region;
mod options;
mod io;
mod store;
pub mod progress;
pub mod warnings;
mod framing;
mod cram;
mod sam;
mod resync;
mod index;
mod file_info;
mod partition;
mod decode;
mod pushdown;
mod scan;
mod cram_scan;
mod sam_scan;
mod infer;
mod encode;
mod sink;
mod format;
mod listing;
mod table;
pub mod codec;
mod header_fn;
mod region_fn;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::prelude::{DataFrame, SessionContext};

pub use format::{BamFormat, BamFormatFactory, BamSource};
pub use header_fn::BamHeaderFunction;
pub use listing::{bam_listing_table, bam_listing_table_of, table_url};
pub use options::{AlignmentFormat, BamOptions, TagSelection};
pub use parquet_output::{parquet_column_options, set_parquet_column_defaults};
pub use region::{parse_region, parse_regions, Region, RegionReference};
pub use region_fn::BamRegionFunction;
pub use schema::{TagKind, SAM_TYPE_KEY};
pub use store::{object_store_for, store_options};
pub use table::{BamTable, BamTableFactory};

/// Internals for the decode benchmark (`benches/decode.rs`); not a stable API.
#[doc(hidden)]
pub mod bench {
    pub use crate::decode::BatchDecoder;
    pub use crate::framing::{bgzf_reader, read_header, read_record_bytes, FileContext};
    pub use crate::pushdown::Prefilter;
    pub use crate::record::RawRecord;
    pub use crate::schema::{bam_schema, col, TagLayout};
}

/// Adds the BAM, CRAM and SAM file formats to a session state, so `CREATE EXTERNAL TABLE ...
/// STORED AS BAM` (or `CRAM`, or `SAM`) works in any session built from it.
pub fn register_bam_format(state: &mut SessionState) -> Result<()> {
    for format in AlignmentFormat::ALL {
        let options = BamOptions::default().with_format(format);
        state.register_file_format(Arc::new(BamFormatFactory::new(options)), false)?;
        // DataFusion looks table factories up by the upper-cased `STORED AS` name.
        state.table_factories_mut().insert(format.name().to_string(), Arc::new(BamTableFactory::for_format(format)));
    }
    Ok(())
}

/// BAM support for a [`SessionContext`].
#[async_trait]
pub trait BamSessionExt {
    /// Enables `STORED AS BAM` and the `bam_header('path')` and
    /// `bam_region('path', 'chr1:100-200', ...)` table functions.
    fn enable_bam(&self) -> Result<()>;

    /// Registers a BAM file, a directory of `.bam` files or a glob as table `name`.
    async fn register_bam(&self, name: &str, path: &str, options: BamOptions) -> Result<()>;

    /// Reads a BAM file, directory or glob as a [`DataFrame`].
    async fn read_bam(&self, path: &str, options: BamOptions) -> Result<DataFrame>;
}

#[async_trait]
impl BamSessionExt for SessionContext {
    fn enable_bam(&self) -> Result<()> {
        register_bam_format(&mut self.state_ref().write())?;
        self.register_udtf("bam_header", Arc::new(header_fn::BamHeaderFunction));
        self.register_udtf("bam_region", Arc::new(region_fn::BamRegionFunction::default()));
        Ok(())
    }

    async fn register_bam(&self, name: &str, path: &str, options: BamOptions) -> Result<()> {
        let table = bam_listing_table(&self.state(), path, options).await?;
        self.register_table(name, table)?;
        Ok(())
    }

    async fn read_bam(&self, path: &str, options: BamOptions) -> Result<DataFrame> {
        let table = bam_listing_table(&self.state(), path, options).await?;
        self.read_table(table)
    }
}
