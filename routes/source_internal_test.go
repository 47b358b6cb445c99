package routes

import (
	"math"
	"net/http"
	"testing"
	"time"
)

// TestDefaultHTTPClient: HTTP(url, nil) gets the documented timeouts.
func TestDefaultHTTPClient(t *testing.T) {
	c := HTTP("http://127.0.0.1:1/routes", nil).(*httpSource).client
	tr, ok := c.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("transport %T", c.Transport)
	}
	if c.Timeout != DefaultFetchTimeout || tr.ResponseHeaderTimeout != DefaultResponseHeaderTimeout ||
		tr.TLSHandshakeTimeout != DefaultDialTimeout || tr.DialContext == nil || tr.Proxy == nil {
		t.Fatalf("client timeout %v, header %v, TLS %v, dial set %v, proxy set %v",
			c.Timeout, tr.ResponseHeaderTimeout, tr.TLSHandshakeTimeout, tr.DialContext != nil, tr.Proxy != nil)
	}
	if c == http.DefaultClient || HTTP("http://x", nil).(*httpSource).client.Transport == tr {
		t.Fatal("default clients are shared")
	}
}

// TestJitter: waits are spread uniformly over [1-f, 1+f] times the
// interval, with the draw from cfg.rand; f = 0 keeps them exact.
func TestJitter(t *testing.T) {
	cfg, err := newSyncConfig([]SyncOption{Jitter(0.2)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		u    float64
		want time.Duration
	}{{0, 800 * time.Millisecond}, {0.5, time.Second}, {0.75, 1100 * time.Millisecond}} {
		cfg.rand = func() float64 { return tt.u }
		if got := cfg.spread(time.Second); got != tt.want {
			t.Errorf("spread(1s) with draw %v = %v, want %v", tt.u, got, tt.want)
		}
	}

	// With the real source: 100 pods started together spread over the
	// whole window, not in lockstep.
	cfg, _ = newSyncConfig(nil)
	const n = 100
	var buckets [10]int
	lo, hi := time.Duration(math.MaxInt64), time.Duration(0)
	for range n {
		d := cfg.spread(time.Second)
		lo, hi = min(lo, d), max(hi, d)
		b := int((float64(d)/float64(time.Second) - (1 - DefaultJitter)) / (2 * DefaultJitter) * 10)
		if b < 0 || b > 9 {
			t.Fatalf("wait %v outside [%v, %v]", d, time.Duration((1-DefaultJitter)*float64(time.Second)), time.Duration((1+DefaultJitter)*float64(time.Second)))
		}
		buckets[b]++
	}
	empty := 0
	for _, c := range buckets {
		if c == 0 {
			empty++
		}
	}
	if empty > 1 || hi-lo < 200*time.Millisecond {
		t.Fatalf("100 waits not spread: range %v..%v, tenths of the window %v", lo, hi, buckets)
	}

	cfg, _ = newSyncConfig([]SyncOption{Jitter(0)})
	cfg.rand = func() float64 { t.Fatal("drew with jitter off"); return 0 }
	if got := cfg.spread(time.Second); got != time.Second {
		t.Fatalf("no jitter: %v", got)
	}
}
