package breaker_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// containmentLoad is the traffic of TestContainment, in requests per
// second. The race detector slows everything down several times, so under
// it the same shape runs at a lower scale instead of being skipped.
type containmentLoad struct {
	budget   float64 // runaway's (and calm's) rate budget
	runaway  float64 // 20x the budget
	calm     float64 // well within the budget
	baseline float64
}

func loadForTest() containmentLoad {
	if raceEnabled {
		return containmentLoad{budget: 20, runaway: 400, calm: 5, baseline: 100}
	}
	return containmentLoad{budget: 50, runaway: 1000, calm: 10, baseline: 250}
}

const (
	// serviceTime is what the downstream spends on each request it
	// serves, waiting as on its own dependencies (a database, say).
	serviceTime = 2 * time.Millisecond
	// blockTime is the length of one measured block; pairs is the number
	// of (quiet, loaded) block pairs.
	blockTime = 400 * time.Millisecond
	pairs     = 6
)

// sample is one request a client made.
type sample struct {
	latency    time.Duration
	status     int
	retryAfter string
	err        error
}

// sender sends requests at a fixed rate, open loop: request k is due at
// start + k/rate and is sent by the first free worker (at once when it is
// already late). send makes one request on behalf of worker w.
type sender struct {
	rate    float64
	workers int
	send    func(w int) sample
}

func (s *sender) run(start, end time.Time) []sample {
	var (
		next atomic.Int64
		mu   sync.Mutex
		out  []sample
		wg   sync.WaitGroup
	)
	for w := range s.workers {
		wg.Go(func() {
			for {
				k := next.Add(1) - 1
				due := start.Add(time.Duration(float64(k) / s.rate * float64(time.Second)))
				if !due.Before(end) {
					return
				}
				time.Sleep(time.Until(due))
				smp := s.send(w)
				mu.Lock()
				out = append(out, smp)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

// httpSender is a client as a service has one: net/http through the
// sandboxkit transport, the sandbox (if any) in the request's context.
func httpSender(t *testing.T, url, id string, rate float64, workers int) *sender {
	ctx := context.Background()
	if id != "" {
		ctx = propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: id, Actor: id + "-owner"})
	}
	base := &http.Transport{MaxIdleConnsPerHost: workers}
	t.Cleanup(base.CloseIdleConnections)
	c := &http.Client{Transport: httpmw.NewTransport(base), Timeout: 10 * time.Second}
	return &sender{rate: rate, workers: workers, send: func(int) sample {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return sample{err: err}
		}
		t0 := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			return sample{err: err}
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return sample{latency: time.Since(t0), status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), err: err}
	}}
}

// rawSender is the runaway's client: one keep-alive connection per worker,
// a request encoded once, and responses scanned in place. The runaway
// shares this process and its 2 cores with the downstream, which it would
// not in production, and a full net/http client at 1000 req/s makes
// garbage and work of its own: aimed at a decoy server, so that neither
// the downstream nor the library saw a request, it alone raised baseline
// p50 by about 10% while this test was written. The downstream still
// reads, checks and answers every request in full.
func rawSender(t *testing.T, addr, id string, rate float64, workers int) *sender {
	req := []byte("GET / HTTP/1.1\r\nHost: " + addr + "\r\nSandbox-Id: " + id +
		"\r\nBaggage: sandbox.id=" + id + ",sandbox.actor=" + id + "-owner\r\n\r\n")
	conns := make([]net.Conn, workers)
	readers := make([]*bufio.Reader, workers)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[i], readers[i] = c, bufio.NewReader(c)
	}
	return &sender{rate: rate, workers: workers, send: func(w int) sample {
		if _, err := conns[w].Write(req); err != nil {
			return sample{err: err}
		}
		return readResponse(readers[w])
	}}
}

// readResponse reads one HTTP/1.1 response with a Content-Length body,
// without allocating.
func readResponse(br *bufio.Reader) sample {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return sample{err: err}
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return sample{err: fmt.Errorf("bad status line %q", line)}
	}
	smp := sample{status: int(line[9]-'0')*100 + int(line[10]-'0')*10 + int(line[11]-'0')}
	length := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return sample{err: err}
		}
		if len(line) <= 2 {
			break
		}
		name, value, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			length = 0
			for _, c := range value {
				length = 10*length + int(c-'0')
			}
		case bytes.EqualFold(name, []byte("Retry-After")):
			smp.retryAfter = "set"
		}
	}
	if length < 0 {
		return sample{err: errors.New("response without Content-Length")}
	}
	if _, err := br.Discard(length); err != nil {
		return sample{err: err}
	}
	return smp
}

// arrival is one runaway request as the downstream saw it: when it came
// in, and whether the budget admitted it.
type arrival struct {
	at       time.Time
	admitted bool
}

type arrivals struct {
	mu  sync.Mutex
	all []arrival
}

func (a *arrivals) add(at time.Time, admitted bool) {
	a.mu.Lock()
	a.all = append(a.all, arrival{at, admitted})
	a.mu.Unlock()
}

func (a *arrivals) between(from, to time.Time) []arrival {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []arrival
	for _, x := range a.all {
		if !x.at.Before(from) && !x.at.After(to) {
			out = append(out, x)
		}
	}
	// Recorded as they finished: an admitted request finishes later than
	// refusals that came in after it.
	slices.SortFunc(out, func(x, y arrival) int { return x.at.Compare(y.at) })
	return out
}

// statusWriter notes the status the middleware answered with.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// TestContainment is the bounded load test of the blast-radius promise: a
// downstream HTTP service behind the server-side middleware with a
// per-sandbox budget; sandbox "runaway" sends at 20x its budget, sandbox
// "calm" and baseline clients at ordinary rates. Everything runs on
// 127.0.0.1, for about 5 s (10 s when the latency comparison has to be
// made again) and a fixed number of requests.
//
// It alternates quiet blocks (calm and baseline only) with loaded blocks
// (runaway too), in the order Q L L Q Q L L Q Q L L Q, so that whatever
// else the machine does at the time weighs on both kinds alike. It
// asserts:
//
//   - runaway's admitted rate is within 10% of its budget;
//   - calm and baseline are never refused;
//   - baseline p99 latency with the runaway present stays within
//     latencyTolerance of the p99 without it (the target is 1.2; see
//     latencyRatio for the statistic and the tolerance).
func TestContainment(t *testing.T) {
	ld := loadForTest()
	g := breaker.NewGroup(breaker.Settings{Name: "downstream", Budget: breaker.Budget{Rate: ld.budget}})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(serviceTime)
		io.WriteString(w, "ok")
	})
	mw := httpmw.NewHandler(app, httpmw.TrustAll(), httpmw.WithBreaker(g))
	var runaway arrivals
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Sandbox-Id") != "runaway" {
			mw.ServeHTTP(w, r)
			return
		}
		at := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		mw.ServeHTTP(sw, r)
		runaway.add(at, sw.code == 0 || sw.code == http.StatusOK)
	}))
	t.Cleanup(srv.Close)

	run := rawSender(t, srv.Listener.Addr().String(), "runaway", ld.runaway, 8)
	calm := httpSender(t, srv.URL, "calm", ld.calm, 2)
	base := httpSender(t, srv.URL, "", ld.baseline, 4)
	runBlock := func(loaded bool, d time.Duration) block {
		b := block{loaded: loaded, start: time.Now().Add(5 * time.Millisecond)}
		b.end = b.start.Add(d)
		var wg sync.WaitGroup
		wg.Go(func() { b.baseline = base.run(b.start, b.end) })
		wg.Go(func() { b.calm = calm.run(b.start, b.end) })
		if loaded {
			wg.Go(func() { b.runaway = run.run(b.start, b.end) })
		}
		wg.Wait()
		b.done = time.Now()
		return b
	}

	for attempt := 1; ; attempt++ {
		runBlock(true, 200*time.Millisecond) // warm-up: connections, code paths
		var blocks []block
		for i := range 2 * pairs {
			blocks = append(blocks, runBlock(i%4 == 1 || i%4 == 2, blockTime)) // Q L L Q ...
		}
		checkRefusals(t, blocks)
		checkRunaway(t, blocks, &runaway, ld.budget)
		if t.Failed() {
			return
		}
		ratio := latencyRatio(t, blocks)
		if ratio <= latencyTolerance {
			return
		}
		if attempt == attempts {
			t.Fatalf("baseline p99 with the runaway is %.2fx the p99 without it, in %d attempts; want at most %.1f (target 1.2)",
				ratio, attempts, latencyTolerance)
		}
		t.Logf("attempt %d: ratio %.2f over %.1f; measuring again", attempt, ratio, latencyTolerance)
	}
}

// block is what happened in one measured block.
type block struct {
	loaded     bool
	start, end time.Time // the senders' schedule
	done       time.Time // the last answer came back
	baseline   []sample
	calm       []sample
	runaway    []sample
}

// checkRefusals: calm and baseline, every request served.
func checkRefusals(t *testing.T, blocks []block) {
	t.Helper()
	var n [2]int
	for _, b := range blocks {
		for i, smp := range [...][]sample{b.calm, b.baseline} {
			n[i] += len(smp)
			for _, x := range smp {
				if x.err != nil || x.status != http.StatusOK {
					t.Errorf("%s request refused or failed: status %d, err %v", [...]string{"calm", "baseline"}[i], x.status, x.err)
				}
			}
		}
	}
	t.Logf("calm: %d requests, baseline: %d requests, none refused", n[0], n[1])
}

// checkRunaway: the runaway's admitted rate. A loaded block begins with the
// tokens gathered since the last one (up to the burst); from the first
// refusal on the bucket is empty and admissions follow the rate alone, so
// the rate is measured from the first refusal of each block to its last
// request, as the downstream saw them.
func checkRunaway(t *testing.T, blocks []block, runaway *arrivals, budget float64) {
	t.Helper()
	var sent, refused, admittedInWindows int
	var loadedTime, window time.Duration
	for _, b := range blocks {
		if !b.loaded {
			continue
		}
		loadedTime += b.end.Sub(b.start)
		sent += len(b.runaway)
		for _, x := range b.runaway {
			if x.err != nil || (x.status != http.StatusOK && x.status != http.StatusTooManyRequests) {
				t.Fatalf("runaway request: status %d, err %v; want 200 or 429", x.status, x.err)
			}
			if x.status == http.StatusTooManyRequests {
				refused++
				if x.retryAfter == "" {
					t.Fatal("429 without Retry-After")
				}
			}
		}
		seen := runaway.between(b.start, b.done)
		first := slices.IndexFunc(seen, func(a arrival) bool { return !a.admitted })
		if first < 0 {
			t.Fatalf("a loaded block without a refusal: %d runaway requests all admitted", len(seen))
		}
		window += seen[len(seen)-1].at.Sub(seen[first].at)
		for _, a := range seen[first:] {
			if a.admitted {
				admittedInWindows++
			}
		}
	}
	offered := float64(sent) / loadedTime.Seconds()
	admitted := float64(admittedInWindows) / window.Seconds()
	t.Logf("runaway: offered %.0f req/s (%.1fx its budget of %.0f/s), %d sent, %d refused with 429; admitted %.1f req/s (%d in %v after each block's first refusal), %+.1f%% off budget",
		offered, offered/budget, budget, sent, refused, admitted, admittedInWindows, window.Round(time.Millisecond), 100*(admitted/budget-1))
	if offered < 10*budget {
		t.Errorf("runaway offered only %.0f req/s, under 10x its budget: the load generator fell behind, the test proves nothing", offered)
	}
	if math.Abs(admitted/budget-1) > 0.10 {
		t.Errorf("runaway admitted at %.1f req/s; want within 10%% of its budget %.0f", admitted, budget)
	}
}

// Tolerance of the latency comparison.
const (
	// latencyTolerance bounds the ratio latencyRatio returns; the target
	// is 1.2.
	latencyTolerance = 1.5
	// attempts is how many times the comparison may be made.
	attempts = 2
)

// latencyRatio compares baseline latency with and without the runaway and
// returns the median, over the (quiet, loaded) pairs of adjacent blocks, of
// the loaded block's p99 over the quiet block's p99.
//
// Why a tolerance, and this statistic. Measured while writing this test,
// on the 2 shared cores it runs on: two quiet blocks alone differ by up to
// +-25% at p99, more when a colleague's build runs (the "quiet against
// quiet" figure in the log shows the noise of each run); and serving the
// runaway costs the downstream something no budget can save, since each of
// its 950 refused requests a second is still read, checked and answered:
// baseline p50 rises by 2-6% and p99 typically by 0-30%, more when the
// machine's CPU is saturated by other work. Pairing adjacent blocks cancels
// slow drifts of the machine's load, and the median over the pairs lets no
// single disturbed block decide. The bound is 1.5, and the comparison is
// made a second time (never more) when the first exceeds it, so that one
// burst of outside load does not fail the test while a regression that
// makes baseline wait behind the runaway (queued behind its budget, or
// served after it) fails both. Refusals of baseline requests are asserted
// to be zero separately. The log says whether the 1.2 target was met.
func latencyRatio(t *testing.T, blocks []block) float64 {
	t.Helper()
	var quiet, loaded, quietEven, quietOdd []time.Duration // p99 per block
	var ratios []float64
	var allQuiet, allLoaded []time.Duration
	for i := 0; i+1 < len(blocks); i += 2 {
		q, l := blocks[i], blocks[i+1]
		if q.loaded {
			q, l = l, q
		}
		ql, ll := latencies(q.baseline), latencies(l.baseline)
		pq, pl := pct(ql, 0.99), pct(ll, 0.99)
		quiet, loaded = append(quiet, pq), append(loaded, pl)
		allQuiet, allLoaded = append(allQuiet, ql...), append(allLoaded, ll...)
		ratios = append(ratios, float64(pl)/float64(pq))
		if (i/2)%2 == 0 {
			quietEven = append(quietEven, pq)
		} else {
			quietOdd = append(quietOdd, pq)
		}
	}
	sorted := slices.Clone(ratios)
	slices.Sort(sorted)
	ratio := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		ratio = (sorted[len(sorted)/2-1] + ratio) / 2
	}
	target := "met"
	if ratio > 1.2 {
		target = "missed"
	}
	t.Logf("baseline p99 per pair of blocks: quiet %v, with the runaway %v, ratios %.2f", round(quiet), round(loaded), ratios)
	t.Logf("baseline p99 with the runaway over p99 without it, median of %d pairs: %.2f (target 1.2 %s, asserted at %.1f)",
		len(ratios), ratio, target, latencyTolerance)
	t.Logf("for scale: quiet against quiet (odd pairs' blocks against even pairs') %.2f; all requests pooled, with the runaway over without: p50 %.2f, p99 %.2f (%v over %v)",
		float64(median(quietOdd))/float64(median(quietEven)),
		float64(pct(allLoaded, 0.5))/float64(pct(allQuiet, 0.5)), float64(pct(allLoaded, 0.99))/float64(pct(allQuiet, 0.99)),
		pct(allLoaded, 0.99).Round(10*time.Microsecond), pct(allQuiet, 0.99).Round(10*time.Microsecond))
	return ratio
}

func latencies(s []sample) []time.Duration {
	out := make([]time.Duration, 0, len(s))
	for _, x := range s {
		out = append(out, x.latency)
	}
	return out
}

func round(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Microsecond)
	}
	return out
}

// pct returns the q-quantile of ls (nearest rank).
func pct(ls []time.Duration, q float64) time.Duration {
	if len(ls) == 0 {
		return 0
	}
	s := slices.Clone(ls)
	slices.Sort(s)
	return s[max(0, int(math.Ceil(q*float64(len(s))))-1)]
}
