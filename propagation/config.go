package propagation

import (
	"fmt"
	"net/textproto"
	"strings"
)

// Default carrier names. The HTTP header is matched case-insensitively; the
// baggage keys are case-sensitive, as in the W3C Baggage specification.
const (
	DefaultHeader    = "Sandbox-Id"
	DefaultIDKey     = "sandbox.id"
	DefaultActorKey  = "sandbox.actor"
	DefaultOriginKey = "sandbox.origin"
	DefaultTicketKey = "sandbox.ticket"

	// SignadotKey is the baggage member Signadot uses for its routing key.
	SignadotKey = "sd-routing-key"
	// OktetoKey is the baggage member Okteto uses for divert.
	OktetoKey = "okteto-divert"

	baggageHeader = "baggage"
)

// The header forms of Signadot's routing key that Signadot reads besides
// baggage: Jaeger's and Datadog's (OpenTracing) baggage headers.
const (
	SignadotJaegerHeader  = "uberctx-sd-routing-key"
	SignadotDatadogHeader = "ot-baggage-sd-routing-key"
)

// W3C Baggage limits.
const (
	// MaxBaggageMembers is the most list-members a baggage may hold.
	MaxBaggageMembers = 64
	// MaxBaggageBytes is the most bytes all baggage header lines may hold
	// together.
	MaxBaggageBytes = 8192
)

// Option configures a [Codec].
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	header    string
	idKey     string
	actorKey  string
	originKey string
	ticketKey string
	compat    []string
	mirror    bool

	keepForeign bool
}

func newConfig(opts []Option) config {
	c := config{
		header:    DefaultHeader,
		idKey:     DefaultIDKey,
		actorKey:  DefaultActorKey,
		originKey: DefaultOriginKey,
		ticketKey: DefaultTicketKey,
	}
	for _, o := range opts {
		o.apply(&c)
	}
	return c
}

// WithHeader sets the name of the dedicated header (default "Sandbox-Id").
// An empty name disables the dedicated header: the sandbox then travels in
// baggage only.
func WithHeader(name string) Option {
	return optionFunc(func(c *config) { c.header = name })
}

// WithBaggageKeys sets the baggage member keys for the ID, the actor and the
// origin (defaults "sandbox.id", "sandbox.actor", "sandbox.origin"). A
// header named as a key is a marker alone, so a key may not be named as a
// standard HTTP header ("origin", "from"): [NewCodec] refuses it.
func WithBaggageKeys(id, actor, origin string) Option {
	return optionFunc(func(c *config) { c.idKey, c.actorKey, c.originKey = id, actor, origin })
}

// WithTicketKey sets the baggage member key of the signed ticket (default
// "sandbox.ticket").
func WithTicketKey(key string) Option {
	return optionFunc(func(c *config) { c.ticketKey = key })
}

// WithSignadot makes the codec read Signadot's sd-routing-key baggage member
// as a sandbox ID, so that requests already tagged for Signadot reach
// sandboxkit sandboxes. Off by default. It must agree with sandbox.id when
// both are present.
func WithSignadot() Option {
	return optionFunc(func(c *config) { c.compat = appendUnique(c.compat, SignadotKey) })
}

// WithOkteto makes the codec read Okteto's okteto-divert baggage member as a
// sandbox ID. Off by default. It must agree with sandbox.id when both are
// present.
func WithOkteto() Option {
	return optionFunc(func(c *config) { c.compat = appendUnique(c.compat, OktetoKey) })
}

// WithBaggageMirror makes extraction also record the sandbox in the
// context's OpenTelemetry baggage, for services whose outgoing
// instrumentation registers only OpenTelemetry's own Baggage propagator. Off
// by default: it costs several allocations per request.
func WithBaggageMirror() Option {
	return optionFunc(func(c *config) { c.mirror = true })
}

// KeepForeignRoutingKeys makes [Codec.Strip] leave other tools' routing
// keys (see [Codec.Foreign]) in place, and [Codec.Foreign] report none, so
// that middleware no longer strips them from untrusted sources. By default
// they are stripped: a Signadot or Okteto hop further on would act on a
// key an outsider wrote. Use it only when those tools' own edge filters
// their keys.
func KeepForeignRoutingKeys() Option {
	return optionFunc(func(c *config) { c.keepForeign = true })
}

func appendUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

// validate checks the configured names: header names must be HTTP tokens,
// baggage keys W3C tokens, and no two keys may be the same.
func (c *config) validate() error {
	if c.header != "" && !isToken(c.header) {
		return fmt.Errorf("propagation: header name %q is not an HTTP token", c.header)
	}
	if strings.EqualFold(c.header, baggageHeader) {
		return fmt.Errorf("propagation: header name %q is reserved for W3C baggage", c.header)
	}
	if std, ok := standardHeader(c.header); ok {
		return fmt.Errorf("propagation: header name %q is the standard HTTP header %s, which clients send for their own reasons: every request carrying it would hold a sandbox marker", c.header, std)
	}
	keys := append([]string{c.idKey, c.actorKey, c.originKey, c.ticketKey}, c.compat...)
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if !isToken(k) {
			return fmt.Errorf("propagation: baggage key %q is not a token", k)
		}
		if seen[k] {
			return fmt.Errorf("propagation: baggage key %q is used twice", k)
		}
		if std, ok := standardHeader(k); ok {
			return fmt.Errorf("propagation: baggage key %q is named as the standard HTTP header %s, which clients send for their own reasons: a header named as a key is a sandbox marker alone (see Codec.KeyHeaders), so every request carrying it would hold one", k, std)
		}
		seen[k] = true
	}
	return nil
}

// standardHeaders are the names, lower-case, of headers that clients,
// browsers, proxies and tracers send for their own reasons: a dedicated
// header or a baggage key named as one (a header named as a key is a
// marker alone on every carrier) would make ordinary requests hold an
// unreadable marker. The IANA registry's request headers and the de
// facto ones of proxies and tracers.
var standardHeaders = [...]string{
	"a-im", "accept", "accept-charset", "accept-datetime", "accept-encoding",
	"accept-language", "access-control-request-headers",
	"access-control-request-method", "authorization", "b3", "cache-control",
	"cdn-loop", "connection", "content-encoding", "content-language",
	"content-length", "content-location", "content-md5", "content-range",
	"content-type", "cookie", "date", "device-memory", "dnt", "downlink",
	"dpr", "early-data", "ect", "expect", "forwarded", "from",
	"grpc-accept-encoding", "grpc-encoding", "grpc-timeout", "host",
	"http2-settings", "if-match", "if-modified-since", "if-none-match",
	"if-range", "if-unmodified-since", "keep-alive", "max-forwards", "origin",
	"pragma", "prefer", "priority", "proxy-authorization", "proxy-connection",
	"range", "referer", "rtt", "save-data", "sec-ch-ua", "sec-ch-ua-mobile",
	"sec-ch-ua-platform", "sec-fetch-dest", "sec-fetch-mode",
	"sec-fetch-site", "sec-fetch-user", "sec-gpc", "sec-purpose",
	"sec-websocket-extensions", "sec-websocket-key", "sec-websocket-protocol",
	"sec-websocket-version", "te", "traceparent", "tracestate", "trailer",
	"transfer-encoding", "uber-trace-id", "upgrade",
	"upgrade-insecure-requests", "user-agent", "via", "viewport-width",
	"warning", "width", "x-amzn-trace-id", "x-b3-flags", "x-b3-parentspanid",
	"x-b3-sampled", "x-b3-spanid", "x-b3-traceid", "x-cloud-trace-context",
	"x-correlation-id", "x-csrf-token", "x-forwarded-for", "x-forwarded-host",
	"x-forwarded-port", "x-forwarded-prefix", "x-forwarded-proto",
	"x-http-method-override", "x-real-ip", "x-request-id", "x-requested-with",
}

// standardHeader returns the standard header (see standardHeaders),
// canonical, that name is to a hop that ignores case and reads '_' as
// '-', as a CGI, WSGI, Rack or PHP hop does (see Codec.alias).
func standardHeader(name string) (string, bool) {
	for _, h := range standardHeaders {
		if sameName(name, h) {
			return canonical(h), true
		}
	}
	return "", false
}

// isToken reports whether s is an RFC 7230 token, which is also what W3C
// baggage keys are.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func isTokenChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func canonical(name string) string { return textproto.CanonicalMIMEHeaderKey(name) }
