package pgtest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// FaultProxy is a TCP proxy on loopback in front of the PostgreSQL server
// that can cut a connection at a chosen statement: it reads the frontend
// protocol (startup message, then typed messages) and, when a simple
// query ('Q') contains the armed text, closes the client's side of the
// connection either before forwarding it (the server never runs it) or
// after (the server runs it; the client never hears back).
type FaultProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   string
	after bool
	fired bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewFaultProxy starts a proxy to target, closed when the test ends.
func NewFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &FaultProxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.handle(c) })
		}
	})
	t.Cleanup(p.Close)
	return p
}

// Close stops the proxy and closes its connections.
func (p *FaultProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// DSN is a connection string for database db through the proxy.
func (p *FaultProxy) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", p.ln.Addr(), db)
}

// Arm makes the proxy cut the next connection that sends a simple query
// containing text.
func (p *FaultProxy) Arm(text string, after bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut, p.after, p.fired = text, after, false
}

// HasFired reports whether the armed cut happened.
func (p *FaultProxy) HasFired() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fired
}

func (p *FaultProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *FaultProxy) handle(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer server.Close()
	p.track(client)
	p.track(server)
	defer func() {
		p.mu.Lock()
		delete(p.conns, client)
		delete(p.conns, server)
		p.mu.Unlock()
	}()
	var back sync.WaitGroup
	back.Go(func() {
		io.Copy(client, server)
		client.Close()
	})
	defer back.Wait()
	in := bufio.NewReader(client)
	// The startup message has no type byte.
	var n [4]byte
	if _, err := io.ReadFull(in, n[:]); err != nil {
		return
	}
	startup := make([]byte, binary.BigEndian.Uint32(n[:]))
	copy(startup, n[:])
	if _, err := io.ReadFull(in, startup[4:]); err != nil {
		return
	}
	if _, err := server.Write(startup); err != nil {
		return
	}
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(in, hdr[:]); err != nil {
			server.Close()
			return
		}
		msg := make([]byte, 1+binary.BigEndian.Uint32(hdr[1:]))
		copy(msg, hdr[:])
		if _, err := io.ReadFull(in, msg[5:]); err != nil {
			server.Close()
			return
		}
		if hdr[0] == 'Q' {
			p.mu.Lock()
			hit := p.cut != "" && bytes.Contains(msg[5:], []byte(p.cut))
			after := p.after
			if hit {
				p.cut, p.fired = "", true
			}
			p.mu.Unlock()
			if hit {
				if after {
					// The client goes first, before the statement is
					// written: were it closed after, a quick statement's
					// answer could be copied back to it in between, and
					// the client would hear that it succeeded. The
					// copier back to it stops at the server's first
					// answer (its write to the closed client fails),
					// which PostgreSQL sends once the statement is over;
					// wait for it, or at most a moment, then close the
					// server side (PostgreSQL still reads and runs what
					// was written before the close), or the session would
					// hold its locks and block the next attempt.
					client.Close()
					server.Write(msg)
					copied := make(chan struct{})
					go func() { back.Wait(); close(copied) }()
					select {
					case <-copied:
					case <-time.After(2 * time.Second):
					}
				}
				server.Close()
				client.Close()
				return
			}
		}
		if _, err := server.Write(msg); err != nil {
			return
		}
	}
}
