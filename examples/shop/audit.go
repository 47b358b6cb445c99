package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"github.com/sandboxkit/sandboxkit/audit"
)

// auditLog keeps the audit records every component writes, so that the
// scenario can show and check them. Components get loggers from
// [auditLog.logger]; the records are JSON lines in memory and, when tee is
// set, text on tee as well.
type auditLog struct {
	mu    sync.Mutex
	lines [][]byte
	root  *slog.Logger
}

func newAuditLog(tee io.Writer) *auditLog {
	a := &auditLog{}
	var h slog.Handler = slog.NewJSONHandler(a, nil)
	if tee != nil {
		h = slog.NewMultiHandler(h, slog.NewTextHandler(tee, nil))
	}
	a.root = slog.New(h)
	return a
}

// logger returns the logger of service: its records carry service=name.
func (a *auditLog) logger(service string) *slog.Logger {
	return a.root.With("service", service)
}

// Write implements io.Writer for the JSON handler: one call per record.
func (a *auditLog) Write(p []byte) (int, error) {
	a.mu.Lock()
	a.lines = append(a.lines, bytes.Clone(p))
	a.mu.Unlock()
	return len(p), nil
}

// mark returns a position in the log, for [auditLog.since].
func (a *auditLog) mark() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.lines)
}

// record is one audit record: its attributes as strings.
type record map[string]string

// since returns the records written after mark.
func (a *auditLog) since(mark int) []record {
	a.mu.Lock()
	lines := a.lines[mark:]
	a.mu.Unlock()
	out := make([]record, 0, len(lines))
	for _, l := range lines {
		var m map[string]any
		if json.Unmarshal(l, &m) != nil {
			continue
		}
		r := make(record, len(m))
		for k, v := range m {
			r[k] = fmt.Sprint(v)
		}
		out = append(out, r)
	}
	return out
}

// count returns how many of recs have every attribute of want.
func count(recs []record, want record) int {
	n := 0
next:
	for _, r := range recs {
		for k, v := range want {
			if r[k] != v {
				continue next
			}
		}
		n++
	}
	return n
}

// summary renders recs one line per kind (service, decision, protocol,
// sandbox, target), with how many there were and the first reason.
func summary(recs []record) []string {
	type kind struct{ service, decision, protocol, id, target string }
	n := map[kind]int{}
	reason := map[kind]string{}
	var order []kind
	for _, r := range recs {
		k := kind{r["service"], r[audit.KeyDecision], r[audit.KeyProtocol], r[audit.KeyID], r[audit.KeyTarget]}
		if n[k] == 0 {
			order = append(order, k)
			reason[k] = r[audit.KeyReason]
		}
		n[k]++
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i].service < order[j].service })
	var out []string
	for _, k := range order {
		var b strings.Builder
		fmt.Fprintf(&b, "%-14s %-9s %-5s sandbox=%s", k.service, k.decision, k.protocol, k.id)
		if k.target != "" {
			fmt.Fprintf(&b, " target=%s", k.target)
		}
		if reason[k] != "" {
			fmt.Fprintf(&b, " (%s)", clip(reason[k], 90))
		}
		if n[k] > 1 {
			fmt.Fprintf(&b, " ×%d", n[k])
		}
		out = append(out, b.String())
	}
	return out
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
