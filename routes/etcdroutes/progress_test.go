package etcdroutes_test

import (
	"testing"

	"github.com/sandboxkit/sandboxkit/routes/etcdroutes"
)

// TestProgressNotifyTrusted: the etcd versions whose progress
// notifications can run ahead of the watch's events (etcd issues 15220
// and 20221) are not trusted, nor is anything that is not a version.
func TestProgressNotifyTrusted(t *testing.T) {
	for v, want := range map[string]bool{
		"3.4.24": false, "3.4.25": false, "3.4.37": false, "3.4.38": true, "3.4.40": true,
		"3.5.7": false, "3.5.8": false, "3.5.21": false, "3.5.22": true, "3.5.30": true,
		"3.6.0": false, "3.6.1": false, "3.6.2": true, "3.6.14": true,
		"3.7.0": true, "3.7.3": true, "3.8.0-alpha.0": true, "4.0.0": true, "v3.6.5": true,
		"3.6.2-rc.0": false, "3.6.3-rc.0": true, "3.7.0-alpha.0": false, "3.7.0-rc.1": false, "3.7.1-rc.0": true,
		"3.3.27": false, "2.3.8": false,
		"": false, "3.6": false, "3.6.x": false, "3.6.-2": false, "not a version": false,
	} {
		if got := etcdroutes.ProgressNotifyTrusted(v); got != want {
			t.Errorf("ProgressNotifyTrusted(%q) = %v, want %v", v, got, want)
		}
	}
}
