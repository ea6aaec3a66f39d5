//! BAM tables on [Apache Ballista](https://datafusion.apache.org/ballista/): the codecs that
//! carry BAM scans between client, scheduler and executors, and the session setup they share.
//!
//! The client sends a logical plan; its [`BamTable`](datafusion_bam::BamTable)s and `bam_depth`
//! tables travel through [`BamBallistaLogicalCodec`]. The scheduler plans them into BAM scans
//! split into byte ranges (and depth counts over pieces of the genome), which reach the executors
//! through [`physical_codec`], as do `COPY ... STORED AS BAM` (SAM, CRAM) outputs. Everything
//! else is Ballista's own codecs.
//! Every process must see the BAM files at the same paths (a shared file system or an object
//! store).

use std::sync::Arc;

use ballista::prelude::SessionConfigExt;
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::{SessionState, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::prelude::SessionConfig;
use datafusion_bam::codec::{BamLogicalCodec, BamPhysicalCodec};
use datafusion_bam::{BamFormatFactory, BamTable, DepthTable};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{ComposedPhysicalExtensionCodec, PhysicalExtensionCodec};
use prost::Message;

/// A serialized file format: a BAM one (`STORED AS BAM`, CRAM, SAM) or Ballista's.
#[derive(Clone, PartialEq, prost::Message)]
struct FormatEnvelope {
    #[prost(bytes = "vec", optional, tag = "1")]
    bam: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    ballista: Option<Vec<u8>>,
}

/// Ballista's logical codec, plus [`BamTable`]s and the `STORED AS BAM` file format.
#[derive(Debug, Default)]
pub struct BamBallistaLogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
    bam: BamLogicalCodec,
}

impl LogicalExtensionCodec for BamBallistaLogicalCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> Result<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode(node, buf)
    }

    /// Ballista serializes no table providers of its own: every one here is a [`BamTable`] or a
    /// `bam_depth` [`DepthTable`].
    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        self.bam.try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if node.downcast_ref::<BamTable>().is_some() || node.downcast_ref::<DepthTable>().is_some() {
            return self.bam.try_encode_table_provider(table_ref, node, buf);
        }
        self.ballista.try_encode_table_provider(table_ref, node, buf)
    }

    /// Ballista's codec decodes any bytes as one of its formats (protobuf decoding is lenient),
    /// so the formats travel in an envelope that says whose they are.
    fn try_decode_file_format(&self, buf: &[u8], ctx: &TaskContext) -> Result<Arc<dyn FileFormatFactory>> {
        let envelope = FormatEnvelope::decode(buf)
            .map_err(|e| DataFusionError::Internal(format!("cannot decode a serialized file format: {e}")))?;
        match envelope {
            FormatEnvelope { bam: Some(bam), .. } => self.bam.try_decode_file_format(&bam, ctx),
            FormatEnvelope { ballista: Some(ballista), .. } => self.ballista.try_decode_file_format(&ballista, ctx),
            _ => Err(DataFusionError::Internal("a serialized file format is empty".into())),
        }
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> Result<()> {
        let mut inner = Vec::new();
        let envelope = if node.downcast_ref::<BamFormatFactory>().is_some() {
            self.bam.try_encode_file_format(&mut inner, node)?;
            FormatEnvelope { bam: Some(inner), ballista: None }
        } else {
            self.ballista.try_encode_file_format(&mut inner, node)?;
            FormatEnvelope { bam: None, ballista: Some(inner) }
        };
        envelope.encode(buf).map_err(|e| DataFusionError::Internal(format!("cannot serialize a file format: {e}")))
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.ballista.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.ballista.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.ballista.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udwf(node, buf)
    }
}

pub fn logical_codec() -> Arc<dyn LogicalExtensionCodec> {
    Arc::new(BamBallistaLogicalCodec::default())
}

/// Ballista's physical codec, then BAM scans (datafusion-proto's composition records which of
/// the two encoded a node).
pub fn physical_codec() -> Arc<dyn PhysicalExtensionCodec> {
    Arc::new(ComposedPhysicalExtensionCodec::new(vec![
        Arc::new(BallistaPhysicalExtensionCodec::default()),
        Arc::new(BamPhysicalCodec),
    ]))
}

/// Adds the BAM codecs to a Ballista session configuration.
pub fn with_bam_codecs(config: SessionConfig) -> SessionConfig {
    config
        .with_ballista_logical_extension_codec(logical_codec())
        .with_ballista_physical_extension_codec(physical_codec())
}

/// A session state for Ballista with the BAM codecs and `STORED AS BAM`.
pub fn bam_session_state(config: SessionConfig) -> Result<SessionState> {
    let mut state = SessionStateBuilder::new().with_config(with_bam_codecs(config)).with_default_features().build();
    datafusion_bam::register_bam_format(&mut state)?;
    Ok(state)
}
