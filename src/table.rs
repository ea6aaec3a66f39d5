//! A BAM table as a self-contained [`TableProvider`] that takes its filters at planning time.
//!
//! In one DataFusion process a `ListingTable` of [`BamFormat`](crate::BamFormat) receives its
//! filters through physical filter pushdown. Where the scan sits behind a boundary that pushdown
//! cannot cross (datafusion-python's FFI, a plan sent to another process), [`BamTable`] instead
//! declares the filters the decoder evaluates exactly as `Exact` and hands them to the scan
//! itself, so region, MAPQ and flag filters still use the index and the fixed-size fields.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::datasource::provider::DefaultTableFactory;
use datafusion::logical_expr::CreateExternalTable;
use datafusion::common::{internal_err, plan_err, DFSchema, Result};
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::physical_plan::FileScanConfigBuilder;
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{create_physical_expr, PhysicalExpr};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;

use crate::format::{BamFormat, BamSource};
use crate::pushdown::can_prefilter;
use crate::{bam_listing_table, BamOptions};

/// BAM files (a file, directory or glob) as one table, with filter pushdown at planning time.
#[derive(Debug)]
pub struct BamTable {
    listing: Arc<ListingTable>,
}

impl BamTable {
    /// Opens the files at `path` (reading their headers to find the tag columns).
    pub async fn open(state: &dyn Session, path: &str, options: BamOptions) -> Result<Self> {
        Ok(Self { listing: bam_listing_table(state, path, options).await? })
    }

    /// A table over a listing table of [`BamFormat`](crate::BamFormat) files.
    pub fn from_listing(listing: Arc<ListingTable>) -> Self {
        Self { listing }
    }

    /// Where the files are (URLs, or local paths with their glob) and the table's options.
    pub fn locations_and_options(&self) -> Result<(Vec<String>, BamOptions)> {
        let Some(format) = self.listing.options().format.downcast_ref::<BamFormat>() else {
            return internal_err!("a BAM table over another file format");
        };
        let locations = self
            .listing
            .table_paths()
            .iter()
            .map(|url| match (url.get_glob(), AsRef::<url::Url>::as_ref(url).to_file_path()) {
                (Some(glob), Ok(dir)) => format!("{}/{}", dir.display(), glob.as_str()),
                // A remote directory URL ends with `/`.
                (Some(glob), Err(_)) => format!("{}{}", url.as_str(), glob.as_str()),
                (None, _) => url.as_str().to_string(),
            })
            .collect();
        Ok((locations, format.options().clone()))
    }

    /// `expr` (whose columns may carry the table's name in the query) over the table schema.
    fn physical(&self, expr: &Expr, state: Option<&dyn Session>) -> Result<Arc<dyn PhysicalExpr>> {
        let expr = unnormalize_col(expr.clone());
        let schema = DFSchema::try_from(self.schema())?;
        let props = state.map(|s| s.execution_props().clone()).unwrap_or_default();
        create_physical_expr(&expr, &schema, &props, &PhysicalPlanningContext::default())
    }
}

#[async_trait]
impl TableProvider for BamTable {
    fn schema(&self) -> SchemaRef {
        self.listing.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// `Exact` for what the decoder evaluates on fixed-size fields; DataFusion filters the rest.
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        let schema = self.schema();
        Ok(filters
            .iter()
            .map(|f| match self.physical(f, None) {
                Ok(p) if can_prefilter(&p, &schema) => TableProviderFilterPushDown::Exact,
                _ => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.listing.scan(state, projection, &[], limit).await?;
        if filters.is_empty() {
            return Ok(plan);
        }
        let predicates = filters.iter().map(|f| self.physical(f, Some(state))).collect::<Result<Vec<_>>>()?;
        let Some((config, source)) = plan.downcast_ref::<DataSourceExec>().and_then(|e| e.downcast_to_file_source::<BamSource>())
        else {
            // No files: an empty plan, nothing to filter.
            if plan.is::<EmptyExec>() {
                return Ok(plan);
            }
            return internal_err!("BAM table scan is not a BAM DataSourceExec: {}", plan.name());
        };
        let source = source.with_predicates(predicates);
        let config = FileScanConfigBuilder::from(config.clone()).with_source(Arc::new(source)).build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// The factory of `CREATE EXTERNAL TABLE ... STORED AS BAM`: DataFusion's listing tables, except
/// - for a glob in a URL with a scheme (`s3://bucket/runs/*.bam`), which DataFusion's location
///   parser does not take: such a location becomes a [`BamTable`] (see [`crate::table_url`]);
/// - for a directory URL with a scheme (`s3://bucket/runs/`), where DataFusion would read every
///   file (it narrows only local directories to `*.bam`), the indexes beside the BAM files too:
///   such a location lists its `.bam` files only.
#[derive(Debug, Default)]
pub struct BamTableFactory {
    listing: DefaultTableFactory,
}

#[async_trait]
impl TableProviderFactory for BamTableFactory {
    async fn create(&self, state: &dyn Session, cmd: &CreateExternalTable) -> Result<Arc<dyn TableProvider>> {
        let remote = |location: &String| crate::table_url(location).ok().filter(|url| url.scheme() != "file");
        let remote_glob = |location: &String| remote(location).is_some_and(|url| url.get_glob().is_some());
        let [location] = cmd.locations.as_slice() else {
            if let Some(location) = cmd.locations.iter().find(|l| remote_glob(l)) {
                return plan_err!("BAM location {location}: a glob in a URL must be the table's only location");
            }
            return self.listing.create(state, cmd).await;
        };
        let plain = cmd.table_partition_cols.is_empty() && cmd.schema.fields().is_empty();
        let url = remote(location);
        if plain && url.as_ref().is_some_and(|url| url.is_collection() && url.get_glob().is_none()) {
            return Ok(bam_listing_table(state, location, BamOptions::from_map(&cmd.options)?).await?);
        }
        if !url.is_some_and(|url| url.get_glob().is_some()) {
            return self.listing.create(state, cmd).await;
        }
        if !plain {
            return plan_err!(
                "BAM location {location}: a glob in a URL cannot be combined with a column list or PARTITIONED BY; \
                 name the directory instead"
            );
        }
        Ok(Arc::new(BamTable::open(state, location, BamOptions::from_map(&cmd.options)?).await?))
    }
}
