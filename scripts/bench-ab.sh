#!/usr/bin/env bash
# bench-ab.sh compares the benchmarks of two revisions, old and new binaries
# interleaved in one run so that the machine's swings hit both alike.
#
#	scripts/bench-ab.sh OLD [NEW] [PKG...]
#
# OLD and NEW are git revisions (NEW defaults to the work tree as it is).
# For each package, it builds one test binary per revision, then runs every
# benchmark the two have in common COUNT times (default 6), alternating old
# and new, each for BENCHTIME (default 200ms), and prints benchstat's
# comparison. BENCH (a regexp) keeps only the benchmark functions it
# matches. Run by hand, not by CI.
set -euo pipefail
cd "$(dirname "$0")/.."

old=${1:?usage: scripts/bench-ab.sh OLD [NEW] [PKG...]}
new=${2:-}
shift $(( $# >= 2 ? 2 : 1 ))
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=($(go list ./... | sed "s#^$(go list -m)#.#"))
count=${COUNT:-6}
benchtime=${BENCHTIME:-200ms}

work=$(mktemp -d)
trap 'git worktree remove --force "$work/old" >/dev/null 2>&1 || true; [ -n "$new" ] && git worktree remove --force "$work/new" >/dev/null 2>&1; rm -rf "$work"' EXIT
git worktree add --detach -q "$work/old" "$old"
newdir=.
if [ -n "$new" ]; then
	git worktree add --detach -q "$work/new" "$new"
	newdir="$work/new"
fi

: >"$work/old.txt"
: >"$work/new.txt"
for pkg in "${pkgs[@]}"; do
	name=$(echo "$pkg" | tr / _)
	(cd "$work/old" && go test -c -o "$work/$name.old" "$pkg" 2>/dev/null) || { echo "skip $pkg: no test binary at $old"; continue; }
	(cd "$newdir" && go test -c -o "$work/$name.new" "$pkg") || { echo "skip $pkg: no test binary at new"; continue; }
	[ -x "$work/$name.old" ] && [ -x "$work/$name.new" ] || continue
	common=$(comm -12 <("$work/$name.old" -test.list '^Benchmark' | sort) <("$work/$name.new" -test.list '^Benchmark' | sort) | grep -E "${BENCH:-.}" || true)
	[ -n "$common" ] || continue
	re="^($(echo "$common" | paste -sd'|'))\$"
	echo "== $pkg: $(echo "$common" | wc -l) benchmarks"
	for _ in $(seq "$count"); do
		for v in old new; do
			dir="$work/old"
			[ "$v" = new ] && dir="$newdir"
			(cd "$dir/$pkg" && "$work/$name.$v" -test.run '^$' -test.bench "$re" -test.benchmem \
				-test.benchtime "$benchtime" -test.count 1) | grep -E '^(Benchmark|pkg:|goos:|goarch:|cpu:)' >>"$work/$v.txt" || true
		done
	done
done
go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da "$work/old.txt" "$work/new.txt"
