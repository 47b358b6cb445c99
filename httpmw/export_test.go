package httpmw

// ForwardedClient exposes the X-Forwarded-For rule to the fuzz test.
func ForwardedClient(lines []string, hops int) (addr string, entry string, n int, ok bool) {
	a, e, n, p := forwardedClient(lines, hops)
	if p != trusted {
		return "", e, n, false
	}
	return a.String(), e, n, true
}

// WithClock sets the clock that checks ticket expiry: the test hook of
// the unexported option (the public API has none; see the conventions of
// issue 16).
var WithClock = withClock

// ForwardedFor exposes the Forwarded (RFC 7239) rule to the tests.
func ForwardedFor(lines []string, hops int) (addr string, ok bool) {
	a, _, _, p := forwardedFor(lines, hops)
	if p != trusted {
		return "", false
	}
	return a.String(), true
}

// SplitUpstream exposes the reading of a route's upstream to the fuzz
// test.
var SplitUpstream = splitUpstream
