package provision

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/propagation"
)

func TestObjectName(t *testing.T) {
	for _, c := range []struct{ prefix, id, want string }{
		{"sbx_", "pr-42", "sbx_pr_42"},
		{"sbx_", "a--b", "sbx_a__b"},
		{"sbx_", "0", "sbx_0"},
		{"sbx_", strings.Repeat("x", 58), "sbx_" + strings.Repeat("x", 58)}, // 62 bytes: plain
	} {
		if got := objectName(c.prefix, c.id); got != c.want {
			t.Errorf("objectName(%q, %q) = %q, want %q", c.prefix, c.id, got, c.want)
		}
	}
	// 59 bytes of ID no longer fit: exactly 63 bytes, hashed.
	long := strings.Repeat("x", 59)
	if got := objectName("sbx_", long); len(got) != 63 || !strings.HasPrefix(got, "sbx_"+strings.Repeat("x", 42)+"_") {
		t.Errorf("objectName(long) = %q (%d bytes)", got, len(got))
	}
}

// TestObjectNameCollisions checks the rule is one-to-one on a large sample
// of IDs built to collide: same starts, '-' against '_'-looking ends, every
// length, and never the template's name.
func TestObjectNameCollisions(t *testing.T) {
	for _, prefix := range []string{"s", "sbx_", "t0123456789abcdef_", strings.Repeat("p", MaxPrefixLen)} {
		seen := map[string]string{templateName(prefix): "(template)"}
		add := func(id string) {
			if propagation.ValidateID(id) != nil {
				return
			}
			name := objectName(prefix, id)
			if len(name) > maxIdentLen || !strings.HasPrefix(name, prefix) {
				t.Fatalf("prefix %q id %q: name %q (%d bytes)", prefix, id, name, len(name))
			}
			if other, dup := seen[name]; dup && other != id {
				t.Fatalf("prefix %q: %q and %q share the name %q", prefix, other, id, name)
			}
			seen[name] = id
		}
		for n := 1; n <= propagation.MaxIDLen; n++ {
			for _, fill := range []string{"a", "-", "0"} {
				for _, end := range []string{"a", "b", "1", "-a", "a-", "--z"} {
					base := "x" + strings.Repeat(fill, max(0, n-1-len(end)))
					add(base + end)
				}
			}
			for i := range 20 {
				add(fmt.Sprintf("%s%d", strings.Repeat("q", max(0, n-3)), i))
			}
		}
		if len(seen) < 1000 {
			t.Fatalf("prefix %q: only %d names checked", prefix, len(seen))
		}
	}
}

func TestMarkers(t *testing.T) {
	created := time.Date(2026, 11, 27, 9, 30, 0, 0, time.UTC)
	m := sandboxMarker("pr-42", created)
	if want := `sandboxkit/dbroute sandbox="pr-42" created=2026-11-27T09:30:00Z`; m != want {
		t.Fatalf("marker = %q, want %q", m, want)
	}
	if id, at, ok := parseSandboxMarker(m); !ok || id != "pr-42" || !at.Equal(created) {
		t.Errorf("parse(%q) = %q, %v, %v", m, id, at, ok)
	}
	for _, bad := range []string{
		"",
		"made by hand",
		m + " ",
		m + "x",
		" " + m,
		`sandboxkit/dbroute sandbox="pr-42"`,
		`sandboxkit/dbroute sandbox="PR-42" created=2026-11-27T09:30:00Z`,
		`sandboxkit/dbroute sandbox="pr_42" created=2026-11-27T09:30:00Z`,
		`sandboxkit/dbroute sandbox=pr-42 created=2026-11-27T09:30:00Z`,
		`sandboxkit/dbroute sandbox="pr-42" created=2026-11-27T10:30:00+01:00`, // not canonical
		`sandboxkit/dbroute sandbox="pr-42" created=yesterday`,
		`sandboxkit/dbroute template version="v1"`,
		markerTemplateBuild,
	} {
		if id, _, ok := parseSandboxMarker(bad); ok {
			t.Errorf("parse(%q) accepted it as sandbox %q", bad, id)
		}
	}

	for _, c := range []struct {
		prefix, name, comment string
		want                  bool
	}{
		{"sbx_", "sbx_pr_42", m, true},
		{"sbx_", "sbx_pr_43", m, false},     // marker of another name
		{"abc_", "sbx_pr_42", m, false},     // another prefix
		{"sbx_", "sbx_pr_42", "", false},    // no marker
		{"sbx_", "sbx__template", m, false}, // the template is not a sandbox
	} {
		if _, _, ok := owner(c.prefix, c.name, c.comment); ok != c.want {
			t.Errorf("owner(%q, %q, %q) = %v, want %v", c.prefix, c.name, c.comment, ok, c.want)
		}
	}
}

func TestQuoteLiteral(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:         `'plain'`,
		`it's`:          `'it''s'`,
		`back\slash`:    `E'back\\slash'`,
		`both\'`:        `E'both\\'''`,
		`v="1" \"x\" '`: `E'v="1" \\"x\\" '''`,
	} {
		if got := quoteLiteral(in); got != want {
			t.Errorf("quoteLiteral(%q) = %s, want %s", in, got, want)
		}
	}
}

func FuzzParseSandboxMarker(f *testing.F) {
	f.Add(sandboxMarker("pr-42", time.Date(2026, 11, 27, 9, 30, 0, 0, time.UTC)))
	f.Add(`sandboxkit/dbroute sandbox="a" created=2026-11-27T10:30:00+01:00`)
	f.Add(markerTemplateBuild)
	f.Fuzz(func(t *testing.T, comment string) {
		id, created, ok := parseSandboxMarker(comment)
		if !ok {
			return
		}
		// Only the canonical rendering of a valid sandbox is accepted.
		if err := propagation.ValidateID(id); err != nil {
			t.Fatalf("accepted invalid ID %q", id)
		}
		if again := sandboxMarker(id, created); again != comment {
			t.Fatalf("accepted %q, which renders as %q", comment, again)
		}
	})
}

func FuzzObjectName(f *testing.F) {
	f.Add("pr-42")
	f.Add(strings.Repeat("a", 63))
	f.Fuzz(func(t *testing.T, id string) {
		if propagation.ValidateID(id) != nil {
			return
		}
		name := objectName(DefaultPrefix, id)
		if len(name) > maxIdentLen || !strings.HasPrefix(name, DefaultPrefix) {
			t.Fatalf("%q: name %q", id, name)
		}
		if len(name) < maxIdentLen {
			// The plain form can be read back.
			if back := strings.ReplaceAll(strings.TrimPrefix(name, DefaultPrefix), "_", "-"); back != id {
				t.Fatalf("%q: name %q reads back as %q", id, name, back)
			}
		}
		if got, _, ok := owner(DefaultPrefix, name, sandboxMarker(id, time.Unix(0, 0))); !ok || got != id {
			t.Fatalf("%q: its own marker is not recognised on %q", id, name)
		}
	})
}
