package readme

import (
	"bytes"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
)

// jsonFence matches a ```json block of the README.
var jsonFence = regexp.MustCompile("(?ms)^```json\n(.*?)^```")

// The route tables the README shows are ones a user can paste: they parse,
// validate, and their sandboxes have not expired (an expired sandbox is
// silently not routed, so a pasted table would do nothing).
func TestRouteFiles(t *testing.T) {
	src, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, b := range jsonFence.FindAllSubmatch(src, -1) {
		if !bytes.Contains(b[1], []byte(`"sandboxes"`)) {
			continue
		}
		n++
		sbs, err := routes.ParseDocument(b[1])
		if err != nil {
			t.Errorf("README route table does not parse: %v\n%s", err, b[1])
			continue
		}
		if err := routes.Validate(sbs); err != nil {
			t.Errorf("README route table is invalid: %v\n%s", err, b[1])
		}
		for _, sb := range sbs {
			if !sb.Expires.IsZero() && !sb.Expires.After(time.Now()) {
				t.Errorf("README route table: sandbox %s expired at %v; pasted, it routes nothing", sb.ID, sb.Expires)
			}
			// The README's Kafka section asks for an explicit activeFrom
			// on every route: without one each table stamps its own load
			// time, and two readers can both skip a message.
			for name, r := range sb.Services {
				if r.ActiveFrom.IsZero() {
					t.Errorf("README route table: route %s of sandbox %s has no activeFrom, which the README's Kafka section asks of every route", name, sb.ID)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no route table in README.md")
	}
}
