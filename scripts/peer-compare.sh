#!/usr/bin/env bash
# peer-compare.sh: one HTTP hop measured four ways, side by side, on this
# machine: direct to the upstream; to the same upstream with sandboxkit's
# handler (httpmw.NewHandler) in its own process, what a service that
# imports the library runs; through a sandboxkit proxy hop (httpmw.NewProxy,
# for services that cannot import it); and through nginx routing on the
# same header (map $http_sandbox_id $upstream), a stand-in for a sidecar.
# The servers are scripts/peercompare. wrk drives each at 1 and 16 connections,
# the four alternating in every round, and the script prints requests per
# second and p50 latency per round, then the median of each and its ratio to
# direct.
#
# Run by hand from the repository root, never by CI:
#
#   scripts/peer-compare.sh            # 3 rounds of 5 s per measurement
#   ROUNDS=5 DURATION=10 scripts/peer-compare.sh
#
# Needs: go, nginx and wrk on PATH (Debian: apt-get install -y nginx wrk);
# the script installs nothing. All traffic stays on 127.0.0.1, on ports
# PORT_BASE..PORT_BASE+4 (default 18081..18085), which must be free. Every
# loop is bounded: ROUNDS (at most 20) × 4 targets × 2 connection counts ×
# DURATION seconds (at most 60), and each wrk run is killed after
# DURATION+10 s.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
PORT_BASE=${PORT_BASE:-18081}
(( ROUNDS >= 1 && ROUNDS <= 20 )) || { echo "peer-compare: ROUNDS must be 1..20" >&2; exit 2; }
(( DURATION >= 1 && DURATION <= 60 )) || { echo "peer-compare: DURATION must be 1..60" >&2; exit 2; }
for tool in go nginx wrk; do
	command -v "$tool" >/dev/null || { echo "peer-compare: needs $tool on PATH (Debian: apt-get install -y nginx wrk)" >&2; exit 2; }
done

P_BASE=$PORT_BASE P_SB=$((PORT_BASE + 1)) P_SK=$((PORT_BASE + 2)) P_NGX=$((PORT_BASE + 3)) P_MW=$((PORT_BASE + 4))
work=$(mktemp -d /tmp/peer-compare.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	[[ -f $work/nginx.pid ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/peercompare" ./scripts/peercompare
"$work/peercompare" upstream "127.0.0.1:$P_BASE" baseline & pids+=($!)
"$work/peercompare" upstream "127.0.0.1:$P_SB" sandbox & pids+=($!)
"$work/peercompare" handler "127.0.0.1:$P_MW" sandbox & pids+=($!)
"$work/peercompare" proxy "127.0.0.1:$P_SK" "http://127.0.0.1:$P_BASE" "http://127.0.0.1:$P_SB" & pids+=($!)

mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path $work/nginx;
	proxy_temp_path $work/nginx;
	fastcgi_temp_path $work/nginx;
	uwsgi_temp_path $work/nginx;
	scgi_temp_path $work/nginx;
	upstream baseline { server 127.0.0.1:$P_BASE; keepalive 64; }
	upstream sandbox { server 127.0.0.1:$P_SB; keepalive 64; }
	map \$http_sandbox_id \$upstream {
		default baseline;
		pr-1    sandbox;
	}
	server {
		listen 127.0.0.1:$P_NGX;
		location / {
			proxy_pass http://\$upstream;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}
}
NGINX
nginx -p "$work" -c "$work/nginx.conf"

# Every target must answer the sandbox's request with the sandbox upstream.
for port in $P_SB $P_MW $P_SK $P_NGX; do
	for _ in $(seq 50); do
		body=$(curl -fsS -H 'Sandbox-Id: pr-1' "http://127.0.0.1:$port/" 2>/dev/null || true)
		[[ $body == sandbox ]] && break
		sleep 0.1
	done
	[[ $body == sandbox ]] || { echo "peer-compare: 127.0.0.1:$port answered '$body', want 'sandbox'" >&2; exit 1; }
done

declare -A url=([direct]="http://127.0.0.1:$P_SB/" [handler]="http://127.0.0.1:$P_MW/" [proxy]="http://127.0.0.1:$P_SK/" [nginx]="http://127.0.0.1:$P_NGX/")
targets=(direct handler proxy nginx)
results=$work/results
: >"$results"

# wrk_run TARGET CONNS prints "rps p50_us".
wrk_run() {
	local out threads=$(( $2 < 2 ? 1 : 2 ))
	out=$(timeout $((DURATION + 10)) wrk -t"$threads" -c"$2" -d"${DURATION}s" --latency -H 'Sandbox-Id: pr-1' "${url[$1]}")
	awk '
		function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1000000; return v }
		/Requests\/sec:/ { rps = $2 }
		$1 == "50%" { p50 = us($2) }
		END { printf "%.0f %.1f\n", rps, p50 }' <<<"$out"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "rounds: $ROUNDS, $DURATION s per measurement; nginx $(nginx -v 2>&1 | cut -d/ -f2), $(go version | cut -d' ' -f3)"
printf '%-6s %-6s %-11s %12s %10s\n' round conns target req/s p50-us
for round in $(seq "$ROUNDS"); do
	for conns in 1 16; do
		# Alternate the order each round, so that no target always runs first.
		order=("${targets[@]}")
		(( round % 2 == 0 )) && order=(nginx proxy handler direct)
		for t in "${order[@]}"; do
			read -r rps p50 < <(wrk_run "$t" "$conns")
			printf '%-6s %-6s %-11s %12s %10s\n' "$round" "$conns" "$t" "$rps" "$p50"
			echo "$conns $t $rps $p50" >>"$results"
		done
	done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "medians over $ROUNDS rounds, and ratios to direct (throughput: higher is better; p50: lower is better)"
printf '%-6s %-11s %12s %10s %12s %10s\n' conns target req/s p50-us rps/direct p50/direct
for conns in 1 16; do
	median() { sort -n | awk '{a[NR]=$1} END { if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
	d_rps=$(awk -v c="$conns" '$1==c && $2=="direct" {print $3}' "$results" | median)
	d_p50=$(awk -v c="$conns" '$1==c && $2=="direct" {print $4}' "$results" | median)
	for t in "${targets[@]}"; do
		rps=$(awk -v c="$conns" -v t="$t" '$1==c && $2==t {print $3}' "$results" | median)
		p50=$(awk -v c="$conns" -v t="$t" '$1==c && $2==t {print $4}' "$results" | median)
		awk -v c="$conns" -v t="$t" -v r="$rps" -v p="$p50" -v dr="$d_rps" -v dp="$d_p50" \
			'BEGIN { printf "%-6s %-11s %12.0f %10.1f %12.2f %10.2f\n", c, t, r, p, r/dr, p/dp }'
	done
done
