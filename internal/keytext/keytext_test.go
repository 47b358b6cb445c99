package keytext

import "testing"

func TestContains(t *testing.T) {
	for _, tc := range []struct {
		s, sub string
		want   bool
	}{
		{"foo=bar,sandbox.id=pr-1", "sandbox.", true},
		{"sand box.id=pr-1", "sandbox.", true},
		{"s a n d b o x . i d", "sandbox.id", true},
		{"sand\tbox.\x1cid", "sandbox.id", true},
		{"sand\u00a0box.id", "sandbox.id", true},
		{"sand+box.id", "sandbox.id", true},
		{"sandbox", "sandbox.", false},
		{"sandbax.id", "sandbox.", false},
		{"sand-box.id", "sandbox.", false},
		{"userid=alice,tenant=acme", "sandbox.", false},
		{"", "sandbox.", false},
		{"x", "", true},
	} {
		if got := Contains(tc.s, tc.sub); got != tc.want {
			t.Errorf("Contains(%q, %q) = %v, want %v", tc.s, tc.sub, got, tc.want)
		}
		if got := ContainsBytes([]byte(tc.s), tc.sub); got != tc.want {
			t.Errorf("ContainsBytes([]byte(%q), %q) = %v, want %v", tc.s, tc.sub, got, tc.want)
		}
	}
}
