// Package keytext finds a baggage key's text in a header value as the most
// lenient baggage parser may read it: with white space, control bytes or
// other bytes a parser drops anywhere between its characters. It is the
// cheap, allocation-free test that the propagation codec and the
// middleware run before they parse baggage; it may say yes to text that
// holds no key (the parse settles it), never no to text that does.
package keytext

import (
	"bytes"
	"strings"
)

// Skippable reports whether a parser may drop byte c from a key, or read
// it so: ASCII space and control bytes (OpenTelemetry Ruby deletes ASCII
// white space anywhere in the header, Python's str.strip also removes
// U+001C..U+001F), '+' (a space to Python's unquote_plus), and any byte
// of a multi-byte UTF-8 sequence (Unicode white space, the byte-order
// mark).
func Skippable(c byte) bool { return c <= 0x20 || c >= 0x80 || c == '+' }

// Contains reports whether s holds sub, allowing [Skippable] bytes between
// sub's bytes. sub is a printable ASCII key.
func Contains(s, sub string) bool {
	if sub == "" {
		return true
	}
	for i := 0; ; i++ {
		j := strings.IndexByte(s[i:], sub[0])
		if j < 0 {
			return false
		}
		i += j
		if matchAt(s, i+1, sub[1:]) {
			return true
		}
	}
}

// At reports whether s holds sub from index i, [Skippable] bytes allowed
// between sub's bytes: the test [Contains] runs at each candidate, for a
// caller that finds the candidates itself (several keys in one pass over
// s). sub is a printable ASCII key.
func At(s string, i int, sub string) bool {
	if sub == "" {
		return true
	}
	return i < len(s) && s[i] == sub[0] && matchAt(s, i+1, sub[1:])
}

// ContainsBytes is [Contains] on a byte slice.
func ContainsBytes(s []byte, sub string) bool {
	if sub == "" {
		return true
	}
	for i := 0; ; i++ {
		j := bytes.IndexByte(s[i:], sub[0])
		if j < 0 {
			return false
		}
		i += j
		if matchAt(s, i+1, sub[1:]) {
			return true
		}
	}
}

// matchAt reports whether s from index j holds rest, [Skippable] bytes
// allowed before each of its bytes.
func matchAt[S string | []byte](s S, j int, rest string) bool {
	for k := 0; k < len(rest); j++ {
		if j >= len(s) {
			return false
		}
		switch {
		case s[j] == rest[k]:
			k++
		case !Skippable(s[j]):
			return false
		}
	}
	return true
}
