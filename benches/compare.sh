#!/usr/bin/env bash
# End-to-end benchmark: datafusion-bam against samtools and the Python BAM converters, in one run
# on one realistic file (tests/data/make.sh --big: about 4.4M simulated 150 bp paired-end reads).
#
#   benches/compare.sh              everything (the peers are installed from PyPI into a venv)
#   benches/compare.sh --no-peers   only samtools and this project
#
# BENCH_DIR (default ~/.cache/datafusion-bam/bench) keeps big.bam and the venv between runs.
# RUNS (default 3) repeats each fast command and keeps the best time; the peers run once.
# Prints a Markdown table: wall time, records/s, peak RSS, and ratios.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${BENCH_DIR:-$HOME/.cache/datafusion-bam/bench}
runs=${RUNS:-3}
peers=1
[[ "${1:-}" == "--no-peers" ]] && peers=0
mkdir -p "$dir/noindex" "$dir/out"

[[ -f "$dir/big.bam" ]] || "$root/tests/data/make.sh" --big-only "$dir" > /dev/null
# The same file without an index beside it: the scans below must read every record.
ln -sf "$dir/big.bam" "$dir/noindex/big.bam"
indexed=$dir/big.bam
plain=$dir/noindex/big.bam

# Benches and binaries in one invocation, so `cargo bench` later reuses the same dependency builds.
(cd "$root" && cargo build --release --quiet --bins --benches)
bin=${CARGO_TARGET_DIR:-$root/target}/release/datafusion-bam

records=$(samtools view -c -@2 "$indexed")
size_mb=$(( $(stat -L -c %s "$indexed") / 1000000 ))
echo "# $records records, $size_mb MB, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo

declare -A wall rss
# measure NAME RUNS COMMAND...: best wall time (s) and its peak RSS (MiB).
measure() {
  local name=$1 n=$2
  shift 2
  local best="" best_rss=""
  for _ in $(seq "$n"); do
    rm -rf "$dir/out"/*
    if ! /usr/bin/time -o "$dir/time.txt" -f '%e %M' "$@" > /dev/null 2> "$dir/out.err"; then
      echo "FAILED: $name" >&2
      cat "$dir/out.err" >&2
      return 1
    fi
    read -r secs kb < <(tail -1 "$dir/time.txt")
    if [[ -z "$best" ]] || (( $(echo "$secs < $best" | bc) )); then
      best=$secs
      best_rss=$((kb / 1024))
    fi
  done
  wall[$name]=$best
  rss[$name]=$best_rss
  printf '%-46s %7.2f s  %6d MiB\n' "$name" "$best" "$best_rss" >&2
}

# ours NAME RUNS PARTITIONS SQL: measures one CLI run with the table registered on `table_path`.
table_path=$plain
ours() {
  local name=$1 n=$2 partitions=$3 sql=$4
  measure "$name" "$n" "$bin" -q -c "SET datafusion.execution.target_partitions = $partitions" \
    -c "CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION '$table_path'" -c "$sql"
}

measure "samtools view -c -@2" "$runs" samtools view -c -@2 "$plain"
measure "samtools view -c -q 30 -@2" "$runs" samtools view -c -q 30 -@2 "$plain"
measure "bgzip -dc (decompression only, 1 thread)" "$runs" bash -c "bgzip -dc '$plain' > /dev/null"
measure "bgzip -dc -@2 (decompression only)" "$runs" bash -c "bgzip -@2 -dc '$plain' > /dev/null"

for p in 1 2; do
  ours "count(*), $p partition(s)" "$runs" "$p" "SELECT count(*) FROM reads"
done
ours "rname, pos, mapq, 2 partitions" "$runs" 2 "SELECT count(rname), sum(pos), max(mapq) FROM reads"
ours "count(*) WHERE mapq >= 30, 2 partitions" "$runs" 2 "SELECT count(*) FROM reads WHERE mapq >= 30"
for p in 1 2 3 4; do
  ours "COPY all columns to Parquet, $p partition(s)" 1 "$p" "COPY (SELECT * FROM reads) TO '$dir/out/ours.parquet' STORED AS PARQUET"
done

# A region holding about 1% of the reads: through the index, and by a full scan.
region="rname = 'chr1' AND pos <= 106500 AND endpos >= 100000"
table_path=$indexed
ours "1% region, indexed, 2 partitions" "$runs" 2 "SELECT count(*) FROM reads WHERE $region"
table_path=$plain
ours "1% region, no index, 2 partitions" "$runs" 2 "SELECT count(*) FROM reads WHERE $region"
# What every CLI run above pays before it reads a record: start, register the table, plan.
ours "startup (SELECT 1 after registering), 2 partitions" "$runs" 2 "SELECT 1"
region_reads=$(samtools view -c "$indexed" chr1:100000-106500)

if (( peers )); then
  venv=$dir/peers
  if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q polars-bio oxbow biobear pyarrow polars || echo "some peers failed to install" >&2
  fi
  py=$venv/bin/python
  out=$dir/out/peer.parquet
  measure "polars-bio scan_bam().sink_parquet()" 1 "$py" -c \
    "import polars_bio as pb; pb.scan_bam('$plain').sink_parquet('$out')" || true
  measure "oxbow from_bam().pl() -> write_parquet()" 1 "$py" -c \
    "import oxbow as ox; ox.from_bam('$plain').pl().write_parquet('$out')" || true
  measure "biobear COPY to Parquet" 1 "$py" -c \
    "import biobear as bb; s = bb.connect(); s.execute(\"CREATE EXTERNAL TABLE r STORED AS BAM LOCATION '$plain'\"); s.execute(\"COPY (SELECT * FROM r) TO '$out' STORED AS PARQUET\")" || true
fi
rm -rf "$dir/out"/*

ratio() { echo "scale=2; ${wall[$1]} / ${wall[$2]}" | bc; }
rate() { echo "$records / ${wall[$1]}" | bc; }
echo "| what | wall (s) | records/s | peak RSS (MiB) |"
echo "|---|---:|---:|---:|"
for name in "${!wall[@]}"; do
  echo "| $name | ${wall[$name]} | $(rate "$name") | ${rss[$name]} |"
done | sort
echo
echo "Ratios (> 1 means the first is slower):"
echo "- count(*): 1 partition / 2 partitions = $(ratio "count(*), 1 partition(s)" "count(*), 2 partition(s)")"
echo "- COPY to Parquet: 1 partition / 2 partitions = $(ratio "COPY all columns to Parquet, 1 partition(s)" "COPY all columns to Parquet, 2 partition(s)")"
echo "- count(*) 2 partitions / samtools view -c -@2 = $(ratio "count(*), 2 partition(s)" "samtools view -c -@2")"
echo "- count(*) WHERE mapq >= 30 / samtools view -c -q 30 -@2 = $(ratio "count(*) WHERE mapq >= 30, 2 partitions" "samtools view -c -q 30 -@2")"
echo "- rname, pos, mapq / samtools view -c -@2 = $(ratio "rname, pos, mapq, 2 partitions" "samtools view -c -@2")"
echo "- count(*) 1 partition / bgzip -dc (1 thread) = $(ratio "count(*), 1 partition(s)" "bgzip -dc (decompression only, 1 thread)")"
echo "- 1% region ($region_reads reads): indexed / full scan = $(ratio "1% region, indexed, 2 partitions" "1% region, no index, 2 partitions")"
startup=${wall["startup (SELECT 1 after registering), 2 partitions"]}
echo "- the same without the startup both pay ($startup s): $(echo "scale=3; (${wall["1% region, indexed, 2 partitions"]} - $startup) / (${wall["1% region, no index, 2 partitions"]} - $startup)" | bc)"
for peer in "polars-bio scan_bam().sink_parquet()" "oxbow from_bam().pl() -> write_parquet()" "biobear COPY to Parquet"; do
  [[ -n "${wall[$peer]:-}" ]] && echo "- $peer / COPY 2 partitions = $(ratio "$peer" "COPY all columns to Parquet, 2 partition(s)")"
done
echo
echo "COPY to Parquet throughput by partitions (records/s):"
for p in 1 2 3 4; do
  r=$(rate "COPY all columns to Parquet, $p partition(s)")
  printf '%d | %-50s %s\n' "$p" "$(printf '#%.0s' $(seq $(( r / 40000 + 1 ))))" "$r"
done
