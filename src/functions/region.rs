//! `bam_region('x.bam', 'chr1:100000-200000', ...)`: the records overlapping regions given in
//! samtools' syntax, as `samtools view x.bam chr1:100000-200000` selects them (a record that
//! overlaps several of the regions appears once).
//!
//! It is a [`BamTable`] with the `region` option, so the index, partitioning and pushdown work as
//! for any BAM table.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, DataFusionError, Result};
use tokio::runtime::{Handle, RuntimeFlavor};

use super::literal_str;
use crate::datasource::table::BamTable;
use crate::options::region::parse_regions;
use crate::options::{AlignmentFormat, BamOptions};

/// The `bam_region` table function.
#[derive(Debug, Default)]
pub struct BamRegionFunction {
    runtime: Option<Handle>,
}

impl BamRegionFunction {
    /// Opens its tables on `runtime`, whose stores and clients then serve their scans too. Without
    /// one, a multi-threaded runtime the call runs in is used, or else a short-lived one.
    pub fn with_runtime(runtime: Handle) -> Self {
        Self { runtime: Some(runtime) }
    }
}

const USAGE: &str = "bam_region takes the path of a BAM file and one or more regions, as string literals: \
                     bam_region('x.bam', 'chr1:100000-200000', 'chr2')";

impl TableFunctionImpl for BamRegionFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let Some((path, regions)) = exprs.split_first() else { return plan_err!("{USAGE}") };
        let Some(path) = literal_str(path) else { return plan_err!("{USAGE}") };
        if regions.is_empty() {
            return plan_err!("{USAGE}");
        }
        let mut parsed = Vec::new();
        for r in regions {
            let Some(text) = literal_str(r) else { return plan_err!("{USAGE}") };
            parsed.extend(parse_regions(text)?);
        }
        let options = BamOptions::default().with_regions(parsed);
        // A `.cram` path is read as CRAM (one whose records need a reference FASTA takes a table
        // with option `reference` instead), `.sam` and `.sam.gz` as SAM.
        let options = options.with_format(AlignmentFormat::of_path(path));
        let session = args.session();
        // The runtime that owns the store's HTTP connections should outlive the call, so a
        // multi-threaded one (whose other workers drive I/O while this one waits) is preferred.
        let runtime = self
            .runtime
            .clone()
            .or_else(|| Handle::try_current().ok().filter(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread));
        // Table functions are synchronous, but finding the files and the tag columns is not: run
        // it to completion on a helper thread, outside any runtime's context.
        let table = std::thread::scope(|scope| {
            scope
                .spawn(|| match runtime {
                    Some(handle) => handle.block_on(BamTable::open(session, path, options)),
                    None => tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?
                        .block_on(BamTable::open(session, path, options)),
                })
                .join()
                .map_err(|_| DataFusionError::Execution("bam_region: opening the table failed".into()))?
        })?;
        Ok(Arc::new(table))
    }
}
