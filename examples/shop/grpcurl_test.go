package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/examples/shop/cartpb"
)

// grpcurl runs the grpcurl pinned in tools/go.mod with args and returns
// its output.
func grpcurl(ctx context.Context, t *testing.T, args ...string) (string, error) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command to run grpcurl with: %v", err)
	}
	modfile, err := filepath.Abs("../../tools/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, goBin, append([]string{"tool", "-modfile=" + modfile, "grpcurl"}, args...)...)
	// -modfile is refused in workspace mode, and the repository has a
	// go.work: the command a user runs (main.go prints it) turns it off.
	cmd.Env = append(cmd.Environ(), "GOWORK=off")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The grpcurl commands -serve prints work against the shop, with the
// standard tool: list and describe through reflection, a production call,
// a call with pr-42's ticket that reaches pr-42's cart, a forged call that
// does not, and the health check.
func TestGRPCurl(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // the first run builds grpcurl
	defer cancel()
	sh, h := startShop(ctx, t)
	cmds := sh.grpcurlCommands(h.Get("Baggage"))
	want := [][]string{
		{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "shop.Cart"},
		{"shop.Cart is a service:", "rpc Price ( .shop.PriceRequest ) returns ( .shop.Quote );"},
		{"shop.Quote is a message:", "int64 total_cents = 4;", "string sandbox = 7;"},
		{`"server": "cart"`, `"totalCents": "3600"`, `"rule": "list price"`},
		{`"server": "cart@pr-42"`, `"totalCents": "2880"`, `"sandbox": "pr-42"`},
		{`"server": "cart"`, `"totalCents": "3600"`},
		{`"status": "SERVING"`},
	}
	if len(cmds) != len(want) {
		t.Fatalf("%d commands, want %d", len(cmds), len(want))
	}
	for i, c := range cmds {
		out, err := grpcurl(ctx, t, c.args...)
		t.Logf("grpcurl %s\n%s", shellLine(c.args...), out)
		if err != nil {
			t.Errorf("%s: %v", c.what, err)
			continue
		}
		for _, w := range want[i] {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q", c.what, w)
			}
		}
		if i == 5 && strings.Contains(out, "pr-42") {
			t.Errorf("%s: the forged call reached the sandbox", c.what)
		}
	}
	recs := sh.audit.since(0)
	edge := func(d audit.Decision) record {
		return record{"service": "gateway", audit.KeyDecision: string(d), audit.KeyProtocol: audit.GRPC, audit.KeyID: pr42ID,
			audit.KeyTarget: cartpb.Cart_Price_FullMethodName}
	}
	if count(recs, edge(audit.Admitted)) != 1 || count(recs, edge(audit.Stripped)) != 1 {
		t.Errorf("audit records of the gRPC edge: want one admitted and one stripped for pr-42, got %v", recs)
	}
}
