// Package etcdtest runs a real etcd server in-process on loopback, and a
// TCP proxy in front of it that can freeze, for the tests of etcdroutes
// and sandboxctl. It is a module of its own so that etcd's server stays
// out of what users of etcdroutes download.
package etcdtest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// Server is an etcd member on loopback, with its data in a directory that
// survives [Server.Restart].
type Server struct {
	dir          string
	client, peer url.URL
	e            *embed.Etcd
}

// Start starts a single-member etcd cluster with its data in dir, on two
// free loopback ports that stay its own across restarts.
func Start(dir string) (*Server, error) {
	var err error
	// Another process may take a free port before etcd binds it: then
	// try other ports.
	for range 5 {
		var cp, pp string
		if cp, err = freePort(); err != nil {
			return nil, err
		}
		if pp, err = freePort(); err != nil {
			return nil, err
		}
		s := &Server{
			dir:    dir,
			client: url.URL{Scheme: "http", Host: cp},
			peer:   url.URL{Scheme: "http", Host: pp},
		}
		if err = s.start(1); err == nil {
			return s, nil
		}
	}
	return nil, err
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (s *Server) start(tries int) error {
	cfg := embed.NewConfig()
	cfg.Dir = s.dir
	cfg.Name = "default"
	cfg.ListenClientUrls = []url.URL{s.client}
	cfg.AdvertiseClientUrls = []url.URL{s.client}
	cfg.ListenPeerUrls = []url.URL{s.peer}
	cfg.AdvertisePeerUrls = []url.URL{s.peer}
	cfg.InitialCluster = "default=" + s.peer.String()
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"/dev/null"}
	// The tests compact by hand.
	cfg.AutoCompactionRetention = "0"
	// A thousand sandboxes changed in one transaction.
	cfg.MaxTxnOps = 2048
	var (
		e   *embed.Etcd
		err error
	)
	for range tries {
		if e, err = embed.StartEtcd(cfg); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("etcdtest: starting etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("etcdtest: etcd failed: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return errors.New("etcdtest: etcd not ready within a minute")
	}
	s.e = e
	return nil
}

// Endpoint is the server's client address, host:port.
func (s *Server) Endpoint() string { return s.client.Host }

// Stop stops the server; its data stays.
func (s *Server) Stop() {
	if s.e != nil {
		s.e.Close()
		s.e = nil
	}
}

// Restart starts the stopped server again, on the same ports and data.
func (s *Server) Restart() error {
	// The ports of the previous run may still be held for a moment.
	return s.start(50)
}

// Wipe stops the server, deletes its data and starts it again empty, on
// the same ports: a store restored from nothing (or from an old backup),
// whose revisions start over.
func (s *Server) Wipe() error {
	s.Stop()
	if err := os.RemoveAll(s.dir); err != nil {
		return err
	}
	return s.Restart()
}

// Client returns a client of the given endpoints.
func Client(endpoints ...string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      nopLogger(),
	})
}

// Proxy forwards TCP connections to a target, and can freeze: it keeps
// its listener and the connections open but forwards nothing, as a server
// that hangs.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	thawed chan struct{} // closed while the proxy forwards
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewProxy listens on a free loopback port and forwards to target.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, thawed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(p.thawed)
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's address, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Freeze stops forwarding, keeping every connection and the listener.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.thawed:
		p.thawed = make(chan struct{})
	default:
	}
}

// Thaw forwards again what was held back, and what follows.
func (p *Proxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.thawed:
	default:
		close(p.thawed)
	}
}

// Close closes the listener and every connection, and waits for the
// proxy's goroutines.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.Thaw()
	p.wg.Wait()
}

// track records c as open, or closes it when the proxy is closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) gate() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.thawed
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			<-p.gate()
			up, err := net.Dial("tcp", p.target)
			if err != nil || !p.track(up) {
				c.Close()
				return
			}
			p.wg.Add(2)
			go p.pipe(up, c)
			go p.pipe(c, up)
		}()
	}
}

// pipe copies from src to dst, holding each chunk while the proxy is
// frozen, and closes both at the end.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			<-p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Reset closes every connection the proxy holds, keeping its listener:
// what a frozen link held back is lost, and clients reconnect.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}
