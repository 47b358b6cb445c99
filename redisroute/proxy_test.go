package redisroute_test

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// proxy is a TCP proxy to the test server that the test controls: it
// counts the commands clients send (RESP arrays), and from command number
// cutFrom on (0: never) it closes the client's connection instead of
// forwarding, as a server that went away would. It stands in for a Redis
// restart without touching the shared server.
type proxy struct {
	ln      net.Listener
	n       atomic.Int64 // commands seen
	cutFrom atomic.Int64
	// before, when set, is called with each command before it is
	// forwarded, and may block it.
	before atomic.Pointer[func(cmd []byte)]

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newProxy(t testing.TB) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", addr)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); io.Copy(c, s); c.Close() }()
		go func() { defer p.wg.Done(); p.forward(c, s); s.Close() }()
	}
}

// forward copies whole commands from c to s, counting them, and cuts both
// connections at command cutFrom and after.
func (p *proxy) forward(c, s net.Conn) {
	defer c.Close()
	var buf []byte
	chunk := make([]byte, 64<<10)
	for {
		n, err := c.Read(chunk)
		if err != nil {
			return
		}
		buf = append(buf, chunk[:n]...)
		for {
			size := respCommand(buf)
			if size == 0 {
				break
			}
			k := p.n.Add(1)
			if cut := p.cutFrom.Load(); cut > 0 && k >= cut {
				return
			}
			if f := p.before.Load(); f != nil {
				(*f)(buf[:size])
			}
			if _, err := s.Write(buf[:size]); err != nil {
				return
			}
			buf = buf[size:]
		}
	}
}

// respCommand returns the length of the first complete command in b (an
// array of bulk strings), or 0.
func respCommand(b []byte) int {
	line := func(i int) (int, int) { // value of the header at i, index after it
		j := bytes.Index(b[i:], []byte("\r\n"))
		if j < 0 {
			return -1, 0
		}
		v, _ := strconv.Atoi(string(b[i+1 : i+j]))
		return v, i + j + 2
	}
	if len(b) == 0 || b[0] != '*' {
		return 0
	}
	n, i := line(0)
	if n < 0 {
		return 0
	}
	for ; n > 0; n-- {
		if i >= len(b) {
			return 0
		}
		l, next := line(i)
		if l < 0 || next+l+2 > len(b) {
			return 0
		}
		i = next + l + 2
	}
	return i
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// cutAll closes every connection the proxy holds, as a server restart
// would; new connections are accepted as before.
func (p *proxy) cutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
