#!/usr/bin/env bash
# BAM output benchmark: `COPY ... STORED AS BAM` against samtools writing the same BAM, on the
# benchmark file of benches/compare.sh (tests/data/make.sh --big-only: about 3M simulated 150 bp
# paired-end reads), in one run on one machine, the commands alternated.
#
#   benches/write_bam.sh        RUNS (default 3) rounds of every command
#   BASELINE=/path/to/old/datafusion-bam benches/write_bam.sh
#                               also runs the unsorted COPY TO BAM with an older build, for a
#                               before/after ratio of one run
#
# BENCH_DIR (default ~/.cache/datafusion-bam/bench) keeps big.bam between runs.
# Prints a Markdown table (wall: median and range; CPU seconds, user + sys; peak RSS) and ratios.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${BENCH_DIR:-$HOME/.cache/datafusion-bam/bench}
runs=${RUNS:-3}
mkdir -p "$dir/noindex" "$dir/out"
[[ -f "$dir/big.bam" ]] || "$root/tests/data/make.sh" --big-only "$dir" > /dev/null
ln -sf "$dir/big.bam" "$dir/noindex/big.bam"
plain=$dir/noindex/big.bam
(cd "$root" && cargo build --release --quiet --bin datafusion-bam)
bin=${CARGO_TARGET_DIR:-$root/target}/release/datafusion-bam
records=$(samtools view -c -@2 "$plain")
echo "# $records records, $(( $(stat -L -c %s "$plain") / 1000000 )) MB, $(nproc) cores, ${runs} rounds"
echo

ours() { # SQL: one CLI run with the table registered, 2 partitions
  "${cli:-$bin}" -q -c "SET datafusion.execution.target_partitions = 2" \
    -c "CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION '$plain'" -c "$1"
}
names=(
  "samtools view -b -@2 (all records, level 6)"
  "COPY (SELECT *) TO BAM, 2 partitions (level 6)"
  "samtools sort -@2 + samtools index"
  "COPY (SELECT * ORDER BY rname, pos) TO BAM, index 'bai'"
  "COPY (SELECT *) TO Parquet (zstd 1), 2 partitions"
  "samtools view -b -q 30 -@2 (a filter, level 6)"
  "COPY (SELECT * WHERE mapq >= 30) TO BAM, 2 partitions"
)
[[ -n "${BASELINE:-}" ]] && names+=("COPY (SELECT *) TO BAM, baseline build")
run() {
  case $1 in
    0) samtools view -b -@2 -o "$dir/out/samtools.bam" "$plain" ;;
    1) ours "COPY (SELECT * FROM reads) TO '$dir/out/ours.bam' STORED AS BAM" ;;
    2) samtools sort -@2 -m 1G -o "$dir/out/sorted.bam" "$plain" && samtools index "$dir/out/sorted.bam" ;;
    3) ours "COPY (SELECT * FROM reads ORDER BY rname, pos) TO '$dir/out/ours_sorted.bam' STORED AS BAM OPTIONS ('index' 'bai')" ;;
    4) ours "COPY (SELECT * FROM reads) TO '$dir/out/ours.parquet' STORED AS PARQUET" ;;
    5) samtools view -b -q 30 -@2 -o "$dir/out/samtools_q30.bam" "$plain" ;;
    6) ours "COPY (SELECT * FROM reads WHERE mapq >= 30) TO '$dir/out/ours_q30.bam' STORED AS BAM" ;;
    7) cli=$BASELINE ours "COPY (SELECT * FROM reads) TO '$dir/out/baseline.bam' STORED AS BAM" ;;
  esac
}

export -f run ours
export plain dir bin BASELINE
declare -A walls cpus rss
for round in $(seq "$runs"); do
  for i in "${!names[@]}"; do
    rm -rf "${dir:?}/out"/*
    /usr/bin/time -o "$dir/time.txt" -f '%e %U %S %M' bash -c "run $i" \
      > /dev/null 2> "$dir/err.txt" || { echo "FAILED: ${names[$i]}" >&2; cat "$dir/err.txt" >&2; exit 1; }
    read -r wall user sys kb < <(tail -1 "$dir/time.txt")
    walls[$i]+="$wall "
    cpus[$i]+="$(echo "$user + $sys" | bc) "
    rss[$i]=$(( kb / 1024 ))
    printf 'round %d: %-58s %6.2f s\n' "$round" "${names[$i]}" "$wall" >&2
  done
done
# The last round's outputs are checked: samtools reads ours as it reads the source.
run 1 > /dev/null
[[ $(samtools view -c -@2 "$dir/out/ours.bam") == "$records" ]] || { echo "ours.bam lost records" >&2; exit 1; }
run 6 > /dev/null
[[ $(samtools view -c "$dir/out/ours_q30.bam") == $(samtools view -c -q 30 "$plain") ]] \
  || { echo "ours_q30.bam holds other records than samtools -q 30 keeps" >&2; exit 1; }

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
range() { tr ' ' '\n' | grep . | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%s-%s", lo, hi}'; }
echo "| what | wall, median (s) | wall range (s) | CPU user+sys, median (s) | peak RSS (MiB) |"
echo "|---|---:|---:|---:|---:|"
declare -A med
for i in "${!names[@]}"; do
  med[$i]=$(echo "${walls[$i]}" | median)
  echo "| ${names[$i]} | ${med[$i]} | $(echo "${walls[$i]}" | range) | $(echo "${cpus[$i]}" | median) | ${rss[$i]} |"
done
echo
ratio() { echo "scale=2; ${med[$1]} / ${med[$2]}" | bc; }
cpu_ratio() { echo "scale=2; $(echo "${cpus[$1]}" | median) / $(echo "${cpus[$2]}" | median)" | bc; }
echo "Ratios of medians (> 1: ours is slower):"
echo "- COPY TO BAM / samtools view -b -@2: wall $(ratio 1 0), CPU $(cpu_ratio 1 0)"
echo "- sorted + indexed COPY / samtools sort + index: wall $(ratio 3 2), CPU $(cpu_ratio 3 2)"
echo "- COPY TO BAM / COPY TO Parquet: wall $(ratio 1 4)"
echo "- filtered COPY TO BAM / samtools view -b -q 30 -@2: wall $(ratio 6 5), CPU $(cpu_ratio 6 5)"
[[ -z "${BASELINE:-}" ]] || echo "- COPY TO BAM / the baseline build's: wall $(ratio 1 7), CPU $(cpu_ratio 1 7)"
