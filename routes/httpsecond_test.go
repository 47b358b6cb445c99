package routes_test

// Attack on the HTTP source by a static file server (atkctl): validators
// that name a second, not a version.

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
)

// TestHTTPChangeWithinTheSecondOfLastModified: a static server (Go's
// http.FileServer, nginx) names a document's version by its modification
// time in whole seconds. Two sandboxctl commands in one second (CI jobs
// of two pull requests) write two versions that a fetch between them
// cannot tell apart by Last-Modified: a conditional request after the
// second write is answered 304, and the source would keep the first
// version until the document next changes: a removal that never takes
// effect. A Last-Modified less than a second before the response's Date
// is not a validator (RFC 9110, 8.8.2.2): the next fetch is a full one.
func TestHTTPChangeWithinTheSecondOfLastModified(t *testing.T) {
	for name, etag := range map[string]bool{"Last-Modified": false, "nginx ETag": true} {
		t.Run(name, func(t *testing.T) {
			second := time.Date(2026, 12, 8, 2, 0, 0, 0, time.UTC)
			var (
				mu      sync.Mutex
				content = doc("pr-1", "h:1")
				modtime = second.Add(100 * time.Millisecond)
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				c, m := content, modtime
				mu.Unlock()
				// The server's clock is in the second of the writes, as
				// when it answers between them.
				w.Header().Set("Date", second.Add(500*time.Millisecond).Format(http.TimeFormat))
				if etag {
					// nginx: the modification second and the length.
					w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, m.Unix(), len(c)))
				}
				http.ServeContent(w, r, "routes.json", m, bytes.NewReader([]byte(c)))
			}))
			defer srv.Close()
			tbl := routes.New()
			src := routes.HTTP(srv.URL, nil)
			if err := tbl.Load(context.Background(), src); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			content, modtime = doc("pr-2", "h:1"), second.Add(900*time.Millisecond) // pr-1 removed
			mu.Unlock()
			if err := tbl.Load(context.Background(), src); err != nil {
				t.Fatal(err)
			}
			if up, ok := tbl.Lookup("pr-1", "cart"); ok {
				t.Fatalf("after the second write of the second, pr-1 still routes to %q", up)
			}
			if _, ok := tbl.Lookup("pr-2", "cart"); !ok {
				t.Fatal("after the second write of the second, pr-2 does not route")
			}
		})
	}
}
