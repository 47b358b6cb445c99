package propagation

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
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

// Verifier checks tickets against a set of keys. It is safe for concurrent
// use.
type Verifier struct {
	keys map[string][]byte
}

// NewVerifier returns a Verifier accepting tickets signed with any of keys.
func NewVerifier(keys ...Key) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("propagation: a ticket verifier needs at least one key")
	}
	v := &Verifier{keys: make(map[string][]byte, len(keys))}
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

// Verify reports whether ticket is valid now for sb.
func (v *Verifier) Verify(sb Sandbox, ticket string) error {
	return v.VerifyAt(sb, ticket, time.Now())
}

// VerifyAt reports whether ticket is valid at time now for sb. The error
// wraps [ErrTicketInvalid], [ErrTicketExpired] or [ErrUnknownKey].
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
	if err != nil {
		return fmt.Errorf("%w: bad expiry %s", ErrTicketInvalid, quote(expStr))
	}
	sig, err := base64.RawURLEncoding.DecodeString(sigStr)
	if err != nil {
		return fmt.Errorf("%w: bad signature encoding", ErrTicketInvalid)
	}
	if !hmac.Equal(sig, mac(Key{ID: kid, Secret: secret}, sb, exp)) {
		return fmt.Errorf("%w: signature does not match sandbox %s, actor %s, origin %s", ErrTicketInvalid, quote(sb.ID), quote(sb.Actor), quote(sb.Origin))
	}
	if now.Unix() >= exp {
		return fmt.Errorf("%w: at %s", ErrTicketExpired, time.Unix(exp, 0).UTC().Format(time.RFC3339))
	}
	return nil
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
