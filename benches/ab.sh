#!/usr/bin/env bash
# Before/after on one machine in one run: two CLI binaries alternate on the same statements.
#
#   benches/ab.sh BEFORE_BIN AFTER_BIN FILE.bam [ROUNDS] [SQL]
#
# SQL (default: the README's COPY (SELECT *) to Parquet) sees FILE as table `reads`; `{out}` in it
# names a scratch directory emptied before every run (write outputs there). FORMAT (default BAM),
# OPTIONS (the table's, such as "OPTIONS ('reference' 'ref.fa')") and PARTITIONS (default: the
# session's) set up the table. Each round
# runs BEFORE then AFTER; prints every run and, per binary, the median and range of wall, user and
# kernel seconds and of page faults (perf stat, when perf is installed).
set -euo pipefail
before=${1:?usage: ab.sh BEFORE_BIN AFTER_BIN FILE.bam [ROUNDS] [SQL]}
after=${2:?usage}
file=${3:?usage}
rounds=${4:-5}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
sql=${5:-"COPY (SELECT * FROM reads) TO '{out}/o.parquet' STORED AS PARQUET"}
sql=${sql//\{out\}/$out/scratch}
partitions=()
[[ -n "${PARTITIONS:-}" ]] && partitions=(-c "SET datafusion.execution.target_partitions = $PARTITIONS")
perf=()
command -v perf > /dev/null && perf=(perf stat -x, -e page-faults -o "$out/perf.txt")

for round in $(seq "$rounds"); do
  for which in before after; do
    bin=${!which}
    rm -rf "$out/scratch" && mkdir "$out/scratch"
    "${perf[@]}" /usr/bin/time -o "$out/time.txt" -f '%e %U %S' "$bin" -q "${partitions[@]}" \
      -c "CREATE EXTERNAL TABLE reads STORED AS ${FORMAT:-BAM} LOCATION '$file' ${OPTIONS:-}" -c "$sql" > /dev/null
    faults=$( ((${#perf[@]})) && grep page-faults "$out/perf.txt" | cut -d, -f1 || echo 0)
    echo "$which $(tail -1 "$out/time.txt") $faults" | tee -a "$out/runs.txt"
  done
done

python3 - "$out/runs.txt" << 'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    which, *values = line.split()
    runs.setdefault(which, []).append([float(v) for v in values])
print("| binary | runs | wall s | user s | kernel s | page faults |")
print("|---|---:|---:|---:|---:|---:|")
for which, rows in runs.items():
    cells = []
    for column in zip(*rows):
        cells.append(f"{statistics.median(column):.6g} ({min(column):.6g}-{max(column):.6g})")
    print(f"| {which} | {len(rows)} | " + " | ".join(cells) + " |")
PY
