package httpmw_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"runtime"
	"strconv"
	"testing"

	"github.com/sandboxkit/sandboxkit/httpmw"
)

// BenchmarkProxyHop measures one request through a proxy on loopback, the
// client, the proxy and the upstream (a 2-byte answer) all real servers in
// this process, at 1 and 16 concurrent clients:
//
//   - direct: the client calls the upstream, no hop;
//   - reverseproxy: httputil.ReverseProxy on [httpmw.NewProxyTransport];
//   - sandboxkit: [httpmw.NewProxy] as it ships (no WithRoundTripper), a
//     request without a sandbox;
//   - sandboxkit-sandbox: the same with a Sandbox-Id header (the trust
//     rules admit it; no route table, so it goes to the baseline).
//
// Run it with
//
//	go test ./httpmw -run '^$' -bench BenchmarkProxyHop -count 3
func BenchmarkProxyHop(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	target := mustURL(b, up.URL)

	rpTransport := httpmw.NewProxyTransport()
	defer rpTransport.CloseIdleConnections()
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = rpTransport
	sk, err := httpmw.NewProxy(newTable(b), "svc", target, httpmw.TrustAll())
	if err != nil {
		b.Fatal(err)
	}
	defer sk.CloseIdleConnections()
	rpSrv := httptest.NewServer(rp)
	defer rpSrv.Close()
	skSrv := httptest.NewServer(sk)
	defer skSrv.Close()

	for _, bc := range []struct{ name, url, sandbox string }{
		{"direct", up.URL, ""},
		{"reverseproxy", rpSrv.URL, ""},
		{"sandboxkit", skSrv.URL, ""},
		{"sandboxkit-sandbox", skSrv.URL, "pr-42"},
	} {
		for _, clients := range []int{1, 16} {
			b.Run(bc.name+"/clients="+strconv.Itoa(clients), func(b *testing.B) {
				ct := &http.Transport{MaxIdleConnsPerHost: 64}
				defer ct.CloseIdleConnections()
				c := &http.Client{Transport: ct}
				get := func() error {
					req, err := http.NewRequest(http.MethodGet, bc.url, nil)
					if err != nil {
						return err
					}
					if bc.sandbox != "" {
						req.Header.Set("Sandbox-Id", bc.sandbox)
					}
					resp, err := c.Do(req)
					if err != nil {
						return err
					}
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					return err
				}
				b.ReportAllocs()
				if clients == 1 {
					for b.Loop() {
						if err := get(); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				// RunParallel starts parallelism × GOMAXPROCS goroutines.
				b.SetParallelism(max(1, clients/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := get(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
