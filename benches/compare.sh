#!/usr/bin/env bash
# End-to-end benchmark suite: datafusion-bam against samtools and the Python BAM converters
# (polars-bio, oxbow, biobear), on the kinds of files users have, in one run on one machine.
#
#   benches/compare.sh              everything (the peers are installed from PyPI into a venv)
#   benches/compare.sh --no-peers   only samtools and this project
#   benches/compare.sh --floor      only the writer floor, on the two short-read files with tags
#                                   (sorted and unsorted): the scan alone, the writer alone, the
#                                   COPY and polars-bio, for a per-round floor ratio (use more RUNS)
#
# Files (made once in BENCH_DIR, default ~/.cache/datafusion-bam/bench, from
# `tests/data/make.sh --big-only`): short reads with minimap2's tags (about 4.4M simulated 150 bp
# pairs, coordinate-sorted), the same without tags, the same in read-name groups (unsorted, as
# aligners write), long reads (pbsim CLR, minimap2), and the short-read file rewritten at BGZF
# compression levels 0, 1, 6 and 9 (`samtools view -O bam,level=N`; samtools' `-l` selects a
# library, not a level), where inflation's share differs.
#
# RUNS (default 3) rounds; in each round every command runs once, in the same order, so that a
# slow moment of this noisy machine does not fall on one tool. Every run is kept in
# BENCH_DIR/results.tsv; benches/report.py turns it into the tables of BENCHMARKS.md (median and
# range of wall time, CPU seconds per million records, kernel time, peak RSS), the writer-floor
# ratio, the scaling model and the chart benches/throughput.png.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${BENCH_DIR:-$HOME/.cache/datafusion-bam/bench}
runs=${RUNS:-3}
peers=1
floor_only=0
for arg in "$@"; do
  case $arg in
    --no-peers) peers=0 ;;
    --floor) floor_only=1 ;;
    *) echo "unknown argument: $arg (expected --no-peers, --floor)" >&2 && exit 2 ;;
  esac
done
mkdir -p "$dir/files" "$dir/out"

# --- the files ----------------------------------------------------------------------------
[[ -f "$dir/big.bam" && -f "$dir/big_long.bam" ]] || "$root/tests/data/make.sh" --big-only "$dir" > /dev/null
files=$dir/files
# Indexes are left out on purpose: every scan below must read every record.
make_file() { # name, command writing $files/name.bam.tmp
  local name=$1
  shift
  [[ -f "$files/$name.bam" ]] && return
  "$@" > "$files/$name.bam.tmp"
  mv "$files/$name.bam.tmp" "$files/$name.bam"
}
for level in 0 1 6 9; do
  make_file "level$level" samtools view --no-PG -@2 -O "bam,level=$level" "$dir/big.bam"
done
ln -sf level6.bam "$files/tags.bam"
make_file notags bash -c "samtools view --no-PG -h '$dir/big.bam' | cut -f 1-11 | samtools view --no-PG -@2 -b -"
# collate writes BGZF level 1; recompressed at samtools' default (6) like the other kinds.
make_file unsorted bash -c "samtools collate --no-PG -@2 -u -O '$dir/big.bam' | samtools view --no-PG -@2 -O bam,level=6 -"
ln -sf "$dir/big_long.bam" "$files/long.bam"
kinds=(tags notags unsorted long level0 level1 level9)
# The writer floor is measured on these kinds (their COPY's own output is the writer's input).
floor_kinds=(tags unsorted)
((floor_only)) && kinds=("${floor_kinds[@]}")

# --- the tools ----------------------------------------------------------------------------
(cd "$root" && cargo build --release --quiet --bin datafusion-bam)
bin=${CARGO_TARGET_DIR:-$root/target}/release/datafusion-bam
py=""
if (( peers )); then
  venv=$dir/peers
  if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q polars-bio oxbow biobear pyarrow polars matplotlib
  fi
  py=$venv/bin/python
fi

results=$dir/results.tsv
{
  echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(samtools --version | head -1), $(git -C "$root" rev-parse --short HEAD)"
  printf 'kind\tjob\tround\trecords\tbytes\twall\tuser\tsys\trss_kib\n'
} > "$results"
declare -A records
for kind in "${kinds[@]}"; do
  records[$kind]=$(samtools view -c -@2 "$files/$kind.bam")
done
if [[ -n "$py" ]]; then
  for p in polars-bio oxbow biobear; do
    echo "# $p $("$py" -m pip show "$p" 2> /dev/null | sed -n 's/^Version: //p')" >> "$results"
  done
fi

# register KIND: the statement that makes the file of KIND the table `reads`.
register() { echo "CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION '$files/$1.bam'"; }

# run KIND JOB COMMAND...: one timed run, appended to results.tsv. A failed run is reported and
# counted; the script still prints the report, then exits with an error.
failed=0
run() {
  local kind=$1 job=$2
  shift 2
  rm -rf "$dir/out"/*
  if ! /usr/bin/time -o "$dir/time.txt" -f '%e %U %S %M' "$@" > /dev/null 2> "$dir/out.err"; then
    echo "FAILED: $kind / $job" >&2
    cat "$dir/out.err" >&2
    failed=$((failed + 1))
    return 0
  fi
  read -r wall user sys kib < <(tail -1 "$dir/time.txt")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$job" "$round" "${records[$kind]}" \
    "$(stat -L -c %s "$files/$kind.bam")" "$wall" "$user" "$sys" "$kib" >> "$results"
  printf '%-9s %-44s %7.2f s  %6.2f + %5.2f CPU-s  %6d MiB\n' "$kind" "$job" "$wall" "$user" "$sys" $((kib / 1024)) >&2
}

# ours KIND JOB PARTITIONS SQL [WRAPPER...]: one CLI run with the file registered as `reads`.
ours() {
  local kind=$1 job=$2 partitions=$3 sql=$4
  shift 4
  run "$kind" "$job" "$@" "$bin" -q -c "SET datafusion.execution.target_partitions = $partitions" \
    -c "$(register "$kind")" -c "$sql"
}

# count_all CREATE_STATEMENT TABLE: a query counting every column of the table, that is the whole
# scan without a writer behind it.
count_all() {
  local columns
  columns=$("$bin" -q --format csv -c "$1" -c "DESCRIBE $2" | tail -n +2 | cut -d, -f1 | sed 's/.*/count(&)/' | paste -sd,)
  echo "SELECT $columns FROM $2"
}
declare -A scan_all
for kind in "${kinds[@]}"; do
  scan_all[$kind]=$(count_all "$(register "$kind")" reads)
done
# The writer alone reads a Parquet copy of each floor kind's file (the COPY's own output).
declare -A parquet_table parquet_all
for kind in "${floor_kinds[@]}"; do
  ref=$dir/copy_of_$kind.parquet
  if [[ ! -f $ref ]]; then
    "$bin" -q -c "$(register "$kind")" \
      -c "COPY (SELECT * FROM reads) TO '$ref.tmp' STORED AS PARQUET" > /dev/null
    mv "$ref.tmp" "$ref"
  fi
  parquet_table[$kind]="CREATE EXTERNAL TABLE p STORED AS PARQUET LOCATION '$ref'"
  parquet_all[$kind]=$(count_all "${parquet_table[$kind]}" p)
done
# writer_alone KIND: the kind's Parquet copy read (every column counted), then read and written
# again; the writer's own cost is the difference.
writer_alone() {
  local kind=$1
  run "$kind" "Parquet read, every column counted" "$bin" -q -c "${parquet_table[$kind]}" -c "${parquet_all[$kind]}"
  run "$kind" "Parquet to Parquet (the writer)" "$bin" -q -c "${parquet_table[$kind]}" \
    -c "COPY (SELECT * FROM p) TO '$dir/out/again.parquet' STORED AS PARQUET"
}
polars_bio() { # KIND
  [[ -n "$py" ]] && run "$1" "polars-bio scan_bam().sink_parquet()" "$py" -c \
    "import polars_bio as pb; pb.scan_bam('$files/$1.bam').sink_parquet('$dir/out/peer.parquet')"
  return 0
}

copy_parquet="COPY (SELECT * FROM reads) TO '$dir/out/ours.parquet' STORED AS PARQUET"
for round in $(seq "$runs"); do
  echo "--- round $round of $runs" >&2
  if ((floor_only)); then
    for kind in "${floor_kinds[@]}"; do
      ours "$kind" "every column counted, 2 partitions" 2 "${scan_all[$kind]}"
      writer_alone "$kind"
      ours "$kind" "COPY to Parquet, 2 partitions" 2 "$copy_parquet"
      polars_bio "$kind"
    done
    continue
  fi
  for kind in "${kinds[@]}"; do
    file=$files/$kind.bam
    run "$kind" "samtools view -c -@2" samtools view -c -@2 "$file"
    ours "$kind" "count(*), 2 partitions" 2 "SELECT count(*) FROM reads"
    ours "$kind" "every column counted, 2 partitions" 2 "${scan_all[$kind]}"
    ours "$kind" "COPY to Parquet, 2 partitions" 2 "$copy_parquet"
    case $kind in
      level*) continue ;;
    esac
    polars_bio "$kind"
    if [[ -n "$py" ]]; then
      out=$dir/out/peer.parquet
      run "$kind" "oxbow from_bam().pl().write_parquet()" "$py" -c \
        "import oxbow as ox; ox.from_bam('$file').pl().write_parquet('$out')"
      run "$kind" "biobear COPY to Parquet" "$py" -c \
        "import biobear as bb; s = bb.connect(); s.execute(\"CREATE EXTERNAL TABLE r STORED AS BAM LOCATION '$file'\"); s.execute(\"COPY (SELECT * FROM r) TO '$out' STORED AS PARQUET\")"
    fi
  done

  # The parts of a COPY: the writer alone on the floor kinds; on the short-read file with tags
  # also inflation alone, Arrow IPC output, the tag columns left out, and one core (for the
  # scaling model).
  for kind in "${floor_kinds[@]}"; do
    writer_alone "$kind"
  done
  run tags "bgzip -dc (1 thread)" bash -c "bgzip -dc '$files/tags.bam' > /dev/null"
  ours tags "COPY to Arrow IPC, 2 partitions" 2 "COPY (SELECT * FROM reads) TO '$dir/out/ours.arrow' STORED AS ARROW"
  ours tags "COPY without tags, tags_extra, 2 partitions" 2 \
    "COPY (SELECT * EXCLUDE (tags, tags_extra) FROM reads) TO '$dir/out/ours.parquet' STORED AS PARQUET"
  ours tags "COPY to Parquet, 1 partition, 1 core" 1 "$copy_parquet" taskset -c 0
  ours tags "COPY to Parquet, 1 partition" 1 "$copy_parquet"

  ours tags "registration (SELECT 1)" 2 "SELECT 1"
  # Long reads: registration alone, and the sequence counted on 1 and 2 partitions.
  ours long "registration (SELECT 1)" 2 "SELECT 1"
  ours long "count(seq), 1 partition" 1 "SELECT count(seq) FROM reads"
  ours long "count(seq), 2 partitions" 2 "SELECT count(seq) FROM reads"
done
rm -rf "$dir/out"/*

# The chart needs matplotlib (in the peers' venv); without it the report has the tables only.
"${py:-python3}" "$root/benches/report.py" "$results" --chart "$root/benches/throughput.png"
if ((failed)); then
  echo "$failed run(s) failed: their rows are missing from the report" >&2
  exit 1
fi
