package dbroute

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// errRows is the [pgx.Rows] of a query that could not be sent: it reports
// err from Err, Scan and Values, as pgxpool's do.
type errRows struct{ err error }

func (errRows) Close()                                       {}
func (e errRows) Err() error                                 { return e.err }
func (errRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (errRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (errRows) Next() bool                                   { return false }
func (e errRows) Scan(...any) error                          { return e.err }
func (e errRows) Values() ([]any, error)                     { return nil, e.err }
func (errRows) RawValues() [][]byte                          { return nil }
func (errRows) Conn() *pgx.Conn                              { return nil }
func (errRows) TypeMap() *pgtype.Map                         { return nil }

// errRow is the [pgx.Row] of a query that could not be sent.
type errRow struct{ err error }

func (e errRow) Scan(...any) error { return e.err }

// laterRows, laterRow and laterBatch classify the errors of a sandbox
// query whose connection is lost on the way (see [ErrUnavailable]).
type laterRows struct {
	pgx.Rows
	id string
}

func (r laterRows) Err() error { return later(r.id, r.Rows.Err()) }

type laterRow struct {
	pgx.Row
	id string
}

func (r laterRow) Scan(dest ...any) error { return later(r.id, r.Row.Scan(dest...)) }

type laterBatch struct {
	pgx.BatchResults
	id string
}

func (b laterBatch) Exec() (pgconn.CommandTag, error) {
	tag, err := b.BatchResults.Exec()
	return tag, later(b.id, err)
}

func (b laterBatch) Query() (pgx.Rows, error) {
	rows, err := b.BatchResults.Query()
	if err != nil {
		return rows, later(b.id, err)
	}
	return laterRows{rows, b.id}, nil
}

func (b laterBatch) QueryRow() pgx.Row { return laterRow{b.BatchResults.QueryRow(), b.id} }

func (b laterBatch) Close() error { return later(b.id, b.BatchResults.Close()) }

// routedRow and routedBatch are the router's: pgxpool acquires their
// connection only when they are read, so a test database that is gone
// (dropped elsewhere) shows only here, and the router must see it to
// drop the pool (see Router.after).
type routedRow struct {
	pgx.Row
	r *Router
	e *entry
}

func (x routedRow) Scan(dest ...any) error { return x.r.after(x.e, x.Row.Scan(dest...)) }

type routedBatch struct {
	pgx.BatchResults
	r *Router
	e *entry
}

func (b routedBatch) Exec() (pgconn.CommandTag, error) {
	tag, err := b.BatchResults.Exec()
	return tag, b.r.after(b.e, err)
}

func (b routedBatch) Query() (pgx.Rows, error) {
	rows, err := b.BatchResults.Query()
	if err != nil {
		return rows, b.r.after(b.e, err)
	}
	return laterRows{rows, b.e.id}, nil
}

func (b routedBatch) QueryRow() pgx.Row { return routedRow{b.BatchResults.QueryRow(), b.r, b.e} }

func (b routedBatch) Close() error { return b.r.after(b.e, b.BatchResults.Close()) }

// laterTx classifies the errors of a sandbox transaction's statements.
type laterTx struct {
	pgx.Tx
	id string
}

func (t laterTx) Begin(ctx context.Context) (pgx.Tx, error) {
	tx, err := t.Tx.Begin(ctx)
	if err != nil {
		return nil, later(t.id, err)
	}
	return laterTx{tx, t.id}, nil
}

func (t laterTx) Commit(ctx context.Context) error   { return later(t.id, t.Tx.Commit(ctx)) }
func (t laterTx) Rollback(ctx context.Context) error { return later(t.id, t.Tx.Rollback(ctx)) }

func (t laterTx) CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error) {
	n, err := t.Tx.CopyFrom(ctx, tableName, columnNames, rowSrc)
	return n, later(t.id, err)
}

func (t laterTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return laterBatch{t.Tx.SendBatch(ctx, b), t.id}
}

func (t laterTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	sd, err := t.Tx.Prepare(ctx, name, sql)
	return sd, later(t.id, err)
}

func (t laterTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	tag, err := t.Tx.Exec(ctx, sql, args...)
	return tag, later(t.id, err)
}

func (t laterTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rows, err := t.Tx.Query(ctx, sql, args...)
	if err != nil {
		return rows, later(t.id, err)
	}
	return laterRows{rows, t.id}, nil
}

func (t laterTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return laterRow{t.Tx.QueryRow(ctx, sql, args...), t.id}
}
