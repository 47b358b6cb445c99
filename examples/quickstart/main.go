// Command quickstart shows sandboxkit's request path in one process: a
// frontend that admits sandbox requests only with a signed ticket, calling a
// greeter service whose sandbox pr-42 runs a changed version next to the
// baseline.
//
//	go run ./examples/quickstart
//
// It sends a production request, a sandbox request with a ticket and a
// forged one without, prints where each landed and what the audit log
// said, and exits non-zero when anything landed in the wrong place.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(out io.Writer) error {
	var servers []*http.Server
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	serve := func(h http.Handler) (string, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		s := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, s)
		go s.Serve(ln)
		return "http://" + ln.Addr().String(), nil
	}
	greeter := func(version string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			who := "production"
			if s, ok := propagation.FromContext(r.Context()); ok {
				who = "sandbox " + s.ID + " of " + s.Actor
			}
			fmt.Fprintf(w, "%s greeter, serving %s", version, who)
		})
	}

	// The greeter: baseline and the sandbox's changed version. Internal
	// hops trust each other (the frontend is the edge that filters).
	internal := func(h http.Handler) (string, error) {
		mw, err := httpmw.NewHandler(h, httpmw.TrustAll())
		if err != nil {
			return "", err
		}
		return serve(mw)
	}
	baseline, err := internal(greeter("baseline"))
	if err != nil {
		return err
	}
	sandboxed, err := internal(greeter("changed"))
	if err != nil {
		return err
	}
	table, err := routes.NewStatic([]routes.Sandbox{{
		ID: "pr-42", Actor: "alice",
		Services: map[string]routes.Route{"greeter": {Upstream: sandboxed}},
	}})
	if err != nil {
		return err
	}

	// The frontend: admits sandbox markers only with a valid ticket, and
	// calls the greeter through the sandbox-aware transport.
	key := propagation.Key{ID: "demo", Secret: []byte("demo secret: use a random 32+ byte key")}
	verifier, err := propagation.NewVerifier(key)
	if err != nil {
		return err
	}
	var auditLog strings.Builder
	logger := slog.New(slog.NewTextHandler(&auditLog, nil))
	toGreeter, err := httpmw.NewRoutingTransport(nil, table, "greeter", httpmw.WithLogger(logger))
	if err != nil {
		return err
	}
	client := &http.Client{Transport: toGreeter}
	front, err := httpmw.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, baseline+"/hello", nil)
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		io.Copy(w, resp.Body)
	}), httpmw.WithVerifier(verifier), httpmw.WithLogger(logger))
	if err != nil {
		return err
	}
	frontend, err := serve(front)
	if err != nil {
		return err
	}

	signer, err := propagation.NewSigner(key)
	if err != nil {
		return err
	}
	s := propagation.Sandbox{ID: "pr-42", Actor: "alice"}
	ticket, err := signer.Sign(s, time.Hour)
	if err != nil {
		return err
	}
	withTicket := propagation.Default().HTTPHeader(s)
	propagation.Default().InjectTicket(ticket, otelprop.HeaderCarrier(withTicket))
	forged := propagation.Default().HTTPHeader(s)

	failed := false
	for _, step := range []struct {
		name   string
		header http.Header
		want   string
	}{
		{"production request", nil, "baseline greeter, serving production"},
		{"sandbox request with a ticket", withTicket, "changed greeter, serving sandbox pr-42 of alice"},
		{"forged sandbox header, no ticket", forged, "baseline greeter, serving production"},
	} {
		got, err := get(frontend, step.header)
		mark := "✓"
		if err != nil || got != step.want {
			mark, failed = "✗", true
		}
		fmt.Fprintf(out, "%s %-34s → %s\n", mark, step.name, got)
		if err != nil {
			fmt.Fprintf(out, "  error: %v\n", err)
		}
	}
	fmt.Fprintf(out, "\naudit log:\n%s", auditLog.String())
	if failed {
		return errors.New("a request landed in the wrong place")
	}
	return nil
}

func get(url string, h http.Header) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	return string(b), err
}
