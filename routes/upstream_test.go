package routes_test

import (
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/routes"
)

// TestValidateUpstreamRefusesWhatNoOneCanDial: an upstream URL must name a
// host and, when it has a port, one that can be dialled. "http://:80"
// passed, and Go dials an empty host as the local machine, so a sandbox's
// requests went to whatever listened on this host's port 80; a port out
// of range or empty ("http://h:", "http://h:0", "http://h:99999") passed
// in the URL form, though the host:port form refuses it, and every request
// of the sandbox failed at the dial.
func TestValidateUpstreamRefusesWhatNoOneCanDial(t *testing.T) {
	for _, u := range []string{
		"http://:80", "https://:443", "http://:", "http://[]:80",
		"http://h:", "http://h:0", "http://h:65536", "https://h:99999", "http://h:+80",
	} {
		err := routes.ValidateUpstream(u)
		if err == nil || !strings.Contains(err.Error(), u) {
			t.Errorf("ValidateUpstream(%q) = %v, want an error naming it", u, err)
		}
		doc := `{"sandboxes":[{"id":"a","services":{"cart":"` + u + `"}}]}`
		if _, err := routes.ParseDocument([]byte(doc)); err == nil {
			t.Errorf("a document routing to %q was accepted", u)
		}
	}
	for _, u := range []string{"http://h", "http://h:1", "https://h:65535", "http://h:1/", "http://[::1]:80", "http://127.0.0.1:8080"} {
		if err := routes.ValidateUpstream(u); err != nil {
			t.Errorf("ValidateUpstream(%q) = %v, want nil", u, err)
		}
	}
}

// TestValidateUpstreamHostPortFormTakesDigitsAlone: the host:port form
// took any port strconv.Atoi reads ("h:+80"), which the URL form refuses
// ("http://h:+80"): net/url reads a port that is not all digits as no
// port, so http.Transport looked up the host "h:+80" and every HTTP
// request of the sandbox failed at the dial (gRPC's dialler took it).
// Legitimate host:port upstreams are still accepted.
func TestValidateUpstreamHostPortFormTakesDigitsAlone(t *testing.T) {
	for _, u := range []string{"h:+80", "h:+1", "[::1]:+443"} {
		if err := routes.ValidateUpstream(u); err == nil || !strings.Contains(err.Error(), u) {
			t.Errorf("ValidateUpstream(%q) = %v, want an error naming it", u, err)
		}
	}
	for _, u := range []string{"h:80", "h.:80", "H:80", "[::1]:80", "[fe80::1%eth0]:80", "http://[fe80::1%25eth0]:80", "http://h.:80", "10.0.0.1:65535"} {
		if err := routes.ValidateUpstream(u); err != nil {
			t.Errorf("ValidateUpstream(%q) = %v, want nil", u, err)
		}
	}
}

// TestValidateUpstreamTakesHostsAlone: the host:port form
// took any text before the last colon as the host: "#:1", "a/b:80",
// "a?b:80", "user@h:80". No hop dials them as written: httpmw puts the
// upstream in a URL's host, where '/', '?', '#' and '@' end it or mean
// something else, and gRPC reads its target as a URL ("#:1" named no
// host at all). A host name, or an IP address (an IPv6 one with its
// zone), is still taken.
func TestValidateUpstreamTakesHostsAlone(t *testing.T) {
	for _, u := range []string{"#:1", "a/b:80", "a?b:80", "user@h:80", "a b:80", "a%20b:80", "[h#]:80", "[::%#]:1", "[::1%a/b]:80",
		// The URL form alike: gRPC's target for "http://]" was ":80",
		// this machine.
		"http://]", "http://]:80", "http://a!b:80", "http://a%20b:80", "http://[h]:80"} {
		if err := routes.ValidateUpstream(u); err == nil || !strings.Contains(err.Error(), u) {
			t.Errorf("ValidateUpstream(%q) = %v, want an error naming it", u, err)
		}
	}
	for _, u := range []string{"h:80", "h_1.example:80", "H-1.:80", "10.0.0.1:80", "[::1]:80", "[fe80::1%eth0]:80", "[::ffff:10.0.0.1]:80", "bücher.example:80",
		"http://h", "http://[::1]", "http://[fe80::1%25eth0]:80", "https://bücher.example"} {
		if err := routes.ValidateUpstream(u); err != nil {
			t.Errorf("ValidateUpstream(%q) = %v, want nil", u, err)
		}
	}
}
