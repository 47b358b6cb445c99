package propagation

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"
)

// Ticket errors. A ticket that fails verification is rejected, never
// treated as absent.
var (
	// ErrTicketInvalid reports a ticket that is malformed, signed with
	// another key, or whose signature does not cover the sandbox it came
	// with (a tampered ID, actor or origin).
	ErrTicketInvalid = errors.New("propagation: invalid sandbox ticket")
	// ErrTicketExpired reports a ticket past its expiry.
	ErrTicketExpired = errors.New("propagation: sandbox ticket expired")
	// ErrUnknownKey reports a ticket signed with a key ID the verifier does
	// not hold.
	ErrUnknownKey = errors.New("propagation: sandbox ticket signed with an unknown key")
)

// MinKeyLen is the shortest secret a ticket [Key] may have.
const MinKeyLen = 32

const ticketVersion = "v1"

// Key is a ticket signing key. ID names it in the ticket so that several
// keys can be valid while they rotate; it must be 1 to 32 letters, digits,
// '-' or '_'.
type Key struct {
	ID     string
	Secret []byte
}

func (k Key) validate() error {
	if k.ID == "" || len(k.ID) > 32 {
		return fmt.Errorf("propagation: ticket key ID %q must be 1 to 32 characters", k.ID)
	}
	for i := 0; i < len(k.ID); i++ {
		c := k.ID[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("propagation: ticket key ID %q may hold only letters, digits, '-' and '_'", k.ID)
		}
	}
	if len(k.Secret) < MinKeyLen {
		return fmt.Errorf("propagation: ticket key %q is %d bytes; want at least %d", k.ID, len(k.Secret), MinKeyLen)
	}
	return nil
}

// Signer issues tickets. It is safe for concurrent use.
//
// A ticket is the string "v1.<key ID>.<expiry, Unix seconds>.<signature>",
// the signature being the unpadded base64url HMAC-SHA256, under the key, of
// the version, key ID, sandbox ID, actor, origin and expiry, each
// length-prefixed. The ticket travels in the sandbox.ticket baggage member
// next to the sandbox it covers.
type Signer struct {
	key Key
}

// NewSigner returns a Signer that signs with key.
func NewSigner(key Key) (*Signer, error) {
	if err := key.validate(); err != nil {
		return nil, err
	}
	key.Secret = append([]byte(nil), key.Secret...)
	return &Signer{key: key}, nil
}

// Sign returns a ticket for s valid for ttl from now.
func (s *Signer) Sign(sb Sandbox, ttl time.Duration) (string, error) {
	return s.SignUntil(sb, time.Now().Add(ttl))
}

// SignUntil returns a ticket for sb that expires at exp (to the second).
func (s *Signer) SignUntil(sb Sandbox, exp time.Time) (string, error) {
	if err := sb.Validate(); err != nil {
		return "", err
	}
	e := exp.Unix()
	sig := mac(s.key, sb, e)
	return ticketVersion + "." + s.key.ID + "." + strconv.FormatInt(e, 10) + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// DefaultMaxTicketLifetime is the longest a ticket may still be valid, by
// default, when a [Verifier] checks it.
const DefaultMaxTicketLifetime = 24 * time.Hour

// DefaultTicketClockSkew is how far, by default, the clock of the machine
// that signed a ticket may run ahead of a [Verifier]'s when it checks the
// ticket's lifetime (see [Verifier.WithClockSkew]); go-jose's JWT
// validation allows the same by default.
const DefaultTicketClockSkew = time.Minute

// Verifier checks tickets against a set of keys. It is safe for concurrent
// use.
//
// A ticket has one spelling: the expiry in decimal without a sign or
// leading zeros, the signature in canonical unpadded base64url. A ticket
// whose expiry lies further ahead than the verifier's maximum lifetime
// ([DefaultMaxTicketLifetime] unless [Verifier.WithMaxLifetime] says
// otherwise) is invalid, however it is signed: a leaked key must not mint
// tickets that outlive its rotation. The signer's clock may run ahead of
// the verifier's by the clock skew allowed ([DefaultTicketClockSkew]
// unless [Verifier.WithClockSkew] says otherwise): a ticket signed for
// the maximum lifetime is accepted although the verifier's clock is a
// little behind. The allowance widens that check only: a ticket is
// expired from its expiry on, by the verifier's clock.
type Verifier struct {
	keys   map[string][]byte
	maxTTL time.Duration
	skew   time.Duration
}

// NewVerifier returns a Verifier accepting tickets signed with any of keys.
func NewVerifier(keys ...Key) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("propagation: a ticket verifier needs at least one key")
	}
	v := &Verifier{keys: make(map[string][]byte, len(keys)), maxTTL: DefaultMaxTicketLifetime, skew: DefaultTicketClockSkew}
	for _, k := range keys {
		if err := k.validate(); err != nil {
			return nil, err
		}
		if _, dup := v.keys[k.ID]; dup {
			return nil, fmt.Errorf("propagation: ticket key ID %q given twice", k.ID)
		}
		v.keys[k.ID] = append([]byte(nil), k.Secret...)
	}
	return v, nil
}

// WithMaxLifetime returns a copy of v that rejects tickets expiring more
// than d after the time they are checked at. d must be at least a second
// (expiries are whole seconds: a shorter maximum would reject every
// ticket); v is not changed.
func (v *Verifier) WithMaxLifetime(d time.Duration) (*Verifier, error) {
	if d < time.Second {
		return nil, fmt.Errorf("propagation: maximum ticket lifetime %v must be at least a second", d)
	}
	out := *v
	out.maxTTL = d
	return &out, nil
}

// MaxLifetime returns the longest a ticket may still be valid when v
// checks it.
func (v *Verifier) MaxLifetime() time.Duration { return v.maxTTL }

// WithClockSkew returns a copy of v that accepts tickets expiring up to
// its maximum lifetime plus d after the time they are checked at: the
// clock of the machine that signed them may run up to d ahead of v's.
// Without it, a ticket signed for the maximum lifetime (sandboxticket
// -ttl 24h) is refused by every verifier whose clock is behind the
// signer's, by a millisecond near the turn of a second (expiries are
// whole seconds). d must not be negative; 0 allows no skew. It never
// accepts an expired ticket. v is not changed.
func (v *Verifier) WithClockSkew(d time.Duration) (*Verifier, error) {
	if d < 0 {
		return nil, fmt.Errorf("propagation: ticket clock skew %v must not be negative", d)
	}
	out := *v
	out.skew = d
	return &out, nil
}

// ClockSkew returns how far the signer's clock may run ahead of v's
// (see [Verifier.WithClockSkew]).
func (v *Verifier) ClockSkew() time.Duration { return v.skew }

// Verify reports whether ticket is valid now for sb.
func (v *Verifier) Verify(sb Sandbox, ticket string) error {
	return v.VerifyAt(sb, ticket, time.Now())
}

// VerifyAt reports whether ticket is valid at time now for sb: well formed
// in its one spelling, signed by a key v holds for exactly sb, not expired,
// and expiring at most the maximum lifetime (plus the clock skew allowed)
// after now. The error wraps
// [ErrTicketInvalid], [ErrTicketExpired] or [ErrUnknownKey].
func (v *Verifier) VerifyAt(sb Sandbox, ticket string, now time.Time) error {
	ver, rest, ok1 := strings.Cut(ticket, ".")
	kid, rest, ok2 := strings.Cut(rest, ".")
	expStr, sigStr, ok3 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || !ok3 || ver != ticketVersion {
		return fmt.Errorf("%w: want v1.<key>.<expiry>.<signature>", ErrTicketInvalid)
	}
	secret, ok := v.keys[kid]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownKey, quote(kid))
	}
	exp, err := strconv.ParseInt(expStr, 10, 64)
	if err != nil || exp <= 0 || strconv.FormatInt(exp, 10) != expStr {
		return fmt.Errorf("%w: bad expiry %s (want Unix seconds in decimal, without sign or leading zeros)", ErrTicketInvalid, quote(expStr))
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(sigStr)
	if err != nil || len(sig) != sha256.Size {
		return fmt.Errorf("%w: bad signature encoding (want %d bytes in canonical unpadded base64url)", ErrTicketInvalid, sha256.Size)
	}
	if !hmac.Equal(sig, mac(Key{ID: kid, Secret: secret}, sb, exp)) {
		return fmt.Errorf("%w: signature does not match sandbox %s, actor %s, origin %s", ErrTicketInvalid, quote(sb.ID), quote(sb.Actor), quote(sb.Origin))
	}
	if now.Unix() >= exp {
		return fmt.Errorf("%w: at %s", ErrTicketExpired, time.Unix(exp, 0).UTC().Format(time.RFC3339))
	}
	// exp > now here, so exp-now is positive unless it overflowed (a
	// clock before 1970, an unset time.Time, against a huge expiry). The
	// limit is whole seconds, as expiries are: a maximum and skew of
	// 24h0m0.9s allow 24h0m0s. Both are at most ~292 years (Duration),
	// so their sum in seconds does not overflow.
	if ahead, limit := exp-now.Unix(), int64(v.maxTTL/time.Second)+int64(v.skew/time.Second); ahead < 0 || ahead > limit {
		return fmt.Errorf("%w: expires at %s, more than %v ahead (the verifier's maximum lifetime %v plus the clock skew it allows %v)", ErrTicketInvalid, time.Unix(exp, 0).UTC().Format(time.RFC3339), time.Duration(limit)*time.Second, v.maxTTL, v.skew)
	}
	return nil
}

// TicketKeyID returns the key ID a ticket names ("v1.<key ID>.<expiry>.<signature>"),
// or "" when ticket does not have that shape. It verifies nothing: a
// ticket's key ID is worth logging once [Verifier.VerifyAt] accepted it
// (which key admitted a request, when one is rotated out).
func TicketKeyID(ticket string) string {
	ver, rest, ok1 := strings.Cut(ticket, ".")
	kid, rest, ok2 := strings.Cut(rest, ".")
	_, _, ok3 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || !ok3 || ver != ticketVersion {
		return ""
	}
	return kid
}

func mac(k Key, sb Sandbox, exp int64) []byte {
	h := hmac.New(sha256.New, k.Secret)
	var n [8]byte
	for _, part := range [...]string{ticketVersion, k.ID, sb.ID, sb.Actor, sb.Origin} {
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write([]byte(part))
	}
	binary.BigEndian.PutUint64(n[:], uint64(exp))
	h.Write(n[:])
	return h.Sum(nil)
}

// StripTicket removes the ticket member ([WithTicketKey]) from the baggage
// on carrier, and from grpc-gateway's form of it (Grpc-Metadata-Baggage on
// an http.Header, grpc-metadata-baggage elsewhere); every other member,
// ours included, is kept as it was, and a baggage left empty is removed. A
// ticket is a bearer credential for the edge that checks it: middleware
// that admitted a request on its ticket removes it from the headers or
// metadata it hands on, so that a handler forwarding them does not send
// it on. It does nothing when carrier holds no ticket member.
func (c *Codec) StripTicket(carrier otelprop.TextMapCarrier) {
	c.ticketMembers(carrier, baggageHeader, "Baggage", false)
	c.ticketMembers(carrier, gatewayPrefix+baggageHeader, gatewayBaggage, false)
}

// RedactTicket replaces, on carrier, the signature of every ticket (in
// the baggage, grpc-gateway's baggage, and a header named as the ticket
// key, also in Jaeger's and OpenTracing's baggage header forms) with "redacted", keeping its key ID and expiry: for copies of a
// message kept for people to inspect (a dead-letter topic), where the
// credential has no use but what made the message unreadable must stay
// as it was. It does nothing when carrier holds no ticket.
//
// Any other value on carrier that holds a ticket's text (under a deep
// grpc-gateway form, an underscore spelling, a header of any name) has
// its signature redacted too ([RedactTicketText]).
func (c *Codec) RedactTicket(carrier otelprop.TextMapCarrier) {
	c.ticketMembers(carrier, baggageHeader, "Baggage", true)
	c.ticketMembers(carrier, gatewayPrefix+baggageHeader, gatewayBaggage, true)
	var one [1]string
	for _, p := range baggageHeaderPrefixes {
		h := newName(p + c.cfg.ticketKey)
		vals := values(carrier, h.lower, h.canon, &one)
		if len(vals) == 0 {
			continue
		}
		setHeader(carrier, h.lower, h.canon, redacted(vals[0]))
	}
	if h, ok := carrier.(otelprop.HeaderCarrier); ok {
		for _, vals := range h {
			for i, v := range vals {
				vals[i] = RedactTicketText(v)
			}
		}
		return
	}
	for _, k := range carrier.Keys() {
		if v := carrier.Get(k); RedactTicketText(v) != v {
			carrier.Set(k, RedactTicketText(v))
		}
	}
}

// ticketText matches a ticket as [Signer] writes it: version, key ID,
// expiry (the first group), and the 43 characters of its signature; each
// byte as it is or percent-encoded, in either case, as a baggage value
// may carry it and every baggage parser decodes it (v1%2Ek1%2E... is the
// ticket to the next hop).
var ticketText = func() *regexp.Regexp {
	const (
		v     = `(?:v|%76)`
		one   = `(?:1|%31)`
		dot   = `(?:\.|%2[Ee])`
		digit = `(?:[0-9]|%3[0-9])`
		// [A-Za-z0-9_-]: '-' 2D, digits 30-39, A-Z 41-5A, '_' 5F, a-z 61-7A.
		b64 = `(?:[A-Za-z0-9_-]|%2[Dd]|%3[0-9]|%4[1-9A-Fa-f]|%5[0-9AaFf]|%6[1-9A-Fa-f]|%7[0-9Aa])`
	)
	return regexp.MustCompile(`(` + v + one + dot + b64 + `{1,32}` + dot + digit + `{1,19}` + dot + `)` + b64 + `{43}`)
}()

// plainTicketText is ticketText without escapes: for text with no '%',
// where it finds the same tickets at more than twice the speed (its
// literal prefix is searched for before the automaton runs).
var plainTicketText = regexp.MustCompile(`(v1\.[A-Za-z0-9_-]{1,32}\.[0-9]{1,19}\.)[A-Za-z0-9_-]{43}`)

// RedactTicketText returns s with the signature of every ticket in it
// replaced by "redacted", its version, key ID and expiry kept as they
// were written; s itself when it holds none. A ticket is found with any
// of its bytes percent-encoded, as a baggage value may carry it, and
// wherever it starts, also inside what reads as another ticket's
// signature. It reads text, whatever carries it: for logs and copies
// kept for people to read. Its cost is linear in len(s).
func RedactTicketText(s string) string {
	if !mayHoldTicket(s) {
		return s
	}
	re := ticketText
	if strings.IndexByte(s, '%') < 0 {
		re = plainTicketText
	}
	return redactMatches(re, s)
}

// redactMatches replaces the signature of every match of re (the text
// after its first group) in s with "redacted". Each match is looked for
// from the last 6 bytes of the one before (the longest "v1", "%76%31"),
// not from its end: a match may take, as the last characters of its
// signature, the start of a ticket right after it ("v1.a.1.<41
// characters>v1.k1.<expiry>.<sig>"), which matched from the end would no
// longer start as a ticket. No match starts further back inside another:
// a signature holds no dot, so such a ticket's dots would be the other's,
// and the 43 characters of signature after them are more than a key ID
// or an expiry may hold.
func redactMatches(re *regexp.Regexp, s string) string {
	var b strings.Builder
	done := 0 // s[:done] is written, or redacted
	for pos := 0; pos < len(s); {
		m := re.FindStringSubmatchIndex(s[pos:])
		if m == nil {
			break
		}
		start, end := max(pos+m[3], done), pos+m[1]
		if end > done {
			b.WriteString(s[done:start])
			b.WriteString("redacted")
			done = end
		}
		pos = max(pos+m[0]+1, end-len("%76%31"))
	}
	if done == 0 {
		return s
	}
	b.WriteString(s[done:])
	return b.String()
}

// mayHoldTicket reports whether s holds how every match of ticketText
// starts ("v1." with any of its three bytes percent-encoded, the dot's
// escape cut after its first hex digit): the cheap test before the
// regular expression. It looks at each 'v' and, in text with a '%', for
// "%76": two passes over s rather than one for each of the five starts.
func mayHoldTicket(s string) bool {
	for rest := s; ; {
		i := strings.IndexByte(rest, 'v')
		if i < 0 {
			break
		}
		rest = rest[i+1:]
		if strings.HasPrefix(rest, "1.") || strings.HasPrefix(rest, "1%2") || strings.HasPrefix(rest, "%31") {
			return true
		}
	}
	for rest := s; ; {
		i := strings.Index(rest, "%76")
		if i < 0 {
			return false
		}
		rest = rest[i+3:]
		if strings.HasPrefix(rest, "1") || strings.HasPrefix(rest, "%31") {
			return true
		}
	}
}

// redacted returns ticket without its signature: its fields before the
// signature, when short, and "redacted".
func redacted(ticket string) string {
	if i := strings.LastIndexByte(ticket, '.'); i > 0 && i <= 48 && strings.Count(ticket[:i], ".") == 2 {
		return ticket[:i+1] + "redacted"
	}
	return "redacted"
}

// ticketMembers rewrites the baggage header key (canon on an http.Header)
// without its ticket members, or with their values redacted.
func (c *Codec) ticketMembers(carrier otelprop.TextMapCarrier, key, canon string, redact bool) {
	var one [1]string
	existing := values(carrier, key, canon, &one)
	if len(existing) == 0 {
		return
	}
	_, size := overScan(existing)
	w := newWork(size)
	var b strings.Builder
	found := false
	for member := range members(existing) {
		j := keyEnd(member)
		k, _ := c.classify(member[:j], &w)
		if k == kindTicket {
			found = true
			if !redact {
				continue
			}
			v := ""
			if j < len(member) && member[j] == '=' {
				v, _, _ = strings.Cut(member[j+1:], ";")
			}
			member = member[:j] + "=" + redacted(trimOWS(v))
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(member)
	}
	switch {
	case !found:
	case b.Len() == 0:
		deleteHeader(carrier, key, canon)
	default:
		setHeader(carrier, key, canon, b.String())
	}
}

// StripTicketContext returns ctx without the ticket member in its
// OpenTelemetry baggage (which instrumentation in front of the middleware,
// otelhttp or otelgrpc with OpenTelemetry's Baggage propagator, put there
// from the request, and which their transports write on every outgoing
// call, to any host); its sandbox and every other member are left as they
// are. It returns ctx itself when the baggage holds no ticket.
func (c *Codec) StripTicketContext(ctx context.Context) context.Context {
	bag := baggage.FromContext(ctx)
	if bag.Len() == 0 {
		return ctx
	}
	members := bag.Members()
	size := 0
	for _, mem := range members {
		size += len(mem.Key()) + 1
	}
	w := newWork(size)
	clean := bag
	for _, mem := range members {
		if k, _ := c.classify(mem.Key(), &w); k == kindTicket {
			clean = clean.DeleteMember(mem.Key())
		}
	}
	if clean.Len() == bag.Len() {
		return ctx
	}
	return baggage.ContextWithBaggage(ctx, clean)
}
