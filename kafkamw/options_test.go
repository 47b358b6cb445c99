package kafkamw_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestWrongRoleOptionsDoNotCompile builds, inside the module, a program
// that hands each constructor options of another role, and checks that
// the compiler refuses every one of them and accepts the right ones.
func TestWrongRoleOptionsDoNotCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program")
	}
	wrong := []string{
		`kafkamw.NewWriter(kw, kafkamw.AsSandbox("pr-1"))`,
		`kafkamw.NewWriter(kw, kafkamw.WithDeadLetter(kw))`,
		`kafkamw.NewWriter(kw, kafkamw.WithRouteWait(time.Second))`,
		`kafkamw.NewWriter(kw, kafkamw.WithSkipCommitInterval(time.Second))`,
		`kafkamw.NewWriter(kw, kafkamw.WithMeterProvider(nil))`,
		`kafkamw.NewReader(cfg, table, "orders", kafkamw.WithBreaker(nil))`,
		`kafkamw.NewReader(cfg, table, "orders", kafkamw.WithRetries(3))`,
		`r.Run(ctx, h, kafkamw.WithCodec(nil))`,
		`var _ kafkamw.Option = kafkamw.AsSandbox("pr-1")`,
	}
	right := []string{
		`kafkamw.NewWriter(kw, kafkamw.WithCodec(nil), kafkamw.WithLogger(nil), kafkamw.WithBreaker(nil))`,
		`kafkamw.NewReader(cfg, table, "orders", kafkamw.WithCodec(nil), kafkamw.WithLogger(nil), kafkamw.AsSandbox("pr-1"), kafkamw.WithDeadLetter(kw), kafkamw.WithRouteWait(time.Second), kafkamw.WithSkipCommitInterval(time.Second), kafkamw.WithMeterProvider(nil))`,
		`r.Run(ctx, h, kafkamw.WithRetries(3), kafkamw.OnError(nil))`,
		`var _ kafkamw.ReaderOption = kafkamw.WithCodec(nil)`,
		`var _ kafkamw.WriterOption = kafkamw.WithLogger(nil)`,
	}
	var src strings.Builder
	src.WriteString(`package main

import (
	"context"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/routes"
)

var (
	ctx   context.Context
	kw    *kafka.Writer
	cfg   kafka.ReaderConfig
	table *routes.Table
	r     *kafkamw.Reader
	h     kafkamw.Handler
)

var _ = time.Second

func main() {}
`)
	line := strings.Count(src.String(), "\n") + 1
	lineOf := map[int]string{}
	wrongLine := map[int]bool{}
	for i, stmt := range append(append([]string{}, wrong...), right...) {
		fmt.Fprintf(&src, "func case%d() { %s }\n", i, stmt)
		lineOf[line] = stmt
		wrongLine[line] = i < len(wrong)
		line++
	}

	dir, err := os.MkdirTemp(".", "_wrongrole-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "build", "-gcflags=-e", "-o", os.DevNull, "./"+filepath.Base(dir)).CombinedOutput()
	if err == nil {
		t.Fatalf("the program compiled: options of the wrong role were accepted\n%s", src.String())
	}
	failed := map[int]string{}
	for _, m := range regexp.MustCompile(`main\.go:(\d+):\d+: (.*)`).FindAllStringSubmatch(string(out), -1) {
		n, _ := strconv.Atoi(m[1])
		failed[n] += m[2]
	}
	for n, stmt := range lineOf {
		msg, bad := failed[n]
		switch {
		case wrongLine[n] && !bad:
			t.Errorf("compiles, should not: %s", stmt)
		case wrongLine[n] && !strings.Contains(msg, "does not implement"):
			t.Errorf("%s: refused for another reason: %s", stmt, msg)
		case !wrongLine[n] && bad:
			t.Errorf("does not compile, should: %s: %s", stmt, msg)
		}
	}
	if t.Failed() {
		t.Logf("go build output:\n%s", out)
	}
}
