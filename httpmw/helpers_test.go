package httpmw_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
	"github.com/sandboxkit/sandboxkit/internal/porttest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// auditLog keeps the audit records the middleware emits.
type auditLog = audittest.Recorder

func newAuditLog() (*auditLog, *slog.Logger) { return audittest.New() }

// seen is what the test handler reports about the request it served.
type seen struct {
	Server  string   `json:"server"`
	Sandbox string   `json:"sandbox"`
	Actor   string   `json:"actor"`
	Header  []string `json:"header"`
	Baggage []string `json:"baggage"`
	Path    string   `json:"path"`
	Body    string   `json:"body"`
	Host    string   `json:"host"`
}

// echo is a handler that reports what it saw: the sandbox in its context
// and the marker headers left on the request.
func echo(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := propagation.FromContext(r.Context())
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(seen{
			Server:  name,
			Sandbox: s.ID,
			Actor:   s.Actor,
			Header:  r.Header.Values("Sandbox-Id"),
			Baggage: r.Header.Values("Baggage"),
			Path:    r.URL.RequestURI(),
			Body:    string(body),
			Host:    r.Host,
		})
	})
}

func decodeSeen(t *testing.T, resp *http.Response) seen {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var s seen
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("decoding %q: %v", b, err)
	}
	return s
}

// rawResponse is the answer to a request written byte for byte.
type rawResponse struct {
	status      int
	contentType string
	body        string
}

// sendRaw writes headers (each "Name: value", exactly as given, names not
// canonicalised) in a GET request to srv over a fresh TCP connection and
// returns the response.
func sendRaw(t *testing.T, srv *httptest.Server, headers []string) rawResponse {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "GET /probe HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", srv.Listener.Addr())
	for _, h := range headers {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return rawResponse{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: string(body)}
}

// closedAddr returns a loopback address nothing listens on until the test
// ends: a connection to it is refused (see porttest.Refused).
func closedAddr(t *testing.T) string {
	t.Helper()
	return porttest.Refused(t)
}

// newClient returns a client with its own transport stack, closed when the
// test ends.
func newClient(t testing.TB, rt http.RoundTripper) *http.Client {
	c := &http.Client{Transport: rt, Timeout: 10 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// must returns v, the result of a constructor the test configured
// correctly; a misconfiguration fails the test with a panic naming it.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
