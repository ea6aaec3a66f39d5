//! Writing: BAM records encoded from Arrow rows, the file sink with its output index, and the
//! Parquet column defaults of a COPY.

pub mod encode;
pub mod parquet;
pub mod sink;
