// Package nested runs the tests of the repository's nested modules, so that
// the README's test command, `go test ./...` from the root, runs them too:
// `./...` stops at a directory holding another go.mod, even in workspace
// mode. The modules are nested so that what library users download stays
// free of etcd's server (see routes/etcdroutes).
package nested

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// modules are the nested modules with tests, relative to the root.
var modules = []string{
	"routes/etcdroutes",
	"routes/etcdroutes/etcdtest",
	"cmd/sandboxctl",
}

func TestNestedModules(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the nested modules' tests build etcd's server")
	}
	for _, dir := range modules {
		t.Run(strings.ReplaceAll(dir, "/", "_"), func(t *testing.T) {
			args := []string{"test", "-count=1"}
			if raceEnabled {
				args = append(args, "-race")
			}
			if d, ok := t.Deadline(); ok {
				// Leave the child time to report before this test's own
				// deadline kills it without a word.
				left := time.Until(d) - 30*time.Second
				if left <= 0 {
					t.Fatalf("no time left to run %s's tests", dir)
				}
				args = append(args, "-timeout", left.Round(time.Second).String())
			}
			args = append(args, "./...")
			cmd := exec.Command("go", args...)
			cmd.Dir = "../../" + dir
			cmd.Env = os.Environ()
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
			}
			t.Logf("go %s in %s:\n%s", strings.Join(args, " "), dir, out)
			if !strings.Contains(string(out), "ok ") {
				t.Fatalf("no package of %s reported ok:\n%s", dir, out)
			}
		})
	}
}
