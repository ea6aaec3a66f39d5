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
//! The table has one row per alignment record; see [`schema::bam_schema`] for the columns.

pub mod codec;
pub mod convert;
pub mod decode;
pub mod file_info;
pub mod format;
pub mod header_fn;
pub mod index;
pub mod infer;
pub mod io;
pub mod options;
pub mod output_guard;
pub mod partition;
pub mod progress;
pub mod pushdown;
pub mod record;
pub mod region_fn;
pub mod scan;
pub mod schema;
pub mod table;
pub mod warnings;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::prelude::{DataFrame, SessionContext};
use object_store::ObjectStoreExt;

pub use format::{BamFormat, BamFormatFactory, BamSource};
pub use options::{BamOptions, TagSelection};
pub use table::BamTable;

/// The key under which `STORED AS BAM` finds its table factory (DataFusion upper-cases it).
const STORED_AS: &str = "BAM";

/// Adds the BAM file format to a session state, so `CREATE EXTERNAL TABLE ... STORED AS BAM`
/// works in any session built from it.
pub fn register_bam_format(state: &mut SessionState) -> Result<()> {
    state.register_file_format(Arc::new(BamFormatFactory::default()), false)?;
    state.table_factories_mut().insert(STORED_AS.to_string(), Arc::new(table::BamTableFactory::default()));
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
        self.register_udtf("bam_region", Arc::new(region_fn::BamRegionFunction));
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

/// A table location as a [`ListingTableUrl`]: a file, a directory, or a glob, also in URLs with
/// a scheme (`s3://bucket/runs/*.bam`; DataFusion's parser takes globs in local paths only). In
/// URLs, `*` and `[` start a glob (`?` starts the query part of a URL).
pub fn table_url(location: &str) -> Result<ListingTableUrl> {
    let remote = url::Url::parse(location).is_ok_and(|u| u.scheme().len() > 1 && u.scheme() != "file");
    if let Some(glob_start) = location.find(['*', '[']).filter(|_| remote) {
        let split = location[..glob_start].rfind('/').map_or(0, |i| i + 1);
        let (base, pattern) = location.split_at(split);
        let base = url::Url::parse(base).map_err(|e| DataFusionError::Plan(format!("invalid location {location}: {e}")))?;
        let glob = glob::Pattern::new(pattern).map_err(|e| DataFusionError::Plan(format!("invalid glob in {location}: {e}")))?;
        return ListingTableUrl::try_new(base, Some(glob));
    }
    ListingTableUrl::parse(location)
}

/// A listing table of BAM files (a file, a directory or a glob).
pub async fn bam_listing_table(state: &dyn Session, path: &str, options: BamOptions) -> Result<Arc<ListingTable>> {
    let url = table_url(path)?;
    // DataFusion's listing skips zero-byte files; one named explicitly is an error instead.
    if !url.is_collection() && url.get_glob().is_none() {
        let store = state.runtime_env().object_store(url.object_store())?;
        if let Ok(meta) = store.head(url.prefix()).await {
            if meta.size == 0 {
                return Err(DataFusionError::Execution(format!(
                    "BAM file {}: the file is empty: not a BAM file",
                    url.prefix()
                )));
            }
        }
    }
    let listing = ListingOptions::new(Arc::new(BamFormat::new(options)))
        .with_file_extension(format!(".{}", format::BAM_EXTENSION));
    let schema = listing.infer_schema(state, &url).await?;
    let config = ListingTableConfig::new(url).with_listing_options(listing).with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

#[cfg(test)]
mod tests {
    use super::table_url;

    #[test]
    fn globs_in_urls_are_split_off() {
        let url = table_url("s3://bucket/runs/2024/*.bam").unwrap();
        assert_eq!((url.scheme(), url.prefix().as_ref(), url.get_glob().as_ref().map(|g| g.as_str())), ("s3", "runs/2024", Some("*.bam")));
        assert!(url.is_collection());
        let url = table_url("gs://bucket/lane[12]/x.bam").unwrap();
        assert_eq!((url.prefix().as_ref(), url.get_glob().as_ref().map(|g| g.as_str())), ("", Some("lane[12]/x.bam")));
        for plain in ["s3://bucket/runs/x.bam", "s3://bucket/runs/", "https://example.org/x.bam"] {
            assert!(table_url(plain).unwrap().get_glob().is_none(), "{plain}");
        }
        assert!(table_url("/data/*.bam").unwrap().get_glob().is_some(), "local globs as DataFusion parses them");
        assert!(table_url("s3://bucket/runs/[.bam").is_err(), "an invalid pattern is an error");
    }
}
