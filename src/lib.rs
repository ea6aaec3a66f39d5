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

// The folders form one chain, each using only those declared above it
// (docs/architecture.md; checked by tests/it/layout.rs).
mod error;
mod schema;
mod options;
mod record;
mod io;
mod bgzf;
mod decode;
mod formats;
mod write;
mod datasource;
mod functions;
pub mod codec;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::prelude::{DataFrame, SessionContext};

pub use datasource::file_format::{BamFormat, BamFormatFactory};
pub use datasource::listing::{bam_listing_table, bam_listing_table_of, table_url};
pub use datasource::source::BamSource;
pub use datasource::table::{BamTable, BamTableFactory};
pub use error::BamError;
pub use formats::cram::container::quiet_decode_panics;
pub use functions::depth::{BamDepthFunction, DepthTable};
pub use functions::header::BamHeaderFunction;
pub use functions::region::BamRegionFunction;
pub use io::store::{object_store_for, store_options};
pub use io::{progress, warnings};
pub use options::region::{parse_region, parse_regions, Region, RegionReference};
pub use options::{AlignmentFormat, BamOptions, OptionSpec, TagSelection, OPTIONS};
pub use schema::{IntWidth, TagKind, BAM_INT_TYPE_KEY, SAM_TYPE_KEY};
pub use write::parquet::{parquet_column_options, set_parquet_column_defaults};

/// Internals for the decode and encode benchmarks (`benches/decode.rs`); not a stable API.
#[doc(hidden)]
pub mod bench {
    pub use crate::bgzf::framing::{bgzf_reader, read_header, read_record_bytes, FileContext};
    pub use crate::decode::decoder::BatchDecoder;
    pub use crate::decode::pushdown::Prefilter;
    pub use crate::record::RawRecord;
    pub use crate::schema::{bam_schema, col, TagLayout};
    pub use crate::write::encode::RecordEncoder;
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
    /// Enables `STORED AS BAM` and the `bam_header('path')`,
    /// `bam_region('path', 'chr1:100-200', ...)` and `bam_depth('path')` table functions.
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
        self.register_udtf("bam_header", Arc::new(functions::header::BamHeaderFunction));
        self.register_udtf("bam_region", Arc::new(functions::region::BamRegionFunction::default()));
        self.register_udtf("bam_depth", Arc::new(functions::depth::BamDepthFunction));
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
