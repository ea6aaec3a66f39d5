#!/usr/bin/env bash
# Fuzzes the whole scan for a bounded time with fresh seeds (the suite runs a fixed few).
# Failing inputs are saved to tests/data/fuzz/, where `cargo test` replays them from then on:
# commit them with the fix.
#
#   tests/fuzz.sh [seconds, default 600] [first seed, default: from the clock]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
first="${2:-$(date +%s)}"
echo "fuzzing for ${seconds}s from seed ${first}"
BAM_FUZZ_SECONDS="$seconds" BAM_FUZZ_FIRST_SEED="$first" BAM_FUZZ_FINDINGS="$PWD/tests/data/fuzz" \
  cargo test -- fuzz::mutated_files_never_panic_or_hang --nocapture
