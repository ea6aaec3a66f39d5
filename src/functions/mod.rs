//! Table functions: `bam_header(path)`, `bam_region(path, region, ...)` and
//! `bam_depth(path [, region] [, options])`.

pub mod depth;
pub mod header;
pub mod region;
