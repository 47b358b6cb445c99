#!/usr/bin/env bash
# check-generated.sh: the committed generated code of every .proto in the
# repository is what the pinned generators make of it today. It copies
# each directory holding a buf.gen.yaml to a temporary directory,
# regenerates there (buf from tools/go.mod compiles the .proto, no protoc
# needed; protoc-gen-go and protoc-gen-go-grpc are the tool directives of
# go.mod) and diffs. Exit 1 with the diff when they differ.
#
# For .ci/run, from the repository root:
#
#   scripts/check-generated.sh
set -euo pipefail
# -modfile is refused in workspace mode, and the repository has a go.work
# that tools/go.mod is no module of.
export GOWORK=off
cd "$(dirname "$0")/.."
root=$(pwd)
tmp=$(mktemp -d)
work=
trap 'rm -rf "$tmp" ${work:+"$work"}' EXIT

status=0
while IFS= read -r gen; do
	dir=$(dirname "$gen")
	# The copy stays inside the repository's module (a temporary directory
	# under it) so that `go tool` finds go.mod's generators.
	work="$root/$dir/.regenerate"
	rm -rf "$work"
	mkdir -p "$work"
	cp "$dir"/*.proto "$dir"/buf.yaml "$dir"/buf.gen.yaml "$work"/
	(cd "$work" && go tool -modfile="$root/tools/go.mod" buf generate)
	for f in "$work"/*.pb.go; do
		if ! diff -u "$dir/$(basename "$f")" "$f" > "$tmp/diff"; then
			echo "$dir/$(basename "$f") is not what the generators make of $dir/*.proto; run go generate ./$dir:"
			cat "$tmp/diff"
			status=1
		fi
	done
	# A generated file the generators no longer make (its .proto renamed
	# or removed) is stale too.
	for f in "$dir"/*.pb.go; do
		if [ -e "$f" ] && [ ! -e "$work/$(basename "$f")" ]; then
			echo "$f is generated code the generators no longer make of $dir/*.proto; remove it"
			status=1
		fi
	done
	rm -rf "$work"
done < <(git ls-files '*buf.gen.yaml')
[ "$status" -eq 0 ] && echo "generated code is current"
exit "$status"
