package httpmw

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/sandboxkit/sandboxkit/internal/trust"
	"github.com/sandboxkit/sandboxkit/propagation"
)

const xffHeader = "X-Forwarded-For"

// problem says why a request's source is not trusted.
type problem uint8

const (
	trusted         problem = iota
	badPeer                 // RemoteAddr is not an IP address
	untrustedPeer           // the direct peer is outside the trusted networks
	shortXFF                // fewer X-Forwarded-For entries than trusted hops
	badXFF                  // a trusted X-Forwarded-For entry is not an IP address
	untrustedClient         // the client named by X-Forwarded-For is outside the trusted networks
	shortFwd                // fewer Forwarded elements than trusted hops
	badFwd                  // the trusted Forwarded element names no IP address
	untrustedFwd            // the client named by Forwarded is outside the trusted networks
)

const fwdHeader = "Forwarded"

// source is the trust decision about where a request came from. Its
// reason is formatted only when an audit record needs it.
type source struct {
	problem problem
	addr    string // the address judged: peer or X-Forwarded-For entry
	entries int    // X-Forwarded-For entries counted
	hops    int
}

func (s source) trusted() bool { return s.problem == trusted }

func (s source) reason() string {
	switch s.problem {
	case badPeer:
		return fmt.Sprintf("peer address %s is not an IP address", clipQuote(s.addr))
	case untrustedPeer:
		return "peer " + s.addr + " is not in a trusted network"
	case shortXFF:
		return fmt.Sprintf("X-Forwarded-For has %d entries, fewer than the %d trusted hops", s.entries, s.hops)
	case badXFF:
		return fmt.Sprintf("X-Forwarded-For entry %s is not an IP address", clipQuote(s.addr))
	case untrustedClient:
		return "client " + s.addr + " (from X-Forwarded-For) is not in a trusted network"
	case shortFwd:
		return fmt.Sprintf("Forwarded has %d elements, fewer than the %d trusted hops", s.entries, s.hops)
	case badFwd:
		return fmt.Sprintf("Forwarded element %s names no IP address in for=", clipQuote(s.addr))
	case untrustedFwd:
		return "client " + s.addr + " (from Forwarded) is not in a trusted network"
	}
	return ""
}

// judge decides whether the source of a request with remote address
// remote and headers h is trusted by network, under policy p with hops
// trusted proxies in front. It does not allocate.
func judge(p *trust.Policy, hops int, remote string, h http.Header) source {
	if p.All {
		return source{}
	}
	peer, ok := parseAddr(remote)
	if !ok {
		return source{problem: badPeer, addr: remote}
	}
	if !p.Trusted(peer) {
		return source{problem: untrustedPeer, addr: remote}
	}
	if hops <= 0 {
		return source{}
	}
	client, entry, n, pr := forwardedClient(h[xffHeader], hops)
	if pr != trusted {
		return source{problem: pr, addr: entry, entries: n, hops: hops}
	}
	if !p.Trusted(client) {
		return source{problem: untrustedClient, addr: entry, entries: n, hops: hops}
	}
	if fwd := h[fwdHeader]; len(fwd) > 0 {
		// A proxy in front that records the client in Forwarded (RFC
		// 7239) and not in X-Forwarded-For leaves the client's own
		// X-Forwarded-For at its right end: the client must be trusted
		// by both headers.
		client, entry, n, pr := forwardedFor(fwd, hops)
		if pr != trusted {
			return source{problem: pr, addr: entry, entries: n, hops: hops}
		}
		if !p.Trusted(client) {
			return source{problem: untrustedFwd, addr: entry, entries: n, hops: hops}
		}
	}
	return source{}
}

// forwardedFor returns the address in the for= parameter of the hops-th
// element from the right of the Forwarded (RFC 7239) header formed by all
// lines joined with commas, and that element's text; it returns shortFwd
// when there are fewer elements, badFwd when that element has no for=
// naming an IP address (an obfuscated or "unknown" node included).
// Commas and semicolons inside quoted strings do not separate. It does not
// allocate.
func forwardedFor(lines []string, hops int) (netip.Addr, string, int, problem) {
	total := 0
	for _, line := range lines {
		total += fwdElements(line, -1, nil)
	}
	if total < hops {
		return netip.Addr{}, "", total, shortFwd
	}
	want := total - hops // 0-based index of the element, counted from the left
	for _, line := range lines {
		var elem string
		n := fwdElements(line, want, &elem)
		if want >= n {
			want -= n
			continue
		}
		v, ok := fwdParam(elem, "for")
		if !ok {
			return netip.Addr{}, elem, hops, badFwd
		}
		addr, ok := parseAddr(v)
		if !ok {
			return netip.Addr{}, elem, hops, badFwd
		}
		return addr, elem, hops, trusted
	}
	return netip.Addr{}, "", total, shortFwd // not reached
}

// fwdElements returns how many comma-separated elements line has, outside
// quoted strings; when index is one of them, *elem is set to its text,
// trimmed. A line of blanks has none; an empty element between commas
// counts (and names no address).
func fwdElements(line string, index int, elem *string) int {
	if strings.TrimSpace(line) == "" {
		return 0
	}
	n, start, quoted := 0, 0, false
	for i := 0; i <= len(line); i++ {
		if i < len(line) {
			c := line[i]
			switch {
			case c == '"':
				quoted = !quoted
				continue
			case c == '\\' && quoted:
				i++
				continue
			case c != ',' || quoted:
				continue
			}
		}
		if n == index && elem != nil {
			*elem = strings.TrimSpace(line[start:min(i, len(line))])
		}
		n++
		start = i + 1
	}
	return n
}

// fwdParam returns the value of parameter name in a Forwarded element
// ("for=192.0.2.60;proto=http"), unquoted. A quoted value holding an
// escape is not returned: no address has one.
func fwdParam(elem, name string) (string, bool) {
	for elem != "" {
		var pair string
		quoted := false
		end := len(elem)
		for i := 0; i < len(elem); i++ {
			if elem[i] == '"' {
				quoted = !quoted
			} else if elem[i] == ';' && !quoted {
				end = i
				break
			}
		}
		pair, elem = elem[:end], elem[min(end+1, len(elem)):]
		k, v, ok := strings.Cut(pair, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), name) {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
			if strings.IndexByte(v, '\\') >= 0 {
				return "", false
			}
		}
		return v, true
	}
	return "", false
}

// forwardedClient returns the hops-th entry from the right of the
// X-Forwarded-For list formed by all lines joined with commas. Every entry
// up to that one must be an IP address; entries further left are not read.
// It returns the entry's text and how many entries it counted.
func forwardedClient(lines []string, hops int) (netip.Addr, string, int, problem) {
	n := 0
	for i := len(lines) - 1; i >= 0; i-- {
		line := lines[i]
		for more := true; more; {
			var entry string
			if j := strings.LastIndexByte(line, ','); j >= 0 {
				entry, line = line[j+1:], line[:j]
			} else {
				entry, more = line, false
			}
			n++
			entry = strings.TrimSpace(entry)
			addr, ok := parseAddr(entry)
			if !ok {
				return netip.Addr{}, entry, n, badXFF
			}
			if n == hops {
				return addr, entry, n, trusted
			}
		}
	}
	return netip.Addr{}, "", n, shortXFF
}

// parseAddr parses an address as proxies and servers write it: "ip",
// "ip:port", "[ipv6]" or "[ipv6]:port". It picks the parser from the form
// so that a valid address does not cost a failed parse (whose error
// allocates).
func parseAddr(s string) (netip.Addr, bool) {
	switch {
	case strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]"):
		a, err := netip.ParseAddr(s[1 : len(s)-1])
		return a, err == nil && a.Is6()
	case strings.HasPrefix(s, "["):
		ap, err := netip.ParseAddrPort(s)
		return ap.Addr(), err == nil
	}
	if i := strings.IndexByte(s, ':'); i >= 0 && strings.IndexByte(s[i+1:], ':') < 0 {
		// "ipv4:port", what every server's RemoteAddr is for IPv4 peers:
		// the port is checked, not converted. netip.ParseAddrPort would
		// convert it and accept no more.
		if !validPort(s[i+1:]) {
			return netip.Addr{}, false
		}
		a, err := netip.ParseAddr(s[:i])
		return a, err == nil && a.Is4()
	}
	a, err := netip.ParseAddr(s)
	return a, err == nil
}

// validPort reports whether s is a decimal port number, 0 to 65535, as
// strconv.ParseUint(s, 10, 16) would accept it.
func validPort(s string) bool {
	if s == "" {
		return false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
		if n > 65535 {
			return false
		}
	}
	return true
}

// clipQuote quotes untrusted text for a message, cut to a short length,
// a ticket's signature in it redacted before it is cut (cut inside it, 42
// of its 43 characters would no longer read as a ticket's).
func clipQuote(s string) string {
	s = propagation.RedactTicketText(s)
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
