package httpmw_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// bufConn is a connection whose first bytes were read into a buffer.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// oneConnListener hands one connection to http.Server.Serve.
type oneConnListener struct {
	conn net.Conn
	once sync.Once
	done chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.conn })
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

// h2cUpgrader is a service that accepts the HTTP/1.1 upgrade to h2c, as
// servers built on golang.org/x/net/http2/h2c (and many others) do: after
// 101 Switching Protocols it serves HTTP/2 on the connection. h serves the
// requests of that HTTP/2 connection.
func h2cUpgrader(t *testing.T, h http.Handler) *httptest.Server {
	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true)
	var mu sync.Mutex
	var servers []*http.Server
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range servers {
			s.Close()
		}
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !slices.ContainsFunc(strings.Split(r.Header.Get("Upgrade"), ","), func(p string) bool {
			return strings.EqualFold(strings.TrimSpace(p), "h2c")
		}) {
			h.ServeHTTP(w, r)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
		s := &http.Server{Handler: h, Protocols: &h2}
		mu.Lock()
		servers = append(servers, s)
		mu.Unlock()
		go s.Serve(&oneConnListener{conn: bufConn{conn, brw.Reader}, done: make(chan struct{})})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A request that upgrades to h2c through the proxy turns the connection
// into a tunnel in which the client sends HTTP/2 requests the proxy never
// sees: an untrusted client's markers would reach the service behind the
// proxy (which forwards its baggage to the next hops), and a trusted one's
// requests would all go to the upstream its first request picked. The
// proxy must not pass the h2c upgrade on (RFC 9113 retired it; RFC 7540
// made it hop-by-hop).
func TestProxyRefusesH2CUpgrade(t *testing.T) {
	var seen []string
	var mu sync.Mutex
	up := h2cUpgrader(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%s Sandbox-Id %q Baggage %q", r.Proto, r.Header.Get("Sandbox-Id"), r.Header.Get("Baggage")))
		mu.Unlock()
		fmt.Fprint(w, "served")
	}))
	proxy := newProxyServer(t, newTable(t), up.URL, httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8")))

	for _, upgrade := range []string{"h2c", "H2C", "websocket, h2c"} {
		conn, err := net.Dial("tcp", proxy.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: cart\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: %s\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", upgrade)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			conn.Close()
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			// Served over HTTP/1.1, the upgrade ignored, as a server may.
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			conn.Close()
			if resp.StatusCode != http.StatusOK || string(b) != "served" {
				t.Errorf("Upgrade: %s: status %d %q; want the request served without the upgrade", upgrade, resp.StatusCode, b)
			}
			continue
		}
		t.Errorf("Upgrade: %s: the proxy switched protocols", upgrade)
		// Use the tunnel as an attacker would: HTTP/2 requests with markers.
		var h2 http.Protocols
		h2.SetUnencryptedHTTP2(true)
		tr := &http.Transport{Protocols: &h2, DialContext: func(context.Context, string, string) (net.Conn, error) {
			return bufConn{conn, br}, nil
		}}
		req := mustRequest(t, context.Background(), http.MethodGet, "http://cart/smuggled", nil)
		req.Header.Set("Sandbox-Id", "pr-1")
		req.Header.Set("Baggage", "sandbox.id=pr-1")
		if resp, err := tr.RoundTrip(req); err == nil {
			resp.Body.Close()
			mu.Lock()
			t.Errorf("Upgrade: %s: a request in the tunnel reached the service: %v", upgrade, seen)
			mu.Unlock()
		}
		tr.CloseIdleConnections()
		conn.Close()
	}
}

// A service that proxies with httputil.ReverseProxy on the library's
// transport, behind the library's handler: the handler strips an
// outsider's markers from the upgrade request, but the tunnel the h2c
// upgrade opens carries requests neither sees, to an upstream that trusts
// the service. The transport must not send an upgrade to h2c.
func TestTransportRefusesH2CUpgrade(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	up := h2cUpgrader(t, must(httpmw.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := propagation.FromContext(r.Context())
		mu.Lock()
		seen = append(seen, r.Proto+" "+s.ID)
		mu.Unlock()
		fmt.Fprint(w, "served")
	}), httpmw.TrustAll())))
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(mustURL(t, up.URL)) },
		Transport: must(httpmw.NewTransport(tr)),
	}
	edge := httptest.NewServer(must(httpmw.NewHandler(rp, httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8")))))
	defer edge.Close()

	conn, err := net.Dial("tcp", edge.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: cart\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "served" {
			t.Errorf("status %d %q; want the request served without the upgrade", resp.StatusCode, b)
		}
		return
	}
	t.Error("the transport sent the h2c upgrade: the edge switched protocols")
	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true)
	h2t := &http.Transport{Protocols: &h2, DialContext: func(context.Context, string, string) (net.Conn, error) {
		return bufConn{conn, br}, nil
	}}
	defer h2t.CloseIdleConnections()
	req := mustRequest(t, context.Background(), http.MethodGet, "http://cart/smuggled", nil)
	req.Header.Set("Sandbox-Id", "pr-1")
	if resp, err := h2t.RoundTrip(req); err == nil {
		resp.Body.Close()
		mu.Lock()
		t.Errorf("an outsider's request in the tunnel was served: %v", seen)
		mu.Unlock()
	}
}
