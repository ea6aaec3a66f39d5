//! Converting many BAM files, one output file each, so that an interrupted run can resume.
//!
//! Each file is written by DataFusion's `COPY` under a hidden temporary name in the output
//! directory and renamed when complete: an output under its final name is always complete, so
//! a rerun skips it. A failure stops the run after removing the temporary file.

use std::path::{Path, PathBuf};
use std::time::Instant;

use datafusion::common::{DataFusionError, Result};
use datafusion::prelude::SessionContext;

use datafusion_bam::{AlignmentFormat, BamOptions, BamSessionExt};

/// The format of the converted files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Parquet,
    Arrow,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Arrow => "arrow",
        }
    }

    fn stored_as(self) -> &'static str {
        match self {
            Self::Parquet => "PARQUET",
            Self::Arrow => "ARROW",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "parquet" => Ok(Self::Parquet),
            "arrow" | "ipc" => Ok(Self::Arrow),
            _ => Err(DataFusionError::Configuration(format!("unknown output format {s:?}: use parquet or arrow"))),
        }
    }
}

/// What became of one input file.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Converted now: rows written, seconds taken.
    Converted { rows: u64, seconds: f64 },
    /// Its output exists already (a previous run completed it).
    AlreadyDone,
}

/// Where the output of `input` goes: `output_dir/<file name without .bam>.<extension>`.
pub fn output_path(input: &Path, output_dir: &Path, format: OutputFormat) -> PathBuf {
    let name = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = [".bam", ".cram", ".sam.gz", ".sam"].iter().find_map(|ext| name.strip_suffix(ext)).unwrap_or(&name);
    output_dir.join(format!("{stem}.{}", format.extension()))
}

/// Converts each of `inputs` (local BAM files) into its own file in `output_dir`, skipping those
/// whose output exists. `report` hears about each file as it is done. Stops at the first error.
pub async fn convert_each(
    ctx: &SessionContext,
    inputs: &[PathBuf],
    output_dir: &Path,
    format: OutputFormat,
    options: &BamOptions,
    mut report: impl FnMut(&Path, &Path, &Outcome),
) -> Result<()> {
    let mut outputs: Vec<PathBuf> = inputs.iter().map(|i| output_path(i, output_dir, format)).collect();
    outputs.sort();
    if let Some(twice) = outputs.windows(2).find(|w| w[0] == w[1]) {
        return Err(DataFusionError::Configuration(format!(
            "two inputs would both be converted to {}: give files with distinct names",
            twice[0].display()
        )));
    }
    std::fs::create_dir_all(output_dir).map_err(|e| {
        DataFusionError::Execution(format!("cannot create output directory {}: {e}", output_dir.display()))
    })?;
    for input in inputs {
        let output = output_path(input, output_dir, format);
        if output.exists() {
            report(input, &output, &Outcome::AlreadyDone);
            continue;
        }
        let started = Instant::now();
        let rows = convert_one(ctx, input, &output, format, options).await?;
        report(input, &output, &Outcome::Converted { rows, seconds: started.elapsed().as_secs_f64() });
    }
    Ok(())
}

/// Converts one file through a temporary name; removes it on failure.
async fn convert_one(
    ctx: &SessionContext,
    input: &Path,
    output: &Path,
    format: OutputFormat,
    options: &BamOptions,
) -> Result<u64> {
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Hidden, and with the format's extension so DataFusion writes one file, not a directory.
    let partial = output.with_file_name(format!(".{name}.partial.{}", format.extension()));
    let _ = std::fs::remove_file(&partial);
    let path = input
        .to_str()
        .ok_or_else(|| DataFusionError::Execution(format!("BAM file {}: the path is not UTF-8", input.display())))?;
    let table = format!("__bam_convert_{}", std::process::id());
    // `.cram`, `.sam` and `.sam.gz` inputs are read as CRAM and SAM (`-o reference=...` for CRAM).
    let options = options.clone().with_format(AlignmentFormat::of_path(path));
    ctx.register_bam(&table, path, options).await?;
    let written = async {
        let target = partial.to_string_lossy().replace('\'', "''");
        let sql = format!("COPY (SELECT * FROM {table}) TO '{target}' STORED AS {}", format.stored_as());
        let batches = ctx.sql(&sql).await?.collect().await?;
        let rows = batches
            .first()
            .and_then(|b| b.column(0).as_any().downcast_ref::<datafusion::arrow::array::UInt64Array>())
            .map_or(0, |c| c.value(0));
        std::fs::rename(&partial, output).map_err(|e| {
            DataFusionError::Execution(format!("cannot rename {} to {}: {e}", partial.display(), output.display()))
        })?;
        Ok(rows)
    }
    .await;
    ctx.deregister_table(&table)?;
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}
