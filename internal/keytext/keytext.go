// Package keytext finds a baggage key's text in a header value as the most
// lenient baggage parser may read it: with white space, control bytes or
// other bytes a parser drops anywhere between its characters. It is the
// cheap, allocation-free test that the propagation codec and the
// middleware run before they parse baggage; it may say yes to text that
// holds no key (the parse settles it), never no to text that does.
package keytext

// Skippable reports whether a parser may drop byte c from a key, or read
// it so: ASCII space and control bytes (OpenTelemetry Ruby deletes ASCII
// white space anywhere in the header, Python's str.strip also removes
// U+001C..U+001F), '+' (a space to Python's unquote_plus), and any byte
// of a multi-byte UTF-8 sequence (Unicode white space, the byte-order
// mark).
func Skippable(c byte) bool { return c <= 0x20 || c >= 0x80 || c == '+' }

// Contains reports whether s holds sub, allowing [Skippable] bytes between
// sub's bytes. sub is a printable ASCII key.
func Contains[S ~string | ~[]byte](s S, sub string) bool {
	if sub == "" {
		return true
	}
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i] != sub[0] {
			continue
		}
		j, k := i+1, 1
		for k < len(sub) && j < len(s) {
			switch {
			case s[j] == sub[k]:
				k++
			case !Skippable(s[j]):
				k = -1
			}
			if k < 0 {
				break
			}
			j++
		}
		if k == len(sub) {
			return true
		}
	}
	return false
}
