# Shell helpers of the benchmark scripts (sourced): timing a command and summarising repeats.

# Runs "$@" with its output discarded; prints "wall user+sys peak_rss_mib" (seconds, MiB).
timed() {
  local stats wall user sys kb
  stats=$( { /usr/bin/time -f "%e %U %S %M" "$@" > /dev/null; } 2>&1 | tail -1)
  read -r wall user sys kb <<< "$stats"
  echo "$wall $(echo "$user + $sys" | bc) $(( kb / 1024 ))"
}
# The median and the range ("lo-hi") of the numbers on standard input, separated by spaces.
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
range() { tr ' ' '\n' | grep . | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%s-%s", lo, hi}'; }
# Times jobs 0..JOBS-1 for RUNS rounds, the jobs alternated within each round:
#   rounds RUNS JOBS FUNCTION...
# Each job runs as `run N` in a fresh bash holding the shell functions named (the first is `run`)
# and the exported variables. Appends each job's wall and CPU seconds to the caller's associative
# arrays `walls` and `cpus` (space-separated) and keeps its last peak RSS in `rss`.
rounds() {
  local runs=$1 jobs=$2 round i wall cpu mib
  shift 2
  for ((round = 0; round < runs; round++)); do
    for ((i = 0; i < jobs; i++)); do
      read -r wall cpu mib <<< "$(timed bash -c "$(declare -f "$@"); run $i")"
      walls[$i]+="$wall "
      cpus[$i]+="$cpu "
      rss[$i]=$mib
    done
  done
}
# Prints the median and range of each job's wall and CPU seconds, and its peak RSS, from the
# arrays `rounds` filled, one line per job, named by the arguments in job order:
#   table NAME...
table() {
  local i=0 name width=0
  for name in "$@"; do
    if ((${#name} > width)); then width=${#name}; fi
  done
  printf "%-${width}s  %-18s %-18s %s\n" command "wall s (range)" "CPU s (range)" "peak RSS MiB"
  for name in "$@"; do
    printf "%-${width}s  %-18s %-18s %s\n" "$name" \
      "$(median <<< "${walls[$i]}") ($(range <<< "${walls[$i]}"))" \
      "$(median <<< "${cpus[$i]}") ($(range <<< "${cpus[$i]}"))" "${rss[$i]}"
    i=$((i + 1))
  done
}
