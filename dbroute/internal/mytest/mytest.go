// Package mytest is the real MySQL/MariaDB server as the tests of
// dbroute/sqlroute and dbroute/provision see it: a per-test environment
// whose every database carries the test's tag and is dropped when the
// test ends.
package mytest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// DefaultDSN is the server the tests use unless SANDBOXKIT_TEST_MYSQL_DSN
// says otherwise.
const DefaultDSN = "root@tcp(127.0.0.1:3306)/"

// ItemsDDL creates the table the tests write to.
const ItemsDDL = "CREATE TABLE items (id BIGINT AUTO_INCREMENT PRIMARY KEY, owner VARCHAR(64) NOT NULL, n INT NOT NULL DEFAULT 0)"

var shared struct {
	once  sync.Once
	err   error
	cfg   *mysql.Config
	run   string
	tests atomic.Int32
}

// Env is one test's view of the server.
type Env struct {
	// Admin is a pool on the server without a database.
	Admin *sql.DB
	// Tag is in the name of every database the test creates.
	Tag string
	// Prefix is a provisioner prefix carrying the tag.
	Prefix string
	cfg    *mysql.Config
}

func setup() error {
	dsn := os.Getenv("SANDBOXKIT_TEST_MYSQL_DSN")
	if dsn == "" {
		dsn = DefaultDSN
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return err
	}
	cfg.Timeout = 5 * time.Second
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		return err
	}
	db := sql.OpenDB(c)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		return err
	}
	var b [3]byte
	rand.Read(b[:])
	shared.cfg, shared.run = cfg, hex.EncodeToString(b[:])
	return nil
}

// Server connects to the test server, or skips the test loudly (fails it
// when SANDBOXKIT_REQUIRE_DATABASE=1).
func Server(t testing.TB) *Env {
	t.Helper()
	shared.once.Do(func() { shared.err = setup() })
	if err := shared.err; err != nil {
		if os.Getenv("SANDBOXKIT_REQUIRE_DATABASE") == "1" {
			t.Fatalf("MySQL/MariaDB unreachable (SANDBOXKIT_REQUIRE_DATABASE=1): %v", err)
		}
		t.Skipf("SKIPPING: MySQL/MariaDB unreachable: %v (set SANDBOXKIT_TEST_MYSQL_DSN, or SANDBOXKIT_REQUIRE_DATABASE=1 to fail)", err)
	}
	tag := fmt.Sprintf("%s%03x_", shared.run, shared.tests.Add(1))
	e := &Env{Tag: tag, Prefix: "m" + tag, cfg: shared.cfg}
	e.Admin = e.Open(t, "")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, db := range e.Databases(t) {
			if _, err := e.Admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+Quote(db)); err != nil {
				t.Errorf("cleanup: dropping %s: %v", db, err)
			}
		}
		if left := e.Databases(t); len(left) > 0 {
			t.Errorf("cleanup: databases left behind: %v", left)
		}
	})
	return e
}

// Quote quotes a MySQL identifier.
func Quote(name string) string { return "`" + strings.ReplaceAll(name, "`", "``") + "`" }

// Name is the name of a database the test itself creates.
func (e *Env) Name(s string) string { return "x" + e.Tag + s }

// Config returns a copy of the server's configuration with database db.
func (e *Env) Config(db string) *mysql.Config {
	c := e.cfg.Clone()
	c.DBName = db
	return c
}

// DSN is the server's connection string with database db.
func (e *Env) DSN(db string) string { return e.Config(db).FormatDSN() }

// Addr is the server's address.
func (e *Env) Addr() string { return e.cfg.Addr }

// Connector returns a connector to database db.
func (e *Env) Connector(t testing.TB, db string) driver.Connector {
	t.Helper()
	c, err := mysql.NewConnector(e.Config(db))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Open opens a *sql.DB on database db, closed when the test ends.
func (e *Env) Open(t testing.TB, db string) *sql.DB {
	t.Helper()
	d := sql.OpenDB(e.Connector(t, db))
	t.Cleanup(func() { d.Close() })
	return d
}

// Exec runs q on the admin pool, failing the test on error.
func (e *Env) Exec(t testing.TB, q string, args ...any) {
	t.Helper()
	if _, err := e.Admin.ExecContext(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// CreateDB creates database name, runs ddl in it, and returns its DSN.
func (e *Env) CreateDB(t testing.TB, name string, ddl ...string) string {
	t.Helper()
	e.Exec(t, "CREATE DATABASE "+Quote(name))
	for _, q := range ddl {
		e.Exec(t, strings.Replace(q, "CREATE TABLE ", "CREATE TABLE "+Quote(name)+".", 1))
	}
	return e.DSN(name)
}

// Databases lists the databases whose names contain the test's tag.
func (e *Env) Databases(t testing.TB) []string {
	t.Helper()
	rows, err := e.Admin.QueryContext(context.Background(),
		"SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE LOCATE(?, SCHEMA_NAME) > 0 ORDER BY 1", e.Tag)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Count runs a counting query on the admin pool.
func (e *Env) Count(t testing.TB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := e.Admin.QueryRowContext(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// Proxy is a TCP proxy on loopback in front of the server whose
// connections a test can cut all at once: the server sees each session
// end as if its client had died.
type Proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// NewProxy starts a proxy to the server, closed when the test ends.
func (e *Env) NewProxy(t testing.TB) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: e.cfg.Addr, conns: map[net.Conn]struct{}{}}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[s] = struct{}{}, struct{}{}
			p.mu.Unlock()
			p.wg.Go(func() { io.Copy(s, c); s.Close() })
			p.wg.Go(func() { io.Copy(c, s); c.Close() })
		}
	})
	t.Cleanup(func() { p.ln.Close(); p.Cut(); p.wg.Wait() })
	return p
}

// DSN is the connection string of database db through the proxy.
func (p *Proxy) DSN(e *Env, db string) string {
	c := e.Config(db)
	c.Addr = p.ln.Addr().String()
	return c.FormatDSN()
}

// Cut closes every connection through the proxy.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}
