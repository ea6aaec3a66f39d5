//! Plans with BAM scans and `bam_depth` as bytes, for engines that run a plan in another process
//! (Ballista executors): datafusion-proto serializes DataFusion's own nodes and hands this
//! crate's to these extension codecs.
//!
//! - [`BamLogicalCodec`] carries [`BamTable`](crate::BamTable)s and `bam_depth` tables (Ballista's
//!   client sends logical plans).
//! - [`BamPhysicalCodec`] carries BAM scans (a `DataSourceExec` over a
//!   [`BamSource`](crate::BamSource)), `bam_depth`'s plan, whose scans travel as its children,
//!   and alignment outputs (the `DataSinkExec` of `COPY ... STORED AS BAM`, SAM or CRAM).
//!
//! Ballista needs its own codecs too: compose, e.g. with datafusion-proto's
//! `ComposedPhysicalExtensionCodec`.

mod depth;
mod scan;
mod sink;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{internal_err, DataFusionError, Result, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use prost::Message;

use crate::functions::depth::exec::DepthExec;
use crate::functions::depth::DepthTable;
use scan::{ScanLogicalCodec, ScanPhysicalCodec};

/// One of this crate's physical nodes.
#[derive(Clone, PartialEq, Message)]
struct PlanNode {
    #[prost(bytes = "vec", optional, tag = "1")]
    scan: Option<Vec<u8>>,
    #[prost(message, optional, tag = "2")]
    depth: Option<depth::DepthExecNode>,
    #[prost(message, optional, tag = "3")]
    sink: Option<sink::SinkNode>,
}

/// One of this crate's tables.
#[derive(Clone, PartialEq, Message)]
struct TableNode {
    #[prost(bytes = "vec", optional, tag = "1")]
    table: Option<Vec<u8>>,
    #[prost(message, optional, tag = "2")]
    depth: Option<depth::DepthArgsNode>,
}

fn decode_error(what: &str, e: prost::DecodeError) -> DataFusionError {
    DataFusionError::Internal(format!("cannot decode a serialized {what}: {e}"))
}

fn encode_error(what: &str, e: prost::EncodeError) -> DataFusionError {
    DataFusionError::Internal(format!("cannot serialize a {what}: {e}"))
}

/// Serializes and restores BAM scans, `bam_depth` plans and alignment outputs in physical plans.
#[derive(Debug, Default)]
pub struct BamPhysicalCodec;

impl PhysicalExtensionCodec for BamPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = PlanNode::decode(buf).map_err(|e| decode_error("BAM plan node", e))?;
        match node {
            PlanNode { scan: Some(scan), .. } => ScanPhysicalCodec.try_decode(&scan, inputs, ctx, proto_converter),
            PlanNode { depth: Some(depth), .. } => Ok(Arc::new(depth::decode_exec(depth, inputs)?)),
            PlanNode { sink: Some(sink), .. } => sink::decode_sink(sink, inputs),
            _ => internal_err!("a serialized BAM plan node is empty"),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let sink = node.downcast_ref::<DataSinkExec>().map(sink::encode_sink).transpose()?.flatten();
        let node = match (node.downcast_ref::<DepthExec>(), sink) {
            (Some(exec), _) => PlanNode { depth: Some(depth::encode_exec(exec)), ..Default::default() },
            (None, Some(sink)) => PlanNode { sink: Some(sink), ..Default::default() },
            (None, None) => {
                let mut scan = Vec::new();
                ScanPhysicalCodec.try_encode(node, &mut scan, proto_converter)?;
                PlanNode { scan: Some(scan), ..Default::default() }
            }
        };
        node.encode(buf).map_err(|e| encode_error("BAM plan node", e))
    }
}

/// Serializes and restores [`BamTable`](crate::BamTable)s and `bam_depth` tables in logical plans.
#[derive(Debug, Default)]
pub struct BamLogicalCodec;

impl LogicalExtensionCodec for BamLogicalCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> Result<Extension> {
        ScanLogicalCodec.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        ScanLogicalCodec.try_encode(node, buf)
    }

    fn try_decode_file_format(&self, buf: &[u8], _ctx: &TaskContext) -> Result<Arc<dyn FileFormatFactory>> {
        sink::decode_format(buf)
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> Result<()> {
        sink::encode_format(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        let node = TableNode::decode(buf).map_err(|e| decode_error("BAM table", e))?;
        match node {
            TableNode { table: Some(table), .. } => {
                ScanLogicalCodec.try_decode_table_provider(&table, table_ref, schema, ctx)
            }
            TableNode { depth: Some(depth), .. } => Ok(Arc::new(depth::decode_table(depth)?)),
            _ => internal_err!("a serialized BAM table is empty"),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let node = match node.downcast_ref::<DepthTable>() {
            Some(table) => TableNode { table: None, depth: Some(depth::encode_args(table.args())) },
            None => {
                let mut table = Vec::new();
                ScanLogicalCodec.try_encode_table_provider(table_ref, node, &mut table)?;
                TableNode { table: Some(table), depth: None }
            }
        };
        node.encode(buf).map_err(|e| encode_error("BAM table", e))
    }
}
