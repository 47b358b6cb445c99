package audit_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/httpmw"
)

// Audit records are log/slog records on the logger given to a middleware
// (here httpmw's, as JSON): a log pipeline finds them by their message and
// matches on the attribute keys and values this package names. An outsider
// forging a sandbox header is stripped and served as production.
func Example() {
	var log bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&log, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{} // for a stable output
			}
			return a
		},
	}))
	handler, err := httpmw.NewHandler(http.NotFoundHandler(), httpmw.WithLogger(logger))
	if err != nil {
		fmt.Println(err)
		return
	}
	req := httptest.NewRequest("GET", "http://orders/", nil) // from 192.0.2.1, not trusted
	req.Header.Set("Sandbox-Id", "pr-42")
	handler.ServeHTTP(httptest.NewRecorder(), req)

	var rec map[string]any
	if err := json.Unmarshal(log.Bytes(), &rec); err != nil {
		fmt.Println(err)
		return
	}
	if rec[slog.MessageKey] != audit.Message {
		return // not an audit record
	}
	fmt.Println(rec[slog.LevelKey], rec[audit.KeyDecision] == string(audit.Stripped), rec[audit.KeyID], rec[audit.KeyProtocol])
	fmt.Println(strings.HasPrefix(rec[audit.KeyReason].(string), audit.ReasonUntrusted))
	// Output:
	// WARN true pr-42 http
	// true
}
