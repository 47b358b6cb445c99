package provision_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/provision"
)

// TestConfig: a bad option or connection string is an error wrapping
// dbroute.ErrConfig that names the option; nil options are skipped.
func TestConfig(t *testing.T) {
	const dsn = "postgres://nobody@127.0.0.1:1/postgres"
	news := map[string]func(dsn string, opts ...provision.ProvisionerOption) (interface{ Close() }, error){
		"NewDatabasePerSandbox": func(dsn string, opts ...provision.ProvisionerOption) (interface{ Close() }, error) {
			return provision.NewDatabasePerSandbox(dsn, provision.Migration{}, opts...)
		},
		"NewSchemaPerSandbox": func(dsn string, opts ...provision.ProvisionerOption) (interface{ Close() }, error) {
			return provision.NewSchemaPerSandbox(dsn, provision.Migration{}, opts...)
		},
	}
	for name, newP := range news {
		for _, prefix := range []string{"", "1abc", "Abc", "a-b", "a b", strings.Repeat("a", provision.MaxPrefixLen+1)} {
			if _, err := newP(dsn, provision.WithPrefix(prefix)); !errors.Is(err, dbroute.ErrConfig) || !strings.Contains(err.Error(), "WithPrefix") {
				t.Errorf("%s(WithPrefix(%q)) = %v, want ErrConfig naming WithPrefix", name, prefix, err)
			}
		}
		if _, err := newP(dsn, provision.WithReapGrace(-1)); !errors.Is(err, dbroute.ErrConfig) || !strings.Contains(err.Error(), "WithReapGrace") {
			t.Errorf("%s(WithReapGrace(-1)) = %v, want ErrConfig naming WithReapGrace", name, err)
		}
		if _, err := newP("postgres://127.0.0.1:notaport/x"); !errors.Is(err, dbroute.ErrConfig) {
			t.Errorf("%s(bad DSN) = %v, want ErrConfig", name, err)
		}
		p, err := newP(dsn, nil, provision.WithPrefix("ok_"), nil)
		if err != nil {
			t.Errorf("%s with nil options: %v", name, err)
			continue
		}
		p.Close()
	}
	p, err := provision.NewDatabasePerSandbox(dsn, provision.Migration{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Reap(t.Context(), nil); !errors.Is(err, dbroute.ErrConfig) {
		t.Errorf("Reap(nil table) = %v, want ErrConfig", err)
	}
}
