package integration

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// faultProxy is a TCP proxy in a path (a store's advertised address points
// at it): on command it delays traffic, resets every open connection, or
// resets new ones as they come.
type faultProxy struct {
	ln     net.Listener
	target string
	delay  atomic.Int64 // ns added before each burst, both ways
	resets atomic.Int64 // connections reset on command
	mu     sync.Mutex
	conns  map[*net.TCPConn]bool
	wg     sync.WaitGroup
}

func newFaultProxy(n *faultNet, target string) *faultProxy {
	n.t.Helper()
	ln, err := net.Listen("tcp", hostIP+":0")
	if err != nil {
		n.t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target, conns: map[*net.TCPConn]bool{}}
	p.wg.Add(1)
	go p.serve()
	n.closers = append(n.closers, p.close)
	return p
}

func (p *faultProxy) addr() string { return p.ln.Addr().String() }

func (p *faultProxy) setDelay(d time.Duration) { p.delay.Store(int64(d)) }

// resetAll ends every open connection with a TCP RST.
func (p *faultProxy) resetAll() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		rst(c)
		n++
	}
	p.resets.Add(int64(n))
	return n
}

func rst(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

func (p *faultProxy) track(c *net.TCPConn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
}

func (p *faultProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		in := c.(*net.TCPConn)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			oc, err := net.DialTimeout("tcp", p.target, 3*time.Second)
			if err != nil {
				rst(in)
				return
			}
			out := oc.(*net.TCPConn)
			p.track(in, true)
			p.track(out, true)
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); p.pipe(out, in); _ = out.CloseWrite() }()
			go func() { defer wg.Done(); p.pipe(in, out); _ = in.CloseWrite() }()
			wg.Wait()
			p.track(in, false)
			p.track(out, false)
			in.Close()
			out.Close()
		}()
	}
}

// pipe copies src to dst, sleeping the current delay before each burst
// (bytes after a quiet spell of 20 ms).
func (p *faultProxy) pipe(dst, src *net.TCPConn) {
	buf := make([]byte, 128<<10)
	var last time.Time
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if d := time.Duration(p.delay.Load()); d > 0 && time.Since(last) > 20*time.Millisecond {
				time.Sleep(d) // the fault being injected: latency
			}
			last = time.Now()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				rst(src)
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *faultProxy) close() {
	p.ln.Close()
	p.resetAll()
	p.wg.Wait()
}
