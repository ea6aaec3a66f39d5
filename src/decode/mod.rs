//! Turning BAM record bytes into Arrow batches, whatever format they came from: the column
//! decoder, the filters it evaluates itself (pushdown), and the batch reader that drives any
//! format's record source.

pub mod decoder;
pub mod infer;
pub mod pushdown;
pub mod reader;
