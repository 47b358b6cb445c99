package routes_test

// Attacks on the HTTP source (#15): a server that sends too much, or
// sends the table elsewhere.

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/routes"
)

// TestHTTPHugeBody: a body over MaxDocumentSize is refused, declared or
// not (chunked): the last good table stays.
func TestHTTPHugeBody(t *testing.T) {
	huge := `{"sandboxes":[` + strings.Repeat(" ", routes.MaxDocumentSize) + `]}`
	for name, declare := range map[string]bool{"with Content-Length": true, "chunked": false} {
		t.Run(name, func(t *testing.T) {
			bad := false
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !bad {
					w.Write([]byte(doc("pr-1", "h:1")))
					return
				}
				if !declare {
					w.Header().Set("Transfer-Encoding", "chunked")
				}
				w.Write([]byte(huge))
			}))
			defer srv.Close()
			tbl := routes.New()
			src := routes.HTTP(srv.URL, nil)
			if err := tbl.Load(context.Background(), src); err != nil {
				t.Fatal(err)
			}
			bad = true
			lastKnownGood(t, tbl, src, "h:1", "a huge body")
			if !strings.Contains(tbl.Err().Error(), "larger than") {
				t.Fatalf("Err = %v", tbl.Err())
			}
		})
	}
}

// TestHTTPRedirect: the default client follows a redirect on the same
// server, and refuses one to another server: the route table, which
// decides where sandbox traffic goes, is read only from where it was
// configured.
func TestHTTPRedirect(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(doc("pr-1", "evil.example:443")))
	}))
	defer other.Close()
	target := other.URL + "/routes.json"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/moved":
			http.Redirect(w, r, "/routes.json", http.StatusFound)
		case "/routes.json":
			w.Write([]byte(doc("pr-1", "h:1")))
		default:
			http.Redirect(w, r, target, http.StatusFound)
		}
	}))
	defer srv.Close()

	tbl := routes.New()
	if err := tbl.Load(context.Background(), routes.HTTP(srv.URL+"/moved", nil)); err != nil {
		t.Fatalf("a redirect on the same server: %v", err)
	}
	lastKnownGood(t, tbl, routes.HTTP(srv.URL+"/elsewhere", nil), "h:1", "a redirect to another server")
	if !strings.Contains(tbl.Err().Error(), "redirect") {
		t.Fatalf("Err = %v, want it to name the redirect", tbl.Err())
	}
}
