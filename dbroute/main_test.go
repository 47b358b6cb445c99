package dbroute_test

import (
	"testing"

	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
