package propagation

import (
	"fmt"
	"strings"
)

type keyKind uint8

const (
	kindNone keyKind = iota
	kindID
	kindActor
	kindOrigin
	kindTicket
	kindCompat
)

func (c *Codec) kind(key string) keyKind {
	// Every key of ours starts with the common prefix: most foreign keys
	// are told apart by it alone.
	if len(key) < len(c.prefix) || key[:len(c.prefix)] != c.prefix {
		return kindNone
	}
	switch key {
	case c.cfg.idKey:
		return kindID
	case c.cfg.actorKey:
		return kindActor
	case c.cfg.originKey:
		return kindOrigin
	case c.cfg.ticketKey:
		return kindTicket
	}
	for _, k := range c.cfg.compat {
		if key == k {
			return kindCompat
		}
	}
	return kindNone
}

// minPrefix is the length from which the keys' common prefix alone is a
// selective enough test in [Codec.mentions].
const minPrefix = 4

// mentions reports whether any line contains one of our keys as a
// substring: the cheap test that lets baggage without our members pass
// without being split. When the keys share a long enough prefix, finding
// the prefix is enough (the scan that follows settles it).
func (c *Codec) mentions(lines []string) bool {
	for _, line := range lines {
		if len(c.prefix) >= minPrefix {
			if strings.Contains(line, c.prefix) {
				return true
			}
			continue
		}
		for _, k := range c.keys {
			if strings.Contains(line, k) {
				return true
			}
		}
	}
	return false
}

// scanBaggage finds our members in the baggage lines without parsing the
// foreign ones beyond their keys: a malformed foreign member neither hides
// ours nor fails the request. Over-limit baggage is judged only when it
// carries a member of ours. headerID is the ID from the dedicated header,
// which the baggage must agree with.
//
// It is one pass over the bytes: a member's key runs to the first '=',
// ';' or ','; a foreign member is skipped to the next ',' unread.
func (c *Codec) scanBaggage(lines []string, m *Markers, headerID string) error {
	if len(lines) == 0 || !c.mentions(lines) {
		return nil
	}
	var (
		err            error
		total, members int
		ours           bool
		compatID       string
		bagID          string
	)
	fail := func(e error) {
		if err == nil {
			err = e
		}
	}
	for i, line := range lines {
		if i > 0 {
			total++ // the comma that joins header lines
		}
		total += len(line)
		for len(line) > 0 {
			j := keyEnd(line)
			key := trimOWS(line[:j])
			if j == len(line) || line[j] == ',' {
				// A member that is a bare key, or empty.
				line = after(line, j)
				if key == "" {
					continue
				}
				members++
				if c.kind(key) != kindNone {
					ours = true
					fail(fmt.Errorf("%w: baggage member %s has no value", ErrMalformed, quote(key)))
				}
				continue
			}
			members++
			sep, rest := line[j], line[j+1:]
			k := c.kind(key)
			if k == kindNone {
				// Skip the member: it runs to the next comma.
				if e := strings.IndexByte(rest, ','); e >= 0 {
					line = rest[e+1:]
				} else {
					line = ""
				}
				continue
			}
			// Ours: the member runs to the next comma, its value to the
			// first ';' (member properties are not ours to read).
			e, semi, escaped := 0, -1, false
			for ; e < len(rest) && rest[e] != ','; e++ {
				switch rest[e] {
				case ';':
					if semi < 0 {
						semi = e
					}
				case '%':
					escaped = true
				}
			}
			line = after(rest, e)
			ours = true
			if sep == ';' {
				fail(fmt.Errorf("%w: baggage member %s has no value", ErrMalformed, quote(key)))
				continue
			}
			value := rest[:e]
			if semi >= 0 {
				value = rest[:semi]
			}
			v, uerr := trimOWS(value), error(nil)
			if escaped {
				v, uerr = unescape(v)
			}
			if uerr != nil {
				fail(fmt.Errorf("%w: baggage member %s: %v", ErrMalformed, quote(key), uerr))
				continue
			}
			if v == "" {
				fail(fmt.Errorf("%w: baggage member %s is empty", ErrMalformed, quote(key)))
				continue
			}
			var dst *string
			switch k {
			case kindID:
				dst = &bagID
			case kindActor:
				dst = &m.Sandbox.Actor
			case kindOrigin:
				dst = &m.Sandbox.Origin
			case kindTicket:
				dst = &m.Ticket
			case kindCompat:
				dst = &compatID
			}
			if *dst != "" && *dst != v {
				fail(fmt.Errorf("%w: baggage member %s has %s and %s", ErrConflict, quote(key), quote(*dst), quote(v)))
				continue
			}
			*dst = v
		}
	}
	if !ours {
		return nil
	}
	m.Found, m.Baggage = true, true
	if members > MaxBaggageMembers || total > MaxBaggageBytes {
		return fmt.Errorf("%w: %d members, %d bytes (limits %d, %d)", ErrBaggageLimit, members, total, MaxBaggageMembers, MaxBaggageBytes)
	}
	if err != nil {
		return err
	}
	id := headerID
	for _, other := range [...]string{bagID, compatID} {
		if other == "" {
			continue
		}
		if id != "" && id != other {
			return fmt.Errorf("%w: sandbox ID %s in one marker and %s in another", ErrConflict, quote(id), quote(other))
		}
		id = other
	}
	m.Sandbox.ID = id
	return nil
}

// after returns s after the separator at index j, or "" when j is the end.
func after(s string, j int) string {
	if j >= len(s) {
		return ""
	}
	return s[j+1:]
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// unescape percent-decodes a baggage value. It allocates only when the value
// holds an escape.
func unescape(s string) (string, error) {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
			return "", fmt.Errorf("bad percent-encoding at byte %d", i)
		}
		b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
		i += 2
	}
	return b.String(), nil
}

// escapeTo percent-encodes v as a W3C baggage value: every byte outside
// baggage-octet, and '%' itself, is escaped.
func escapeTo(b *strings.Builder, v string) {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(v); i++ {
		c := v[i]
		if baggageOctet(c) && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
}

// baggageOctet reports whether c may appear unescaped in a baggage value:
// printable ASCII except space, '"', ',', ';' and '\'.
func baggageOctet(c byte) bool {
	return c > 0x20 && c < 0x7f && c != '"' && c != ',' && c != ';' && c != '\\'
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// keyEnd returns the index of the first '=', ';' or ',' in s, or len(s).
func keyEnd(s string) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '=' || c == ';' || c == ',' {
			return i
		}
	}
	return len(s)
}
