#!/usr/bin/env bash
# Parquet writer settings for `COPY (SELECT * FROM reads) TO ... STORED AS PARQUET` on the
# benchmark file (big.bam, see compare.sh), in one run on one machine: the settings alternated
# for RUNS rounds (default 3); wall (median, range), CPU seconds (user + sys, median), peak RSS
# and output size. The first line is what the CLI does with no setting at all.
#
#   benches/parquet_settings.sh [PARTITIONS]     (default 2)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/benches/stats.sh"
dir=${BENCH_DIR:-$HOME/.cache/datafusion-bam/bench}
partitions=${1:-2}
runs=${RUNS:-3}
[[ -f "$dir/big.bam" ]] || "$root/tests/data/make.sh" --big-only "$dir" > /dev/null
(cd "$root" && cargo build --release --quiet --bin datafusion-bam)
bin=${CARGO_TARGET_DIR:-$root/target}/release/datafusion-bam
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# The CLI's per-column defaults (src/parquet_output.rs) undone: dictionaries and page statistics
# back on for the columns they are off for, as DataFusion writes them.
datafusion_columns=$(
  for c in qname seq qual cigar pos endpos pnext tlen; do printf "'format.dictionary_enabled::%s' 'true', " "$c"; done
  for c in seq qual; do printf "'format.statistics_enabled::%s' 'page', " "$c"; done
)
names=(
  "the CLI's defaults (zstd(1); no dictionary for qname seq qual cigar pos endpos pnext tlen, no statistics for seq qual)"
  "DataFusion's per-column defaults (dictionaries and page statistics for every column)"
  "max_row_group_size 262144"
  "compression lz4_raw"
  "compression zstd(3) (DataFusion's default)"
)
options=(
  ""
  "$datafusion_columns"
  "'format.max_row_group_size' '262144', "
  "'format.compression' 'lz4_raw', "
  "'format.compression' 'zstd(3)', "
)
for i in "${!options[@]}"; do export "options_$i=${options[$i]}"; done
run() {
  local o="options_$1" with=""
  [[ -n "${!o}" ]] && with=" OPTIONS (${!o%, })"
  rm -f "$out/$1.parquet"
  "$bin" -q -c "SET datafusion.execution.target_partitions = $partitions" \
    -c "CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION '$dir/big.bam'" \
    -c "COPY (SELECT * FROM reads) TO '$out/$1.parquet' STORED AS PARQUET$with" > /dev/null
}
declare -A walls cpus rss
export bin dir out partitions
rounds "$runs" "${#names[@]}" run

echo "| setting ($partitions partitions, $runs rounds) | wall s (median, range) | CPU s | peak RSS MiB | output MB |"
echo "|---|---:|---:|---:|---:|"
for i in "${!names[@]}"; do
  echo "| ${names[$i]} | $(median <<< "${walls[$i]}") ($(range <<< "${walls[$i]}")) | $(median <<< "${cpus[$i]}") | ${rss[$i]} | $(( $(stat -c %s "$out/$i.parquet") / 1000000 )) |"
done
