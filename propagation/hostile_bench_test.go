package propagation_test

import (
	"bufio"
	"fmt"
	"net/http"
	"strings"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// hostileSize is about what Go's http.Server lets a client send in one
// header (DefaultMaxHeaderBytes, 1 MB, minus the request line and name).
const hostileSize = 1<<20 - 4096

// hostileBaggage is the worst baggage headers we know of for the codec's
// lenient key readings, each about hostileSize long. Each one names our
// ID key once so that every codec reads it past its cheap first test.
func hostileBaggage() map[string]string {
	fill := func(unit string) string {
		return strings.Repeat(unit, hostileSize/len(unit))
	}
	return map[string]string{
		"percent":        "sandbox.id=pr-1," + fill("%"),
		"plus":           "sandbox.id=pr-1," + fill("+"),
		"spaces":         "sandbox.id=pr-1,a" + fill(" ") + "=b",
		"percent-member": "sandbox.id=pr-1," + fill("%,"),
		"plus-member":    "sandbox.id=pr-1," + fill("+,"),
		"nbsp-member":    "sandbox.id=pr-1," + fill("\u00a0,"),
		"escape-member":  "sandbox.id=pr-1," + fill("%2525,"),
		"mixed-member":   "sandbox.id=pr-1," + fill("%2B+%20 x,"),
		"odd-member":     "sb+id=pr-1," + fill("s%2Bb+,"),
	}
}

// underLimitBaggage is the worst baggage we know of just under the scan
// limits (MaxScanBaggageBytes, MaxScanBaggageMembers), which the codec
// reads member by member: there the work budget bounds the cost.
func underLimitBaggage() map[string]string {
	members := func(first, unit string) string {
		key := strings.Repeat(unit, 60/len(unit))
		out := first
		for len(out)+len(key)+3 < propagation.MaxScanBaggageBytes && strings.Count(out, ",") < propagation.MaxScanBaggageMembers-2 {
			out += "," + key + "=v"
		}
		return out
	}
	return map[string]string{
		"deep-32k":        "sandbox.id=pr-1,x%" + strings.Repeat("25", (propagation.MaxScanBaggageBytes-40)/2) + "41=v",
		"members-32k":     members("sandbox.id=pr-1", "%2B+%20 x"),
		"odd-members-32k": members("sb+id=pr-1", "s%2Bb+"),
	}
}

// BenchmarkHostileBaggage reads, tests and strips near-1 MB baggage headers
// built to make the lenient key readings work hard, with the default codec
// and with one whose keys hold '+' and '%' (read by every lenient reading,
// see oddKind). "net/http" is Go's own parse of a request carrying the same
// header: the yardstick. Run:
//
//	go test ./propagation -run '^$' -bench HostileBaggage -benchmem
func BenchmarkHostileBaggage(b *testing.B) {
	odd, err := propagation.NewCodec(propagation.WithBaggageKeys("sb+id", "sb%act", "sb.origin"))
	if err != nil {
		b.Fatal(err)
	}
	bags := hostileBaggage()
	for name, bag := range underLimitBaggage() {
		bags[name] = bag
	}
	for name, bag := range bags {
		b.Run(name+"/net-http", func(b *testing.B) {
			b.ReportAllocs()
			req := "GET / HTTP/1.1\r\nHost: x\r\nBaggage: " + bag + "\r\n\r\n"
			r := strings.NewReader(req)
			br := bufio.NewReaderSize(r, 4096)
			for b.Loop() {
				r.Reset(req)
				br.Reset(r)
				if _, err := http.ReadRequest(br); err != nil {
					b.Fatal(err)
				}
			}
		})
		for _, cc := range []struct {
			name string
			c    *propagation.Codec
		}{{"default", propagation.Default()}, {"odd", odd}} {
			c := cc.c
			h := http.Header{"Baggage": {bag}}
			b.Run(name+"/"+cc.name+"/read", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					c.Read(otelprop.HeaderCarrier(h))
				}
			})
			b.Run(name+"/"+cc.name+"/foreign", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					c.Foreign(otelprop.HeaderCarrier(h))
				}
			})
			b.Run(name+"/"+cc.name+"/strip", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					s := http.Header{"Baggage": {bag}}
					c.Strip(otelprop.HeaderCarrier(s))
				}
			})
		}
	}
}

// BenchmarkHostileDeepGateway: a request of about 0.9 MB made of 680
// distinct deep grpc-gateway spellings of baggage (depth and '-' or '_'
// varied), each holding 120 percent-encoded members that are not ours:
// every one is a deep form to look into. Quiet and Foreign read them
// until their budget is spent (MaxScanBaggageBytes), then act; Strip,
// which middleware runs on an untrusted client's request then, reads
// every member to keep it. "net-http" is Go's own parse of the request,
// the yardstick.
// Run:
//
//	go test ./propagation -run '^$' -bench HostileDeepGateway -benchmem
func BenchmarkHostileDeepGateway(b *testing.B) {
	var raw strings.Builder
	raw.WriteString("GET / HTTP/1.1\r\nHost: x\r\n")
	n := 0
	for depth := 2; n < 680; depth++ {
		for mask := 0; mask < 16 && n < 680; mask++ {
			for d := range depth {
				sep := byte('-')
				if mask&(1<<(d%4)) != 0 {
					sep = '_'
				}
				fmt.Fprintf(&raw, "Grpc%cMetadata-", sep)
			}
			raw.WriteString("Baggage: " + strings.Repeat("a%20b=1,", 120) + "\r\n")
			n++
		}
	}
	raw.WriteString("\r\n")
	req := raw.String()
	r := strings.NewReader(req)
	br := bufio.NewReaderSize(r, 4096)
	parsed, err := http.ReadRequest(br)
	if err != nil {
		b.Fatal(err)
	}
	c := propagation.Default()
	b.Run("net-http", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Reset(req)
			br.Reset(r)
			if _, err := http.ReadRequest(br); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("quiet", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.Quiet(parsed.Header)
		}
	})
	b.Run("foreign", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.Foreign(otelprop.HeaderCarrier(parsed.Header))
		}
	})
	b.Run("strip", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.Strip(otelprop.HeaderCarrier(parsed.Header.Clone()))
		}
	})
}
