package sqlroute_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	pub "github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/mytest"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/dbroute/sqlroute"
	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
)

// TestSandboxHandlesRefuseOtherContexts: a Conn, Tx or Stmt the router
// handed out for sandbox "a" (a request that caches one, a Tx passed down
// a call chain) used with sandbox "b"'s context would write b's rows into
// a's test database, and used with a production context would write
// production rows there (lost when a's database is dropped). Each such
// statement is refused with ErrForeignContext and audited; nothing lands
// in a's database, and the handle still serves a's own context.
func TestSandboxHandlesRefuseOtherContexts(t *testing.T) {
	worlds(t, func(t *testing.T, mk func(testing.TB, ...sqlroute.GuardOption) *world) {
		w := mk(t)
		rec, logger := audittest.New()
		r := w.router(t, sqlroute.WithLogger(logger))
		a := sandboxCtx("a")
		type reqKey struct{}
		prod := context.WithValue(context.Background(), reqKey{}, "a production request")
		others := map[string]context.Context{"production": prod, "sandbox b": sandboxCtx("b")}
		ins := w.q("INSERT INTO items (owner, n) VALUES (?, ?)")
		sel := "SELECT owner FROM items"
		paths := map[string]func(ctx context.Context) error{
			"Conn.ExecContext": func(ctx context.Context) error {
				c, err := r.Conn(a)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_, err = c.ExecContext(ctx, ins, "intruder", 1)
				if _, err2 := c.ExecContext(a, ins, "a", 1); err2 != nil {
					t.Errorf("the Conn no longer serves its own sandbox: %v", err2)
				}
				return err
			},
			"Conn.QueryContext": func(ctx context.Context) error {
				c, err := r.Conn(a)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				rows, err := c.QueryContext(ctx, sel)
				if err == nil {
					rows.Close()
				}
				return err
			},
			"Conn.BeginTx": func(ctx context.Context) error {
				c, err := r.Conn(a)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				tx, err := c.BeginTx(ctx, nil)
				if err == nil {
					tx.Rollback()
				}
				return err
			},
			"Conn.PrepareContext": func(ctx context.Context) error {
				c, err := r.Conn(a)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				st, err := c.PrepareContext(ctx, ins)
				if err == nil {
					st.Close()
				}
				return err
			},
			"Conn.PingContext": func(ctx context.Context) error {
				c, err := r.Conn(a)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				return c.PingContext(ctx)
			},
			"Tx.ExecContext, committed": func(ctx context.Context) error {
				tx, err := r.BeginTx(a, nil)
				if err != nil {
					t.Fatal(err)
				}
				_, err = tx.ExecContext(ctx, ins, "intruder", 2)
				if cerr := tx.Commit(); cerr != nil {
					t.Errorf("commit: %v", cerr)
				}
				return err
			},
			"Tx.QueryRowContext": func(ctx context.Context) error {
				tx, err := r.BeginTx(a, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer tx.Rollback()
				var s string
				err = tx.QueryRowContext(ctx, sel).Scan(&s)
				if errors.Is(err, sql.ErrNoRows) {
					err = nil
				}
				return err
			},
			"Stmt (prepared in a Tx of a) ExecContext": func(ctx context.Context) error {
				tx, err := r.BeginTx(a, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer tx.Commit()
				st, err := tx.PrepareContext(a, ins)
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				_, err = st.ExecContext(ctx, "intruder", 3)
				return err
			},
			"Stmt (prepared on a Conn of a) QueryContext": func(ctx context.Context) error {
				c, err := r.Conn(a)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				st, err := c.PrepareContext(a, sel)
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				rows, err := st.QueryContext(ctx)
				if err == nil {
					rows.Close()
				}
				return err
			},
		}
		refusals := 0
		for other, ctx := range others {
			for name, path := range paths {
				if err := path(ctx); !errors.Is(err, sqlroute.ErrForeignContext) {
					t.Errorf("%s of sandbox a's database with a %s context: %v, want ErrForeignContext", name, other, err)
				}
				refusals++
			}
		}
		if n := w.count(t, "a", "intruder"); n != 0 {
			t.Errorf("%d rows of other contexts reached sandbox a's test database", n)
		}
		if n := w.count(t, "a", "a"); n != len(others) {
			t.Errorf("sandbox a's own statements: %d rows, want %d", n, len(others))
		}
		got := 0
		for _, rc := range rec.Records() {
			if rc[pub.KeyDecision] == string(pub.Rejected) && rc[pub.KeyProtocol] == pub.SQL {
				got++
			}
		}
		if got != refusals {
			t.Errorf("%d audit records of refusals, want %d", got, refusals)
		}
	})
}

// TestGuardPreparedArguments: database/sql asks a prepared statement's
// driver how to convert arguments, and the connection's when the
// statement cannot say; the guard's statement said "default" instead, so
// pgx's stdlib (whose connection, not statement, accepts every Go value)
// refused a slice on a prepared statement of a guarded baseline, and of a
// sandbox's *sql.DB, that the bare *sql.DB takes.
func TestGuardPreparedArguments(t *testing.T) {
	w := postgresWorld(t)
	r := w.router(t)
	for name, ctx := range map[string]context.Context{"baseline": context.Background(), "sandbox": sandboxCtx("a")} {
		c, err := r.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st, err := c.PrepareContext(ctx, "SELECT cardinality($1::bigint[])")
		if err != nil {
			t.Fatal(err)
		}
		var n int
		if err := st.QueryRowContext(ctx, []int64{4, 5, 6}).Scan(&n); err != nil || n != 3 {
			t.Errorf("%s: a prepared statement with a []int64: %d, %v; want 3", name, n, err)
		}
		st.Close()
		c.Close()
	}
}

// TestMySQLSandboxReachesWhatItsUserMay pins a limit: on MySQL and
// MariaDB a connection reaches every database its user has grants on, and
// the router cannot read SQL. A sandbox statement naming the baseline's
// database (db.table), or a USE of it — which also stays on the pooled
// connection for the sandbox's next statements — reaches production when
// the test database is on the baseline's server with a user granted on
// production. A test database user granted on test databases only is the
// remedy: the same statements are refused by the server.
func TestMySQLSandboxReachesWhatItsUserMay(t *testing.T) {
	w := mariadbWorld(t)
	e := mytest.Server(t)
	bg := context.Background()
	var base, dbb string
	if err := w.direct[""].QueryRowContext(bg, "SELECT DATABASE()").Scan(&base); err != nil {
		t.Fatal(err)
	}
	if err := w.direct["b"].QueryRowContext(bg, "SELECT DATABASE()").Scan(&dbb); err != nil {
		t.Fatal(err)
	}
	oneConn := sqlroute.WithDBConfig(func(_ string, db *sql.DB) { db.SetMaxOpenConns(1) })
	qualified := "INSERT INTO " + mytest.Quote(base) + ".items (owner) VALUES (?)"
	use := "USE " + mytest.Quote(base)
	plain := "INSERT INTO items (owner) VALUES (?)"

	// The limit: the world's test databases are reached as root.
	r := w.router(t, oneConn)
	a := sandboxCtx("a")
	if _, err := r.ExecContext(a, qualified, "qualified"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ExecContext(a, use); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ExecContext(a, plain, "after-use"); err != nil {
		t.Fatal(err)
	}
	if n := w.count(t, "", "qualified") + w.count(t, "", "after-use"); n != 2 {
		t.Errorf("the limit moved: %d of 2 sandbox rows naming production reached it (update doc.go)", n)
	}

	// The remedy: a user granted on its test database only.
	user := "u" + e.Tag
	e.Exec(t, "CREATE USER '"+user+"'@'%' IDENTIFIED BY 'pw'")
	t.Cleanup(func() { e.Admin.ExecContext(bg, "DROP USER '"+user+"'@'%'") })
	e.Exec(t, "GRANT ALL ON "+mytest.Quote(dbb)+".* TO '"+user+"'@'%'")
	cfg := e.Config(dbb)
	cfg.User, cfg.Passwd = user, "pw"
	p, err := sqlroute.StaticMySQL(map[string]string{"b": cfg.FormatDSN()})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := sqlroute.New(w.baseline, p, oneConn)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	b := sandboxCtx("b")
	if _, err := r2.ExecContext(b, qualified, "restricted"); err == nil {
		t.Error("a user granted on its test database only wrote to production by a qualified name")
	}
	if _, err := r2.ExecContext(b, use); err == nil {
		t.Error("a user granted on its test database only switched to production with USE")
	}
	if _, err := r2.ExecContext(b, plain, "restricted"); err != nil {
		t.Fatal(err)
	}
	if n := w.count(t, "", "restricted"); n != 0 {
		t.Errorf("%d rows of the restricted sandbox reached production", n)
	}
	if n := w.count(t, "b", "restricted"); n != 1 {
		t.Errorf("the restricted sandbox's database holds %d of its rows, want 1", n)
	}
}

// TestNotTheBaselineWhenTheServerHidesItsIdentifier: where an
// administrator revoked pg_control_system() from PUBLIC (in the baseline
// database: pg_proc is per database), a role that may not call it is
// identified by the fallback (the postmaster's start time, port,
// version). The router compared a sandbox's fallback with the baseline's
// system identifier (a superuser baseline), and fallbacks spelt by the
// session (the start time in the session's time zone; the port as
// inet_server_port(), NULL over the unix socket): the production database
// reached as another role, over the socket or with another time zone,
// was taken for a test database, and the sandbox's rows landed in
// production.
func TestNotTheBaselineWhenTheServerHidesItsIdentifier(t *testing.T) {
	e := pgtest.Server(t)
	bg := context.Background()
	name := e.Name("hidden")
	dsn := e.CreateDB(t, name, pgtest.ItemsDDL)
	role := "r" + e.Tag
	e.Exec(t, "CREATE ROLE "+role+" LOGIN")
	t.Cleanup(func() {
		if c, err := pgx.Connect(bg, dsn); err == nil {
			c.Exec(bg, "DROP OWNED BY "+role)
			c.Close(bg)
		}
		e.Admin.Exec(bg, "DROP ROLE IF EXISTS "+role)
	})
	for _, q := range []string{
		"REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC",
		"GRANT ALL ON items TO " + role,
		"GRANT ALL ON SEQUENCE items_id_seq TO " + role,
	} {
		c, err := pgx.Connect(bg, dsn)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(bg, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		c.Close(bg)
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	kv := func(host, user, extra string) string {
		return fmt.Sprintf("host=%s port=%d user=%s dbname=%s %s", host, cfg.Port, user, name, extra)
	}
	spellings := map[string]string{
		"as-role":  kv(cfg.Host, role, ""),
		"tz":       kv(cfg.Host, role, "timezone=America/New_York"),
		"datestyl": kv(cfg.Host, role, "datestyle=SQL,DMY"),
	}
	if _, err := os.Stat("/var/run/postgresql/.s.PGSQL." + fmt.Sprint(cfg.Port)); err == nil {
		spellings["socket"] = kv("/var/run/postgresql", role, "")
	}
	p, err := dbroute.Static(spellings)
	if err != nil {
		t.Fatal(err)
	}
	baselines := map[string]string{"superuser": kv(cfg.Host, cfg.User, ""), "role": kv(cfg.Host, role, "")}
	for bname, bdsn := range baselines {
		bcfg, err := pgx.ParseConfig(bdsn)
		if err != nil {
			t.Fatal(err)
		}
		base := sql.OpenDB(sqlroute.Guard(stdlib.GetConnector(*bcfg)))
		defer base.Close()
		r, err := sqlroute.New(base, sqlroute.Postgres(p))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for id := range spellings {
			if _, err := r.ExecContext(sandboxCtx(id), "INSERT INTO items (owner) VALUES ($1)", id); !errors.Is(err, dbroute.ErrNoTestDatabase) {
				t.Errorf("baseline as %s, the baseline database spelt %q as a test database: %v, want ErrNoTestDatabase", bname, id, err)
			}
		}
	}
	if n := pgtest.Count(t, dsn, "SELECT count(*) FROM items"); n != 0 {
		t.Errorf("%d sandbox rows reached the baseline database", n)
	}
}

// dbSwitch is a TCP proxy on loopback in front of the PostgreSQL server
// that connects each new session to the database it is told (it rewrites
// the startup message's database), as a pooler's alias that an operator
// repoints, or a host list whose next host serves the same name
// elsewhere, would.
type dbSwitch struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	db     string
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newDBSwitch(t *testing.T, target, db string) *dbSwitch {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dbSwitch{ln: ln, target: target, db: db}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.handle(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *dbSwitch) point(db string) { p.mu.Lock(); p.db = db; p.mu.Unlock() }

func (p *dbSwitch) handle(client net.Conn) {
	p.mu.Lock()
	db := p.db
	p.conns = append(p.conns, client)
	p.mu.Unlock()
	defer client.Close()
	var msg []byte
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(client, hdr[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		if binary.BigEndian.Uint32(hdr[4:]) == 80877103 { // SSLRequest
			client.Write([]byte{'N'})
			continue
		}
		msg = make([]byte, n-8)
		if _, err := io.ReadFull(client, msg); err != nil {
			return
		}
		version := hdr[4:]
		parts := bytes.Split(bytes.TrimRight(msg, "\x00"), []byte{0})
		var out bytes.Buffer
		out.Write(make([]byte, 4))
		out.Write(version)
		for i := 0; i+1 < len(parts); i += 2 {
			v := parts[i+1]
			if string(parts[i]) == "database" {
				v = []byte(db)
			}
			out.Write(parts[i])
			out.WriteByte(0)
			out.Write(v)
			out.WriteByte(0)
		}
		out.WriteByte(0)
		msg = out.Bytes()
		binary.BigEndian.PutUint32(msg, uint32(len(msg)))
		break
	}
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, server)
	p.mu.Unlock()
	defer server.Close()
	if _, err := server.Write(msg); err != nil {
		return
	}
	done := make(chan struct{})
	go func() { io.Copy(client, server); client.Close(); close(done) }()
	io.Copy(server, client)
	server.Close()
	<-done
}

// TestNotTheBaselineOnEveryConnection: the router asked a sandbox's test
// database who it was once, on the first connection of its *sql.DB;
// later connections of the same connection string may reach another
// database (a pooler's alias repointed, a host list's next host), and
// reached production unchecked. Every new connection is now asked.
func TestNotTheBaselineOnEveryConnection(t *testing.T) {
	w := postgresWorld(t)
	bg := context.Background()
	var base, dba string
	if err := w.direct[""].QueryRowContext(bg, "SELECT current_database()").Scan(&base); err != nil {
		t.Fatal(err)
	}
	if err := w.direct["a"].QueryRowContext(bg, "SELECT current_database()").Scan(&dba); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(w.dsn["a"])
	if err != nil {
		t.Fatal(err)
	}
	sw := newDBSwitch(t, net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)), dba)
	host, port, _ := net.SplitHostPort(sw.ln.Addr().String())
	dsn := fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable", host, port, cfg.User, dba)
	sp, err := dbroute.Static(map[string]string{"alias": dsn})
	if err != nil {
		t.Fatal(err)
	}
	rec, logger := audittest.New()
	r, err := sqlroute.New(w.baseline, sqlroute.Postgres(sp), sqlroute.WithLogger(logger),
		sqlroute.WithDBConfig(func(_ string, db *sql.DB) { db.SetMaxIdleConns(0) })) // a new connection per statement
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := sandboxCtx("alias")
	ins := "INSERT INTO items (owner) VALUES ($1)"
	if _, err := r.ExecContext(ctx, ins, "alias"); err != nil {
		t.Fatal(err)
	}
	if n := w.count(t, "a", "alias"); n != 1 {
		t.Fatalf("the test database holds %d rows, want 1", n)
	}
	rejected := func() int {
		n := 0
		for _, rc := range rec.Records() {
			if rc[pub.KeyDecision] == string(pub.Rejected) && rc[pub.KeyID] == "alias" {
				n++
			}
		}
		return n
	}
	sw.point(base)
	if _, err := r.ExecContext(ctx, ins, "alias"); !errors.Is(err, dbroute.ErrNoTestDatabase) {
		t.Errorf("a new connection that reached the baseline database: %v, want ErrNoTestDatabase", err)
	}
	if n := rejected(); n != 1 {
		t.Errorf("%d audit records of the refusal, want 1", n)
	}
	if n := w.count(t, "", "alias"); n != 0 {
		t.Errorf("%d sandbox rows reached the baseline database", n)
	}
	sw.point(dba)
	if _, err := r.ExecContext(ctx, ins, "alias"); err != nil {
		t.Errorf("back on the test database: %v", err)
	}
}

// TestSandboxHandlesWithoutContext: database/sql's methods without a
// context (Tx.Exec, Tx.Query, Tx.Prepare, Stmt.Exec, Tx.Stmt) hand the
// driver context.Background(). On a sandbox's transaction they are the
// holder's statements, not production's: they run in the sandbox's test
// database, while a production request's context is still refused.
func TestSandboxHandlesWithoutContext(t *testing.T) {
	worlds(t, func(t *testing.T, mk func(testing.TB, ...sqlroute.GuardOption) *world) {
		w := mk(t)
		r := w.router(t)
		a := sandboxCtx("a")
		ins := w.q("INSERT INTO items (owner, n) VALUES (?, ?)")
		tx, err := r.BeginTx(a, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ins, "legacy", 1); err != nil {
			t.Errorf("Tx.Exec: %v", err)
		}
		st, err := tx.Prepare(ins)
		if err != nil {
			t.Fatalf("Tx.Prepare: %v", err)
		}
		if _, err := st.Exec("legacy", 2); err != nil {
			t.Errorf("Stmt.Exec: %v", err)
		}
		rows, err := tx.Query("SELECT owner FROM items")
		if err != nil {
			t.Errorf("Tx.Query: %v", err)
		} else {
			rows.Close()
		}
		type reqKey struct{}
		req := context.WithValue(context.Background(), reqKey{}, "a production request")
		if _, err := tx.ExecContext(req, ins, "intruder", 3); !errors.Is(err, sqlroute.ErrForeignContext) {
			t.Errorf("a production request's context: %v, want ErrForeignContext", err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if n := w.count(t, "a", "legacy"); n != 2 {
			t.Errorf("sandbox a's database holds %d rows of the methods without a context, want 2", n)
		}
		if n := w.count(t, "a", "intruder"); n != 0 {
			t.Errorf("%d rows of a production request in sandbox a's database", n)
		}
	})
}
