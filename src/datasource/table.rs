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
use datafusion::common::{internal_err, plan_err, DFSchema, Result};
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::physical_plan::FileScanConfigBuilder;
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::CreateExternalTable;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{create_physical_expr, PhysicalExpr};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;

use crate::datasource::file_format::BamFormat;
use crate::datasource::listing::{self, bam_listing_table_of};
use crate::datasource::source::BamSource;
use crate::decode::pushdown::{can_prefilter, region_predicate};
use crate::io::progress::Tally;
use crate::io::store::{object_store_for, store_options};
use crate::options::region::Region;
use crate::options::{AlignmentFormat, BamOptions};
use arrow::datatypes::DataType;

/// BAM files (a file, directory or glob) as one table, with filter pushdown at planning time.
#[derive(Debug)]
pub struct BamTable {
    listing: Arc<ListingTable>,
    /// The progress counters of the caller (besides the process's), if it keeps its own.
    tally: Option<Arc<Tally>>,
}

impl BamTable {
    /// Opens the files at `path` (reading their headers to find the tag columns).
    pub async fn open(state: &dyn Session, path: &str, options: BamOptions) -> Result<Self> {
        Self::open_all(state, &[path], options).await
    }

    /// Opens the files at several locations as one table (see [`bam_listing_table_of`]).
    pub async fn open_all(state: &dyn Session, locations: &[&str], options: BamOptions) -> Result<Self> {
        Ok(Self { listing: bam_listing_table_of(state, locations, options).await?, tally: None })
    }

    /// Counts what this table's scans read in `tally` too, besides the process's counters (see
    /// [`crate::progress`]): a caller's own progress, apart from other scans running at once. It
    /// stays in this process: a plan sent to another does not count here.
    pub fn with_tally(self, tally: Arc<Tally>) -> Self {
        Self { tally: Some(tally), ..self }
    }

    /// A table over a listing table of [`BamFormat`](crate::BamFormat) files.
    pub fn from_listing(listing: Arc<ListingTable>) -> Self {
        Self { listing, tally: None }
    }

    /// Where the files are (URLs, or local paths with their glob) and the table's options.
    pub fn locations_and_options(&self) -> Result<(Vec<String>, BamOptions)> {
        let Some(format) = self.listing.options().format.downcast_ref::<BamFormat>() else {
            return internal_err!("a BAM table over another file format");
        };
        let locations = self.listing.table_paths().iter().map(listing::location_string).collect();
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

    /// `Exact` for filters of partition columns only, which choose the files (as in the listing
    /// table), and for what the decoder evaluates on fixed-size fields; DataFusion filters the rest.
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        let schema = self.schema();
        let of_listing = self.listing.supports_filters_pushdown(filters)?;
        Ok(filters
            .iter()
            .zip(of_listing)
            .map(|(f, listing)| match (listing, self.physical(f, None)) {
                (TableProviderFilterPushDown::Exact, _) => TableProviderFilterPushDown::Exact,
                (_, Ok(p)) if can_prefilter(&p, &schema) => TableProviderFilterPushDown::Exact,
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
        self.scan_within(state, projection, filters, limit, &[]).await
    }
}

impl BamTable {
    /// A scan as [`TableProvider::scan`] makes it, of the records overlapping `regions` too (as
    /// the `region` option selects them, through the index), so that one table serves scans of
    /// several regions.
    pub async fn scan_within(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
        regions: &[Region],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Partition-column filters prune the listing's files; the others go to the decoder.
        let of_listing = self.listing.supports_filters_pushdown(&filters.iter().collect::<Vec<_>>())?;
        let (file_filters, record_filters): (Vec<_>, Vec<_>) =
            filters.iter().zip(of_listing).partition(|(_, listing)| *listing == TableProviderFilterPushDown::Exact);
        let file_filters: Vec<Expr> = file_filters.into_iter().map(|(f, _)| f.clone()).collect();
        let plan = self.listing.scan(state, projection, &file_filters, limit).await?;
        if record_filters.is_empty() && regions.is_empty() && self.tally.is_none() {
            return Ok(plan);
        }
        let mut predicates =
            record_filters.iter().map(|(f, _)| self.physical(f, Some(state))).collect::<Result<Vec<_>>>()?;
        let Some((config, source)) =
            plan.downcast_ref::<DataSourceExec>().and_then(|e| e.downcast_to_file_source::<BamSource>())
        else {
            // No files: an empty plan, nothing to filter.
            if plan.is::<EmptyExec>() {
                return Ok(plan);
            }
            return internal_err!("BAM table scan is not a BAM DataSourceExec: {}", plan.name());
        };
        if !regions.is_empty() {
            predicates.push(region_predicate(regions, source.table_schema.file_schema()));
        }
        let source = if predicates.is_empty() { source.clone() } else { source.with_predicates(predicates) };
        let source = source.with_tally(self.tally.clone());
        let config = FileScanConfigBuilder::from(config.clone()).with_source(Arc::new(source)).build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// The factory of `CREATE EXTERNAL TABLE ... STORED AS BAM`. The store of a remote location is
/// built from the statement's `aws.*`, `gcp.*` or `http.*` options (see [`object_store_for`]).
/// Unlike DataFusion's listing factory
/// it reads only the `.bam` files of every directory (local or remote), infers one schema over
/// all files of all locations (files with different tags share a table), and takes globs in
/// URLs (`s3://bucket/runs/*.bam`, see [`crate::datasource::listing::table_url`]); such a table is a [`BamTable`], so
/// that a plan sent to another process keeps its glob. Hive-style partition directories
/// (`sample=a/`) become columns as in DataFusion: inferred, named by `PARTITIONED BY`, or typed in
/// a column list that holds only partition columns (the other columns come from the files).
///
/// The same factory makes `STORED AS CRAM` tables ([`BamTableFactory::for_format`]).
#[derive(Debug, Default)]
pub struct BamTableFactory {
    format: AlignmentFormat,
}

impl BamTableFactory {
    /// The factory of `STORED AS BAM` or `STORED AS CRAM` tables.
    pub fn for_format(format: AlignmentFormat) -> Self {
        Self { format }
    }
}

#[async_trait]
impl TableProviderFactory for BamTableFactory {
    async fn create(&self, state: &dyn Session, cmd: &CreateExternalTable) -> Result<Arc<dyn TableProvider>> {
        let options = BamOptions::default().with_format(self.format).with_map(&cmd.options)?;
        let stored_as = self.format.name();
        let urls = cmd
            .locations
            .iter()
            .map(|location| Ok(listing::table_url(location)?.with_table_ref(cmd.name.clone())))
            .collect::<Result<Vec<_>>>()?;
        let Some(first) = urls.first() else {
            return plan_err!("CREATE EXTERNAL TABLE ... STORED AS {stored_as} needs a LOCATION");
        };
        // The locations share one store (checked with the listing): its options come with them.
        object_store_for(state.runtime_env(), first, &store_options(&cmd.options)).await?;
        let remote_glob = urls.iter().position(|url| url.scheme() != "file" && url.get_glob().is_some());

        let mut listing = listing::bam_listing_options(&urls, options);
        // Columns inferred from the first location need checking against the others only.
        let (partition_columns, unchecked) = match partition_columns(cmd)? {
            Some(columns) => (columns, &urls[..]),
            None if remote_glob.is_none() && infers_partitions(state) => {
                let names =
                    listing.infer_partitions(state, first).await.map_err(|e| listing::listing_error(first, e))?;
                (names.into_iter().map(|name| (name, partition_type())).collect(), &urls[1..])
            }
            None => (Vec::new(), &urls[..]),
        };
        if let (Some(i), false) = (remote_glob, partition_columns.is_empty()) {
            return plan_err!(
                "BAM location {}: a glob in a URL cannot be combined with partition columns; name the directory instead",
                cmd.locations[i]
            );
        }
        listing = listing.with_table_partition_cols(partition_columns).with_file_sort_order(cmd.order_exprs.clone());
        for url in unchecked {
            listing.validate_partitions(state, url).await.map_err(|e| listing::listing_error(url, e))?;
        }

        let table = listing::listing_table(state, urls, listing).await?;
        let schema = DFSchema::try_from(table.schema())?;
        for column in cmd.order_exprs.iter().flatten().flat_map(|sort| sort.expr.column_refs()) {
            if !schema.has_column(column) {
                return plan_err!("WITH ORDER: column {column} is not in the BAM table");
            }
        }
        let table = table
            .with_cache(state.runtime_env().cache_manager.get_file_statistic_cache())
            .with_definition(cmd.definition.clone())
            .with_constraints(cmd.constraints.clone())
            .with_column_defaults(cmd.column_defaults.clone());
        if remote_glob.is_some() {
            return Ok(Arc::new(BamTable::from_listing(Arc::new(table))));
        }
        Ok(Arc::new(table))
    }
}

/// The type DataFusion gives partition columns that are only named.
fn partition_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8))
}

fn infers_partitions(state: &dyn Session) -> bool {
    state.config_options().execution.listing_table_factory_infer_partitions
}

/// The partition columns the statement declares, or `None` when it declares none. BAM's own
/// columns come from the files: a column list may only give the types of partition columns.
fn partition_columns(cmd: &CreateExternalTable) -> Result<Option<Vec<(String, DataType)>>> {
    let declared = cmd.schema.fields();
    if let Some(field) = declared.iter().find(|f| !cmd.table_partition_cols.contains(f.name())) {
        return plan_err!(
            "STORED AS BAM takes its columns from the files; a column list may only give the types of \
             PARTITIONED BY columns, and {} is not one",
            field.name()
        );
    }
    if cmd.table_partition_cols.is_empty() {
        return Ok(None);
    }
    let columns = cmd
        .table_partition_cols
        .iter()
        .map(|name| match (declared.is_empty(), declared.find(name)) {
            (true, _) => Ok((name.clone(), partition_type())),
            (false, Some((_, field))) => Ok((name.clone(), field.data_type().clone())),
            (false, None) => plan_err!("partition column {name} is missing from the column list"),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(columns))
}
