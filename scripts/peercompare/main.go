// Command peercompare is the server side of scripts/peer-compare.sh: a
// small upstream that answers every request with its name, and a
// sandboxkit hop (httpmw.NewProxy with a static route table) in front of
// two of them. It is run by hand, never by CI.
//
//	peercompare upstream ADDR NAME
//	peercompare handler ADDR NAME
//	peercompare proxy ADDR BASELINE_URL SANDBOX_URL
//
// handler is upstream with httpmw.NewHandler in front, in the same process:
// what a service that imports the library runs on every hop.
// The proxy admits sandbox markers from 127.0.0.0/8 and sends sandbox
// "pr-1" to SANDBOX_URL, everything else to BASELINE_URL. Both stop on
// SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/routes"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("peercompare: ")
	h, addr, err := handler(os.Args[1:])
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

var trusted = httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8"))

func handler(args []string) (http.Handler, string, error) {
	switch {
	case len(args) == 3 && (args[0] == "upstream" || args[0] == "handler"):
		name := args[2] + "\n"
		var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, name)
		})
		if args[0] == "handler" {
			var err error
			if h, err = httpmw.NewHandler(h, trusted); err != nil {
				return nil, "", err
			}
		}
		return h, args[1], nil
	case len(args) == 4 && args[0] == "proxy":
		base, err := url.Parse(args[2])
		if err != nil {
			return nil, "", fmt.Errorf("baseline URL: %w", err)
		}
		tab, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1", Services: map[string]routes.Route{"svc": {Upstream: args[3]}}}})
		if err != nil {
			return nil, "", err
		}
		p, err := httpmw.NewProxy(tab, "svc", base, trusted)
		if err != nil {
			return nil, "", err
		}
		return p, args[1], nil
	}
	return nil, "", errors.New("usage: peercompare upstream|handler ADDR NAME | peercompare proxy ADDR BASELINE_URL SANDBOX_URL")
}
