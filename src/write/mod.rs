//! Writing: BAM records encoded from Arrow rows, the file sink with its output index, and the
//! Parquet column defaults of a COPY.

mod aux;
mod cram;
pub mod encode;
pub mod parquet;
mod record;
pub mod sink;
