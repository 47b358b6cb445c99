package kafkamw_test

import "github.com/segmentio/kafka-go"

// Baggage keys that OpenTelemetry Go does not read as ours but another
// OpenTelemetry SDK consuming the same topic does, and sends on clean:
// Ruby deletes ASCII white space anywhere in the header before it splits
// it; Python percent-decodes a key and str.strip()s it, which removes
// U+001C..U+001F too. They are markers: TestUnreadable requires that no
// reader hands such a message to its code.
func init() {
	for name, bag := range map[string]string{
		"ruby-space-in-key": "a=1,sand box.id=pr-42",
		"ruby-tab-in-key":   "sandbox.\tactor=mallory,sandbox.id=pr-42",
		"python-fs-key":     "%1Csandbox.id=pr-42",
		"python-us-raw-key": "\x1fsandbox.id=pr-42",
	} {
		malformed[name] = []kafka.Header{{Key: "baggage", Value: []byte(bag)}}
	}
	// Jaeger's and OpenTracing's baggage header forms of our ID key, which
	// their OpenTelemetry propagators read into baggage.
	malformed["jaeger-header-form"] = []kafka.Header{{Key: "uberctx-sandbox.id", Value: []byte("pr-42")}}
	malformed["ot-header-form"] = []kafka.Header{{Key: "OT-Baggage-Sandbox.Id", Value: []byte("pr-42")}}
}
