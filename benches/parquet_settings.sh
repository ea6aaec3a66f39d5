#!/usr/bin/env bash
# Parquet writer settings for `COPY (SELECT * FROM reads) TO ... STORED AS PARQUET`, measured on
# the benchmark file (see compare.sh): wall time, peak RSS and output size for each setting, in
# one run. The first line is DataFusion's defaults.
#
#   benches/parquet_settings.sh [PARTITIONS]     (default 2)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${BENCH_DIR:-$HOME/.cache/datafusion-bam/bench}
partitions=${1:-2}
[[ -f "$dir/big.bam" ]] || "$root/tests/data/make.sh" --big "$dir" > /dev/null
(cd "$root" && cargo build --release --quiet --bin datafusion-bam)
bin=${CARGO_TARGET_DIR:-$root/target}/release/datafusion-bam
out=$dir/out/settings.parquet
mkdir -p "$dir/out"

settings=(
  ""
  "SET datafusion.execution.parquet.compression = 'snappy'"
  "SET datafusion.execution.parquet.compression = 'lz4_raw'"
  "SET datafusion.execution.parquet.compression = 'zstd(1)'"
  "SET datafusion.execution.parquet.compression = 'uncompressed'"
  "SET datafusion.execution.parquet.dictionary_enabled = false"
  "SET datafusion.execution.parquet.statistics_enabled = 'chunk'"
  "SET datafusion.execution.parquet.maximum_parallel_row_group_writers = 2"
  "SET datafusion.execution.parquet.max_row_group_size = 262144"
)
echo "| setting ($partitions partitions) | wall (s) | peak RSS (MiB) | output (MB) |"
echo "|---|---:|---:|---:|"
for setting in "${settings[@]}"; do
  rm -f "$out"
  args=(-q -c "SET datafusion.execution.target_partitions = $partitions")
  [[ -n "$setting" ]] && args+=(-c "$setting")
  args+=(-c "CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION '$dir/big.bam'"
         -c "COPY (SELECT * FROM reads) TO '$out' STORED AS PARQUET")
  /usr/bin/time -o "$dir/out/time.txt" -f '%e %M' "$bin" "${args[@]}" > /dev/null
  read -r secs kb < "$dir/out/time.txt"
  echo "| ${setting:-defaults (zstd(3), dictionary, page statistics)} | $secs | $((kb / 1024)) | $(( $(stat -c %s "$out") / 1000000 )) |"
done
rm -f "$out"
