package propagation

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// Limits on the parts of a [Sandbox].
const (
	// MaxIDLen is the longest sandbox ID: a DNS label.
	MaxIDLen = 63
	// MaxActorLen is the longest actor, in bytes.
	MaxActorLen = 256
	// MaxOriginLen is the longest origin, in bytes.
	MaxOriginLen = 256
)

// Errors returned by validation and by strict extraction. Callers branch on
// them with [errors.Is]; the returned errors wrap them with details.
var (
	// ErrInvalidID reports a sandbox ID that is not a DNS label
	// (^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$).
	ErrInvalidID = errors.New("propagation: invalid sandbox ID")
	// ErrInvalidActor reports an actor that is too long or not printable.
	ErrInvalidActor = errors.New("propagation: invalid sandbox actor")
	// ErrInvalidOrigin reports an origin that is too long or not printable.
	ErrInvalidOrigin = errors.New("propagation: invalid sandbox origin")
	// ErrConflict reports markers that disagree: the dedicated header and
	// the baggage member, or several different values for one key.
	ErrConflict = errors.New("propagation: conflicting sandbox markers")
	// ErrMalformed reports a marker that cannot be parsed (a baggage member
	// without a value, bad percent-encoding, an actor without an ID).
	ErrMalformed = errors.New("propagation: malformed sandbox marker")
	// ErrBaggageLimit reports our member inside baggage that exceeds the
	// W3C limits (64 members, 8192 bytes over all baggage header lines).
	// An OpenTelemetry hop would drop such baggage and silently turn the
	// request into production traffic, so it is rejected instead. It also
	// reports baggage over the scan limits ([MaxScanBaggageBytes],
	// [MaxScanBaggageMembers]) that may hold a member of ours, which the
	// codec does not read member by member.
	ErrBaggageLimit = errors.New("propagation: baggage carrying a sandbox exceeds the W3C limits")
)

// Sandbox identifies the sandbox a request, call or message belongs to.
//
// The zero value is not a valid sandbox; a context without a sandbox is
// baseline (production) traffic.
type Sandbox struct {
	// ID is the routing key, a DNS label such as "pr-42".
	ID string
	// Actor is who the sandbox belongs to (a user identity); optional.
	Actor string
	// Origin is the pull request or dev session the sandbox was made for;
	// optional.
	Origin string
}

// Validate reports whether s is well formed: the ID is a DNS label, the
// actor and origin are at most [MaxActorLen] and [MaxOriginLen] bytes of
// printable UTF-8. The error wraps [ErrInvalidID], [ErrInvalidActor] or
// [ErrInvalidOrigin].
func (s Sandbox) Validate() error {
	if err := ValidateID(s.ID); err != nil {
		return err
	}
	if !printable(s.Actor, MaxActorLen) {
		return fmt.Errorf("%w: %s", ErrInvalidActor, quote(s.Actor))
	}
	if !printable(s.Origin, MaxOriginLen) {
		return fmt.Errorf("%w: %s", ErrInvalidOrigin, quote(s.Origin))
	}
	return nil
}

// ValidateID reports whether id is a valid sandbox ID: a DNS label of 1 to
// 63 lower-case letters, digits and inner hyphens. The error wraps
// [ErrInvalidID].
func ValidateID(id string) error {
	if !validID(id) {
		return fmt.Errorf("%w: %s (want a DNS label: lower-case letters, digits and inner hyphens, at most 63)", ErrInvalidID, quote(id))
	}
	return nil
}

func validID(id string) bool {
	n := len(id)
	if n == 0 || n > MaxIDLen {
		return false
	}
	for i := 0; i < n; i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '-' && i != 0 && i != n-1:
		default:
			return false
		}
	}
	return true
}

func printable(s string, max int) bool {
	if len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return false
		} else if c >= utf8.RuneSelf {
			return printableUTF8(s[i:])
		}
	}
	return true
}

func printableUTF8(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r != ' ' && !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// quote renders untrusted input for an error message: quoted, and cut to a
// length that keeps messages short.
func quote(s string) string {
	// Errors reach 400 bodies, gRPC statuses, audit records and
	// dead-letter reasons: a ticket sent where a sandbox ID goes is
	// shown without its signature, as a rejected ticket is (see shown),
	// before a long value is cut.
	s = RedactTicketText(s)
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
