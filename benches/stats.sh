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
