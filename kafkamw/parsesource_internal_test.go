package kafkamw

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// TestParseSource checks the split-mode source header's parser against
// what it replaced: strings.Cut at the first '/', then strconv.Atoi and
// strconv.ParseInt(s, 10, 64), over signs, leading zeros, the int64
// range's ends and past them, extra slashes, spaces, underscores, hex,
// non-ASCII digits and random strings over those bytes.
func TestParseSource(t *testing.T) {
	old := func(v string) (int, int64, bool) {
		p, o, found := strings.Cut(v, "/")
		if !found {
			return 0, 0, false
		}
		part, err1 := strconv.Atoi(p)
		off, err2 := strconv.ParseInt(o, 10, 64)
		if err1 != nil || err2 != nil {
			return 0, 0, false
		}
		return part, off, true
	}
	vals := []string{"", "/", "0/0", "1/2", "+1/+2", "-1/-2", "01/007", "1/2/3", "a/1", "1/a", " 1/2", "1 /2", "1/ 2",
		"9223372036854775807/9223372036854775807", "9223372036854775808/1", "1/9223372036854775808",
		"-9223372036854775808/-9223372036854775808", "-9223372036854775809/0", "0/-9223372036854775809",
		"99999999999999999999/1", "1/18446744073709551616", "1/18446744073709551615", "1_0/2", "0x1/2", "+/1", "-/1", "1/+", "1/-",
		"\uff11/2", "1/\u0662", "++1/2", "+-1/2", "2147483648/1", "-2147483649/1", "4294967296/5", "1/" + strings.Repeat("0", 40) + "7"}
	rng := rand.New(rand.NewPCG(20, 3))
	alphabet := []byte("0123456789+-/ _x\xff")
	for range 50000 {
		b := make([]byte, rng.IntN(24))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
			if rng.IntN(3) > 0 {
				b[i] = byte('0' + rng.IntN(10))
			}
		}
		vals = append(vals, string(b))
	}
	for _, v := range vals {
		p, o, ok := parseSource([]byte(v))
		wp, wo, wok := old(v)
		if p != wp || o != wo || ok != wok {
			t.Errorf("parseSource(%q) = %d, %d, %v; strconv reads %d, %d, %v", v, p, o, ok, wp, wo, wok)
		}
	}
}
