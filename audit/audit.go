// Package audit is the published schema of sandboxkit's audit records:
// promise 7, "everything is accounted for", in names a log pipeline can
// match on.
//
// Every decision a sandboxkit middleware makes about sandbox traffic is one
// [log/slog] record with the message [Message], on the logger given to that
// middleware (its WithLogger option; without one the middleware is silent).
// Its attributes are:
//
//	decision        one of the Decision constants below (always)
//	sandbox.id      the sandbox's ID (always; empty for foreign keys alone)
//	sandbox.actor   who acts in the sandbox (always; may be empty)
//	sandbox.origin  where the sandbox's traffic started (when known)
//	protocol        http, grpc, kafka, sql or redis (when known)
//	peer            remote address, or the consumer group (when known)
//	target          service, upstream, topic or database (when known)
//	reason          why, in words (when there is one; see the Reason constants)
//	ticket.key      the key ID of the ticket that admitted the request
//	                (admitted with ReasonValidTicket only), to find the
//	                admissions of a key being rotated out or leaked
//
// Stripped, rejected and throttled records are logged at [log/slog.LevelWarn],
// the others at [log/slog.LevelInfo]. Values that came from the sender and
// were not admitted are clipped to [MaxValueLen] bytes followed by "...".
// A signed ticket in the sandbox ID, actor or origin of any record (sent
// where they go by mistake) is shown without its signature, its key ID and
// expiry kept.
//
// The middleware also sets [KeyID] (and [KeyActor] when known) on the active
// OpenTelemetry span of an admitted request.
package audit

// Message is the slog message of every audit record.
const Message = "sandboxkit audit"

// Decision is what sandboxkit decided about one piece of sandbox traffic.
type Decision string

// The decisions. Each names who makes it and what happened to the traffic.
const (
	// Admitted: markers from a trusted source, or with a valid ticket, were
	// accepted (httpmw handler and proxy, grpcmw server). The request runs
	// in the sandbox. Reason is ReasonTrustedSource or ReasonValidTicket.
	Admitted Decision = "admitted"
	// Stripped: markers (or other tools' routing keys) from an untrusted
	// source were removed (httpmw, grpcmw). The request continues as
	// production traffic. Reason says why the source was not trusted.
	Stripped Decision = "stripped"
	// Rejected: unreadable markers from a trusted source, or an invalid
	// ticket, were refused (HTTP 400, gRPC InvalidArgument); the traffic
	// went nowhere. Also a sandbox statement refused by a baseline guard
	// (dbroute.Guard), and a sandbox call a router refused because its
	// route table has never loaded ([ReasonNotSynced]; HTTP 503, gRPC
	// Unavailable). Reason is the error.
	Rejected Decision = "rejected"
	// Routed: sent to the sandbox's own upstream, topic or database (httpmw
	// transport and proxy, grpcmw router, dbroute). Reason names it.
	Routed Decision = "routed"
	// Fallback: sent to the baseline although the request belongs to a
	// sandbox, because the sandbox does not override the target, or its
	// upstream was unavailable and fallback was configured. Reason says
	// which.
	Fallback Decision = "fallback"
	// Throttled: refused by the sandbox's budget (rate, in-flight cap or open
	// circuit breaker; package breaker), or a breaker changed state. Reason
	// is the refusal.
	Throttled Decision = "throttled"
	// Skipped: a Kafka message left to its owner, dead-lettered, or dropped
	// as unreadable or orphaned (kafkamw). Reason says which.
	Skipped Decision = "skipped"
)

// Protocols, the values of [KeyProtocol].
const (
	HTTP  = "http"
	GRPC  = "grpc"
	Kafka = "kafka"
	SQL   = "sql"
	Redis = "redis"
)

// Attribute keys of an audit record.
const (
	KeyDecision = "decision"
	KeyID       = "sandbox.id"
	KeyActor    = "sandbox.actor"
	KeyOrigin   = "sandbox.origin"
	KeyProtocol = "protocol"
	KeyPeer     = "peer"
	KeyTarget   = "target"
	KeyReason   = "reason"
	// KeyTicketKey is the key ID of the ticket that admitted a request
	// (records of Admitted with ReasonValidTicket only).
	KeyTicketKey = "ticket.key"
)

// Reasons that are fixed words rather than an error's text.
const (
	// ReasonTrustedSource: admitted because the peer is trusted.
	ReasonTrustedSource = "trusted source"
	// ReasonValidTicket: admitted because the markers carry a valid ticket.
	ReasonValidTicket = "valid ticket"
	// ReasonUntrusted: stripped because the source is not trusted; the
	// record's reason starts with it and may say more after a colon.
	ReasonUntrusted = "sandbox markers from an untrusted source"
	// ReasonForeignKeys: other tools' routing keys (Signadot, Okteto) from
	// an untrusted source were stripped; the record's reason starts with it.
	ReasonForeignKeys = "foreign routing keys from an untrusted source"
	// ReasonNotOverridden: fallback because the sandbox does not override
	// the target service.
	ReasonNotOverridden = "sandbox does not override the service"
	// ReasonUnknownSandbox: fallback because the sandbox is not in the
	// route table at all (never created, removed, expired, or a typo in
	// the ID), where the request's call goes.
	ReasonUnknownSandbox = "sandbox is not in the route table"
	// ReasonNotSynced: a sandbox's call was refused (or, where the caller
	// allows it, sent to the baseline) because the route table has never
	// loaded from its source, so whether the sandbox overrides the target
	// is unknown.
	ReasonNotSynced = "route table not synced"
)

// MaxValueLen is the length to which sender-written values of records
// about traffic that was not admitted are clipped.
const MaxValueLen = 128
