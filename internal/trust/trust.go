// Package trust decides whether sandbox markers from a peer are honoured.
// httpmw and grpcmw share it so that both protocols apply one policy.
package trust

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Verdict is what to do with a request's sandbox markers.
type Verdict uint8

const (
	// None: the request carries no markers; it is baseline traffic.
	None Verdict = iota
	// Admit: honour the markers; the request belongs to the sandbox.
	Admit
	// Strip: remove the markers and serve the request as baseline.
	Strip
	// Reject: refuse the request (HTTP 400, gRPC InvalidArgument).
	Reject
)

func (v Verdict) String() string {
	switch v {
	case None:
		return "none"
	case Admit:
		return "admit"
	case Strip:
		return "strip"
	case Reject:
		return "reject"
	}
	return fmt.Sprintf("Verdict(%d)", uint8(v))
}

// Policy says which sources may set a sandbox. The zero value trusts
// nothing: every marker is stripped.
type Policy struct {
	// All trusts every peer (internal hops behind an edge that filters).
	All bool
	// Networks are the trusted peer networks.
	Networks []netip.Prefix
	// Verifier, when set, admits requests with a valid signed ticket from
	// any peer, and rejects requests whose ticket is invalid.
	Verifier *propagation.Verifier
	// Now is the clock for ticket expiry (default time.Now).
	Now func() time.Time
}

// Trusted reports whether addr is a trusted peer by network.
func (p *Policy) Trusted(addr netip.Addr) bool {
	if p.All {
		return true
	}
	if !addr.IsValid() {
		return false
	}
	addr = addr.Unmap()
	for _, n := range p.Networks {
		if n.Contains(addr) {
			return true
		}
	}
	return false
}

// ErrUntrusted is the reason given for stripped markers: the published
// audit.ReasonUntrusted.
var ErrUntrusted = errors.New(audit.ReasonUntrusted)

// Decide returns the verdict for markers m (and the error Codec.Read
// returned for them) from a peer that is trusted by network or not. The
// error explains a Reject or a Strip.
//
// A ticket, when a verifier is configured, is checked whatever the peer:
// valid admits, invalid (tampered, expired, signed for another actor)
// rejects. Without a ticket, a trusted peer's markers are admitted when
// readable and rejected when not; an untrusted peer's are stripped.
func (p *Policy) Decide(m *propagation.Markers, readErr error, peerTrusted bool) (Verdict, error) {
	if !m.Found {
		return None, nil
	}
	if m.Ticket != "" && p.Verifier != nil {
		if readErr != nil {
			return Reject, readErr
		}
		now := time.Now
		if p.Now != nil {
			now = p.Now
		}
		if err := p.Verifier.VerifyAt(m.Sandbox, m.Ticket, now()); err != nil {
			return Reject, err
		}
		return Admit, nil
	}
	if !peerTrusted {
		return Strip, ErrUntrusted
	}
	if readErr != nil {
		return Reject, readErr
	}
	return Admit, nil
}

// ErrInvalidPrefix is returned by [Networks] for a prefix that is not
// valid (the zero netip.Prefix, or one whose bit count is out of range).
var ErrInvalidPrefix = errors.New("invalid prefix")

// Networks returns prefixes normalised as every adapter stores trusted
// networks: each one Masked, and an IPv4-mapped IPv6 prefix of at least 96
// bits (::ffff:10.0.0.0/104) turned into the IPv4 prefix it stands for
// (10.0.0.0/8), since [Policy.Trusted] unmaps the peers it judges. A
// prefix that is not valid is an error naming it and wrapping
// [ErrInvalidPrefix]; the adapter adds its package and option name.
func Networks(prefixes []netip.Prefix) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(prefixes))
	for _, p := range prefixes {
		if !p.IsValid() {
			return nil, fmt.Errorf("%w %q", ErrInvalidPrefix, p.String())
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
