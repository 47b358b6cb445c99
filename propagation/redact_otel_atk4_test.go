package propagation_test

import (
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// FuzzRedactTicketOTel (atk4, held): after Codec.RedactTicket, no value
// of a member or property that OpenTelemetry's baggage parser reads from
// any header holds the signature of the ticket the fuzzer placed, plain
// or percent-encoded, in any member, property, or header.
func FuzzRedactTicketOTel(f *testing.F) {
	const tk = "v1.k1.1795777200.XQeUWNmS-hDLwG5atOYl5Hm4S_6kk0wA-lnBFXkpnPg"
	const sig = "XQeUWNmS-hDLwG5atOYl5Hm4S_6kk0wA-lnBFXkpnPg"
	f.Add("sandbox.id=pr-1,sandbox.ticket=", "", 0)
	f.Add("a=b;p=", ",c=d", 1)
	f.Add("note=", ";x", 2)
	f.Add("sandbox.ticket = ", " ;q", 3)
	f.Add("v1.a.1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "", 4)
	f.Fuzz(func(t *testing.T, before, after string, form int) {
		var v string
		switch form % 4 {
		case 0:
			v = tk
		case 1:
			v = strings.ReplaceAll(tk, ".", "%2E")
		case 2:
			v = "%76%31" + strings.ReplaceAll(tk[2:], ".", "%2e")
		default:
			v = tk[:len(tk)-43] + "%58" + sig[1:]
		}
		line := before + v + after
		for _, key := range []string{"Baggage", "Grpc-Metadata-Baggage", "Grpc-Metadata-Grpc-Metadata-Baggage", "X-Note"} {
			h := http.Header{key: {line}}
			propagation.Default().RedactTicket(otelprop.HeaderCarrier(h))
			for _, vals := range h {
				for _, l := range vals {
					if strings.Contains(l, sig) || strings.Contains(decodeAll(l), sig) {
						t.Fatalf("%s: %q: RedactTicket left %q", key, line, l)
					}
					b, err := baggage.Parse(l)
					if err != nil {
						continue
					}
					for _, m := range b.Members() {
						if strings.Contains(m.Value(), sig) {
							t.Fatalf("%s: %q: OpenTelemetry reads member %s=%q after RedactTicket", key, line, m.Key(), m.Value())
						}
						for _, p := range m.Properties() {
							if pv, _ := p.Value(); strings.Contains(pv, sig) {
								t.Fatalf("%s: %q: OpenTelemetry reads property %s=%q after RedactTicket", key, line, p.Key(), pv)
							}
						}
					}
				}
			}
		}
	})
}
