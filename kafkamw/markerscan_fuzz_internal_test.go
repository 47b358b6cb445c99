package kafkamw

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// The marker scan before 8021b5f, b68caef, 3efd00a, c464f04 and 4e80983
// (c67ab68), kept as the oracle of the fuzz targets below.

func oldKeyIs(k, name string) bool { return k == name || strings.EqualFold(k, name) }

func (m *markers) oldMemberKey(k string) bool {
	for _, mk := range m.named {
		if len(k) >= len(mk) && strings.EqualFold(k, mk) {
			return true
		}
	}
	return false
}

func (m *markers) oldScanKey(hs []kafka.Header, k *memoKey) (st headerState, memoize bool) {
	memoize = true
	look := false
	for i := range hs {
		switch key := hs[i].Key; {
		case m.header != "" && oldKeyIs(key, m.header):
			st = hasMarkers
			memoize = memoize && !k.hasHeader
			k.header, k.hasHeader = hs[i].Value, true
		case m.oldMemberKey(key):
			st, memoize = hasMarkers, false
		case len(key) > len("ot-baggage-") && key[0]|0x20 == 'o' && m.lookalike(key):
			look = true
		case oldKeyIs(key, baggageKey):
			if st != hasMarkers {
				st = bagOnly
				if m.mentioned(hs[i].Value) {
					st = hasMarkers
				}
			}
			memoize = memoize && !k.hasBag
			k.bag, k.hasBag = hs[i].Value, true
		}
	}
	if look {
		return lookalike, false
	}
	return st, memoize && len(k.header) <= memoMaxBytes && len(k.bag) <= memoMaxBytes
}

func oldParseSource(v []byte) (int, int64, bool) {
	p, o, found := strings.Cut(string(v), "/")
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

// fuzzCodecs are the codecs the fuzz targets scan with: the default one,
// one reading Signadot's and Okteto's keys too (more key headers, of
// other lengths and first bytes), and one whose dedicated header and
// member keys start with k and s (the letters ſ and K fold to).
func fuzzCodecs(t testing.TB) []*propagation.Codec {
	t.Helper()
	cs := []*propagation.Codec{propagation.Default()}
	for _, opts := range [][]propagation.Option{
		{propagation.WithSignadot(), propagation.WithOkteto()},
		{propagation.WithHeader("k-sid"), propagation.WithBaggageKeys("ks.id", "s", "so")},
	} {
		c, err := propagation.NewCodec(opts...)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	return cs
}

// fuzzHeaders reads a header list from b: headers separated by '\n', a
// key from its value by the first '='.
func fuzzHeaders(b []byte) []kafka.Header {
	if len(b) == 0 {
		return nil
	}
	var hs []kafka.Header
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		k, v, _ := bytes.Cut(line, []byte{'='})
		hs = append(hs, kafka.Header{Key: string(k), Value: v})
	}
	return hs
}

// markerSeeds are header lists (in fuzzHeaders' form) an outsider might
// craft against the length and first-byte shortcuts: Unicode folds
// (ſ to s, Kelvin K to k, and other multi-byte runes that do not fold
// to ASCII), keys of our keys' lengths with bytes above 0x7F, empty
// keys, the split source header in other cases and twice.
var markerSeeds = []string{
	"sandbox-id=pr-1",
	"SANDBOX-ID=pr-1",
	"ſandbox-id=pr-1",
	"sandbox-\u212aid=pr-1",
	"\u212a-sid=pr-1\nks.id=x",
	"\u212as.id=pr-1",
	"\u212aſ.id=pr-1",
	"sandbox.id=pr-1",
	"ſandbox.id=pr-1",
	"Sandbox.Id=pr-1",
	"sandbox.ıd=pr-1",
	"sandbox.İd=pr-1",
	"sandbox\xc5.id=pr-1",
	"sandbox-i\xff=pr-1",
	"\xffandbox-id=pr-1",
	"sandbox-idſ=pr-1",
	"=\n=x\nbaggage=sandbox.id=pr-1",
	"baggage=sandbox.id=pr-1",
	"BAGGAGE=sandbox.id=pr-1",
	"baggaǵe=sandbox.id=pr-1",
	"ot-baggage-sandbox.id=pr-1",
	"ot-baggage-ſandbox.id=pr-1",
	"ot-baggage-sandbox%2Eid=pr-1",
	"OT-BAGGAGE-SANDBOX.ID=pr-1",
	"sandboxkit-split-source=0/1\nsandbox-id=pr-1",
	"Sandboxkit-Split-Source=0/1\nsandbox-id=pr-1",
	"sandboxkit-split-source=0/1\nsandboxkit-split-source=0/2\nsandbox-id=pr-1",
	"ſandboxkit-split-source=0/1\nbaggage=sandbox.id=pr-1",
	"sandboxkit-split-topic=t\nsandboxkit-split-source=0/1\nbaggage=sandbox.id=pr-1",
	"traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\nbaggage=sandbox.id=pr-1",
	"okteto-divert=x\nsignadot-routing-key=y",
	"\u212aokteto-divert=x",
	"baggage=sandbox.id=pr-1\nbaggage=sandbox.id=pr-2",
	"sandbox-id=pr-1\nsandbox-id=pr-2",
	"ǅ=\nǆ=\nǄ=",
	"ς=\nΣ=\nσ=",
	"ẞ=\nß=",
}

// FuzzMarkerScanOld compares the marker scan (scanKey, memberKey, keyIs,
// foldKey.is) with the scan before the length and first-byte shortcuts,
// for the codecs of fuzzCodecs: the same state, memoize and memo key for
// every header list, and every key is a name as strings.EqualFold says.
func FuzzMarkerScanOld(f *testing.F) {
	for _, s := range markerSeeds {
		f.Add([]byte(s))
	}
	var ms []markers
	for _, c := range fuzzCodecs(f) {
		ms = append(ms, newMarkers(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		hs := fuzzHeaders(b)
		for ci := range ms {
			m := &ms[ci]
			var gk, wk memoKey
			gst, gmem := m.scanKey(hs, &gk)
			wst, wmem := m.oldScanKey(hs, &wk)
			if gst != wst || gmem != wmem || !gk.equal(&wk) {
				t.Fatalf("codec %d: scanKey(%q) = %v, %v, %+v; before: %v, %v, %+v", ci, hs, gst, gmem, gk, wst, wmem, wk)
			}
			names := append([]string{m.header, baggageKey, HeaderSplitSource}, m.named...)
			for _, h := range hs {
				fk := foldKey{k: h.Key, wide: -1}
				for _, n := range names {
					want := strings.EqualFold(h.Key, n)
					if got := keyIs(h.Key, n); got != want {
						t.Fatalf("keyIs(%q, %q) = %v; EqualFold says %v", h.Key, n, got, want)
					}
					if got := fk.is(n); got != want {
						t.Fatalf("foldKey{%q}.is(%q) = %v; EqualFold says %v", h.Key, n, got, want)
					}
				}
				fk = foldKey{k: h.Key, wide: -1}
				if got, want := m.memberKey(&fk), m.oldMemberKey(h.Key); got != want {
					t.Fatalf("codec %d: memberKey(%q) = %v; before: %v", ci, h.Key, got, want)
				}
			}
		}
	})
}

// FuzzParseSourceOld compares parseSource with strings.Cut, strconv.Atoi
// and strconv.ParseInt, what it replaced.
func FuzzParseSourceOld(f *testing.F) {
	for _, s := range []string{
		"0/0", "3/17", "+3/+17", "-1/5", "1/-5", "-0/-0", "0003/00017", "/", "1/", "/1", "", "1", "1//2", "1/2/3",
		" 1/2", "1/2 ", "1 /2", "1_0/2", "0x1/2", "1/9223372036854775807", "1/9223372036854775808", "1/-9223372036854775808",
		"1/-9223372036854775809", "9223372036854775807/0", "9223372036854775808/0", "-9223372036854775808/0",
		"1/18446744073709551616", "1/99999999999999999999", "1/00000000000000000000009223372036854775807", "++1/2", "+-1/2",
		"+/1", "-/1", "1/+", "١/٢", "1\x00/2", "1/2\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		gp, goff, gok := parseSource(v)
		wp, woff, wok := oldParseSource(v)
		if gp != wp || goff != woff || gok != wok {
			t.Fatalf("parseSource(%q) = %d, %d, %v; strconv: %d, %d, %v", v, gp, goff, gok, wp, woff, wok)
		}
	})
}

// FuzzLastHeadersFree: a split-mode sandbox reader's last header list
// matches another only when the codec reads the same from both, and
// scanKey finds the same in both, whatever the two lists: the list
// remembered is a, b is the next copy's, derived from a by the fuzzer's
// edits (one value changed, the source headers' values changed, a
// source header added) or any other list.
func FuzzLastHeadersFree(f *testing.F) {
	for i, s := range markerSeeds {
		f.Add([]byte(s), []byte(s), uint8(i))
	}
	f.Add([]byte("baggage=sandbox.id=pr-1\nsandboxkit-split-source=0/1"), []byte("baggage=sandbox.id=pr-1\nsandboxkit-split-source=0/2"), uint8(0))
	f.Add([]byte("baggage=sandbox.id=pr-1\nsandboxkit-split-source=0/1"), []byte("baggage=sandbox.id=pr-2\nsandboxkit-split-source=0/1"), uint8(0))
	f.Add([]byte("sandboxkit-split-source=baggage\nbaggage=sandbox.id=pr-1"), []byte("sandboxkit-split-source=sandbox.id=pr-2\nbaggage=sandbox.id=pr-1"), uint8(1))
	codecs := fuzzCodecs(f)
	f.Fuzz(func(t *testing.T, a, b []byte, edit uint8) {
		ha := fuzzHeaders(a)
		hb := fuzzHeaders(b)
		switch edit % 4 {
		case 1: // b is a with one value changed
			if len(ha) > 0 {
				hb = append([]kafka.Header(nil), ha...)
				hb[int(edit/4)%len(hb)].Value = b
			}
		case 2: // b is a with the source header's values changed
			hb = append([]kafka.Header(nil), ha...)
			for i := range hb {
				if hb[i].Key == HeaderSplitSource {
					hb[i].Value = b
				}
			}
		case 3: // a source header added to a, with b as its value in b's list
			i := int(edit/4) % (len(ha) + 1)
			hb = slices.Insert(append([]kafka.Header(nil), ha...), i, kafka.Header{Key: HeaderSplitSource, Value: b})
			ha = slices.Insert(ha, i, kafka.Header{Key: HeaderSplitSource, Value: []byte("0/1")})
		}
		for ci, c := range codecs {
			r := &Reader{markers: newMarkers(c)}
			r.freeSplitSource()
			var k memoKey
			if _, memoize := r.markers.scanKey(ha, &k); !memoize {
				continue // never remembered
			}
			r.last.remember(ha, propagation.Markers{}, nil)
			if !r.last.matches(hb) {
				continue
			}
			var ka, kb memoKey
			sa, ma := r.markers.oldScanKey(ha, &ka)
			sb, mb := r.markers.oldScanKey(hb, &kb)
			if sa != sb || ma != mb || !ka.equal(&kb) {
				t.Fatalf("codec %d: %q matches %q remembered, but the scan before says %v %v %+v against %v %v %+v", ci, hb, ha, sb, mb, kb, sa, ma, ka)
			}
			ra, ea := c.Read(&carrier{list: ha})
			rb, eb := c.Read(&carrier{list: hb})
			if !reflect.DeepEqual(ra, rb) || (ea == nil) != (eb == nil) || ea != nil && ea.Error() != eb.Error() && !errors.Is(eb, ea) {
				t.Fatalf("codec %d: %q matches %q remembered, but the codec reads %+v, %v from it and %+v, %v from the remembered", ci, hb, ha, rb, eb, ra, ea)
			}
		}
	})
}

// FuzzMarksOld drives the duplicate marks (the last partition's mark
// kept) and a plain map of marks, as before c464f04, with the same
// copies: partitions interleaved, offsets at and around the int64
// bounds, committed marks from a restart, and copies advanced or not.
func FuzzMarksOld(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 0xff, 0x80, 1, 1}, uint64(1))
	f.Add([]byte{5, 5, 5, 4, 4, 5, 5}, uint64(7))
	f.Fuzz(func(t *testing.T, ops []byte, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, 8))
		want := map[int]int64{}
		m := &marks{next: map[int]*int64{}, source: "t"}
		for p := range int(seed % 3) {
			c := int64(rng.IntN(5))
			want[p] = c
			m.next[p] = &c
		}
		offs := []int64{-1, 0, 1, 2, 3, 1 << 62, 9223372036854775806, 9223372036854775807, -9223372036854775808}
		for step, op := range ops {
			part := int(op&3) - 1 // -1 to 2
			off := offs[int(op>>2)%len(offs)]
			if op>>2 >= uint8(len(offs)) {
				off = int64(op>>2) - int64(len(offs)) + 3
			}
			msg := kafka.Message{Headers: []kafka.Header{{Key: HeaderSplitSource, Value: []byte(strconv.Itoa(part) + "/" + strconv.FormatInt(off, 10))}}}
			gp, goff, dup, ok := m.check(&msg)
			next, seen := want[part]
			if wdup := seen && off < next; gp != part || goff != off || dup != wdup || !ok {
				t.Fatalf("step %d: check(%d/%d) = %d, %d, dup %v, %v; a map of marks says dup %v", step, part, off, gp, goff, dup, ok, wdup)
			}
			if rng.IntN(3) > 0 {
				m.advance(part, off)
				if off >= want[part] {
					want[part] = off + 1
				}
			}
		}
	})
}
