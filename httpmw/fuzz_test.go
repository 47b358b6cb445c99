package httpmw_test

import (
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/routes"
)

// refParse is the straightforward reading of an X-Forwarded-For entry.
func refParse(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a, true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr(), true
	}
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// FuzzForwardedClient checks the allocation-free X-Forwarded-For reader
// against the plain rule: join all lines with commas, split, trim, and take
// the hops-th entry from the right, every entry up to it being an address.
func FuzzForwardedClient(f *testing.F) {
	for _, s := range []string{
		"10.0.0.5", "203.0.113.9, 10.0.0.5", "10.0.0.5\n203.0.113.9", "", ",", " , 10.0.0.1 ,",
		"[2001:db8::1]:443, 10.0.0.1:80", "[::1]", "unknown, 10.0.0.1", "fe80::1%eth0", "1.2.3.4:5:6",
	} {
		f.Add(s, uint8(1))
		f.Add(s, uint8(2))
	}
	f.Fuzz(func(t *testing.T, raw string, h uint8) {
		hops := int(h%4) + 1
		lines := strings.Split(raw, "\n")
		addr, entry, n, ok := httpmw.ForwardedClient(lines, hops)

		all := strings.Split(strings.Join(lines, ","), ",")
		var wantAddr, wantEntry string
		wantN, wantOK := 0, false
		for k := 1; k <= hops && k <= len(all); k++ {
			e := strings.TrimSpace(all[len(all)-k])
			wantN = k
			a, good := refParse(e)
			if !good {
				wantEntry = e
				break
			}
			if k == hops {
				wantAddr, wantEntry, wantOK = a.String(), e, true
			}
		}
		if ok != wantOK || n != wantN || entry != wantEntry || addr != wantAddr {
			t.Fatalf("ForwardedClient(%q, %d) = %q, %q, %d, %v; want %q, %q, %d, %v",
				lines, hops, addr, entry, n, ok, wantAddr, wantEntry, wantN, wantOK)
		}
	})
}

// FuzzSplitUpstream checks the transport's reading of a route's upstream
// against net/url for every upstream the route table accepts in URL form:
// the scheme and host it dials are url.Parse's (atkproxy: "http://h:1?"
// was dialled as "h:1?"); the host:port form is taken whole.
func FuzzSplitUpstream(f *testing.F) {
	for _, s := range []string{"http://h:1", "https://h:1/", "http://h:1?", "http://h:1#", "http://h:1/?", "http://[::1]:8080", "h:1", "[::1]:80", "http://:80", "http://[fe80::1%25eth0]:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, up string) {
		if routes.ValidateUpstream(up) != nil {
			return
		}
		scheme, host := httpmw.SplitUpstream(up)
		if !strings.Contains(up, "://") {
			if scheme != "http" || host != up {
				t.Fatalf("%q: split as %q %q; want http and the whole", up, scheme, host)
			}
			return
		}
		u, err := url.Parse(up)
		if err != nil {
			t.Fatalf("%q: accepted by the table, refused by url.Parse: %v", up, err)
		}
		if scheme != u.Scheme || host != u.Host {
			t.Fatalf("%q: split as %q %q; url.Parse reads %q %q", up, scheme, host, u.Scheme, u.Host)
		}
	})
}
