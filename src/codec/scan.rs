//! BAM scans and tables as bytes: a `DataSourceExec` over a [`BamSource`] (the file groups with
//! their byte ranges, the pushed-down predicate, and the options) and a [`BamTable`] (its paths
//! and options; the schema travels with the plan, so nothing is re-inferred). The decoded scan
//! reserves memory in the decoding task's pool.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{not_impl_err, DataFusionError, Result, TableReference};
use datafusion::datasource::listing::{ListingTable, ListingTableConfig};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Extension;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::from_proto::{
    parse_physical_expr_with_converter, parse_protobuf_file_scan_config, parse_table_schema_from_proto,
};
use datafusion_proto::physical_plan::to_proto::serialize_file_scan_config;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;

use super::decode_error;
use crate::datasource::listing;
use crate::datasource::source::BamSource;
use crate::datasource::table::BamTable;
use crate::options::region::parse_regions;
use crate::options::{AlignmentFormat, BamOptions};

/// A BAM scan node: the scan config and what [`BamSource`] adds to it.
#[derive(Clone, PartialEq, Message)]
struct BamScanNode {
    #[prost(message, optional, tag = "1")]
    conf: Option<protobuf::FileScanExecConf>,
    /// The filters the decoder evaluates, over the file schema.
    #[prost(message, optional, tag = "2")]
    predicate: Option<protobuf::PhysicalExprNode>,
    #[prost(message, optional, tag = "3")]
    options: Option<BamOptionsNode>,
}

/// The options a scan or table needs once its schema is known.
#[derive(Clone, PartialEq, Message)]
pub(super) struct BamOptionsNode {
    #[prost(bool, tag = "1")]
    split: bool,
    #[prost(bool, tag = "2")]
    skip_damaged: bool,
    /// The `region` option, in samtools syntax.
    #[prost(string, repeated, tag = "3")]
    regions: Vec<String>,
    /// The format's `STORED AS` name (empty: BAM, as plans serialized before CRAM).
    #[prost(string, tag = "4")]
    format: String,
    /// Option `reference` (CRAM).
    #[prost(string, optional, tag = "5")]
    reference: Option<String>,
}

impl BamOptionsNode {
    pub(super) fn new(options: &BamOptions) -> Self {
        Self {
            split: options.split,
            skip_damaged: options.skip_damaged,
            regions: options.regions.iter().map(|r| r.to_string()).collect(),
            format: options.format.name().to_string(),
            reference: options.reference.clone(),
        }
    }

    pub(super) fn options(&self) -> Result<BamOptions> {
        let regions = if self.regions.is_empty() { Vec::new() } else { parse_regions(&self.regions.join(" "))? };
        let format = match self.format.as_str() {
            "" => AlignmentFormat::Bam,
            name => AlignmentFormat::from_name(name)
                .ok_or_else(|| DataFusionError::Internal(format!("a serialized scan of unknown format {name}")))?,
        };
        let options = BamOptions::default()
            .with_split(self.split)
            .with_skip_damaged(self.skip_damaged)
            .with_regions(regions)
            .with_format(format);
        Ok(match &self.reference {
            Some(path) => options.with_reference(path),
            None => options,
        })
    }
}

/// A [`BamTable`]: its locations and options.
#[derive(Clone, PartialEq, Message)]
struct BamTableNode {
    #[prost(string, repeated, tag = "1")]
    paths: Vec<String>,
    #[prost(message, optional, tag = "2")]
    options: Option<BamOptionsNode>,
}

/// Serializes and restores BAM scans in physical plans.
#[derive(Debug, Default)]
pub struct ScanPhysicalCodec;

impl PhysicalExtensionCodec for ScanPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        _inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = BamScanNode::decode(buf).map_err(|e| decode_error("BAM scan", e))?;
        let conf =
            node.conf.ok_or_else(|| DataFusionError::Internal("a serialized BAM scan has no scan config".into()))?;
        let options = node.options.unwrap_or_default().options()?;
        let table_schema = parse_table_schema_from_proto(&conf)?;
        let file_schema = Arc::clone(table_schema.file_schema());
        let mut source = BamSource::new(table_schema).with_options(&options).with_runtime(&ctx.runtime_env());
        let decode_ctx = PhysicalPlanDecodeContext::new(ctx, self);
        if let Some(predicate) = &node.predicate {
            let predicate = parse_physical_expr_with_converter(predicate, &file_schema, &decode_ctx, proto_converter)?;
            source = source.with_predicates(vec![predicate]);
        }
        let config = parse_protobuf_file_scan_config(&conf, &decode_ctx, proto_converter, Arc::new(source))?;
        Ok(DataSourceExec::from_data_source(config))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let Some((config, source)) =
            node.downcast_ref::<DataSourceExec>().and_then(|e| e.downcast_to_file_source::<BamSource>())
        else {
            return not_impl_err!("ScanPhysicalCodec serializes BAM scans only, not {}", node.name());
        };
        let scan = BamScanNode {
            conf: Some(serialize_file_scan_config(config, self, proto_converter)?),
            predicate: source.predicate().map(|p| proto_converter.physical_expr_to_proto(p, self)).transpose()?,
            options: Some(BamOptionsNode::new(source.options())),
        };
        scan.encode(buf).map_err(|e| DataFusionError::Internal(format!("cannot serialize a BAM scan: {e}")))
    }
}

/// Serializes and restores [`BamTable`]s in logical plans.
#[derive(Debug, Default)]
pub struct ScanLogicalCodec;

impl LogicalExtensionCodec for ScanLogicalCodec {
    fn try_decode(&self, _buf: &[u8], _inputs: &[LogicalPlan], _ctx: &TaskContext) -> Result<Extension> {
        not_impl_err!("ScanLogicalCodec has no extension nodes")
    }

    fn try_encode(&self, _node: &Extension, _buf: &mut Vec<u8>) -> Result<()> {
        not_impl_err!("ScanLogicalCodec has no extension nodes")
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        _table_ref: &TableReference,
        schema: SchemaRef,
        _ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        let node = BamTableNode::decode(buf).map_err(|e| decode_error("BAM table", e))?;
        let options = node.options.unwrap_or_default().options()?;
        let urls = node.paths.iter().map(|p| listing::table_url(p)).collect::<Result<Vec<_>>>()?;
        let listing = listing::bam_listing_options(&urls, options);
        let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(listing).with_schema(schema);
        Ok(Arc::new(BamTable::from_listing(Arc::new(ListingTable::try_new(config)?))))
    }

    fn try_encode_table_provider(
        &self,
        _table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let Some(table) = node.downcast_ref::<BamTable>() else {
            return not_impl_err!("ScanLogicalCodec serializes BamTable only");
        };
        let (paths, options) = table.locations_and_options()?;
        let node = BamTableNode { paths, options: Some(BamOptionsNode::new(&options)) };
        node.encode(buf).map_err(|e| DataFusionError::Internal(format!("cannot serialize a BAM table: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_survive_serialization() {
        let options = BamOptions::default()
            .with_split(false)
            .with_skip_damaged(true)
            .with_regions(parse_regions("chr1:100-200 chr2 chr3:5- *").unwrap());
        let bytes = BamOptionsNode::new(&options).encode_to_vec();
        let back = BamOptionsNode::decode(bytes.as_slice()).unwrap().options().unwrap();
        assert_eq!(
            (back.split, back.skip_damaged, back.regions, back.format),
            (options.split, options.skip_damaged, options.regions, AlignmentFormat::Bam)
        );
        let cram = BamOptions::default().with_format(AlignmentFormat::Cram).with_reference("ref.fa");
        let bytes = BamOptionsNode::new(&cram).encode_to_vec();
        assert_eq!(BamOptionsNode::decode(bytes.as_slice()).unwrap().options().unwrap(), cram);
    }
}
