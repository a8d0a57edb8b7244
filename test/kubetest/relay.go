package kubetest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RelayInto lets processes inside the network namespace at netnsPath reach the apiserver: it
// listens on 127.0.0.1 inside that namespace and forwards every connection to the apiserver on
// the host's loopback. It returns the server URL to use inside the namespace (the serving
// certificate is valid for 127.0.0.1). The namespace's loopback is brought up if it is down.
// The relay closes at t.Cleanup.
func (c *Cluster) RelayInto(t testing.TB, netnsPath string) string {
	t.Helper()
	return c.relay(t, netnsPath, "127.0.0.1:0")
}

// RelayOn is RelayInto listening on addr, at the apiserver's own port, in the network namespace
// at netnsPath, which must hold addr already: there it stands in for the apiserver at its
// Options.AdvertiseAddress, the endpoint of Service "kubernetes".
func (c *Cluster) RelayOn(t testing.TB, netnsPath string, addr netip.Addr) string {
	t.Helper()
	_, port, err := net.SplitHostPort(c.addr())
	if err != nil {
		t.Fatal(err)
	}
	return c.relay(t, netnsPath, net.JoinHostPort(addr.String(), port))
}

func (c *Cluster) relay(t testing.TB, netnsPath, listen string) string {
	t.Helper()
	ln, err := listenInNetns(netnsPath, listen)
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, target: c.addr(), conns: map[net.Conn]struct{}{}}
	r.wg.Go(r.serve)
	t.Cleanup(r.close)
	return "https://" + ln.Addr().String()
}

// listenInNetns creates a listening socket inside another network namespace. A socket belongs
// to the namespace it was created in, so only its creation needs a thread switched; accept and
// all I/O then work from any goroutine. The switch happens on a goroutine of its own: should
// switching back fail, that goroutine exits with its thread still locked and Go discards the
// thread instead of reusing it.
func listenInNetns(netnsPath, addr string) (net.Listener, error) {
	type result struct {
		ln  net.Listener
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		ln, err := listenLocked(netnsPath, addr)
		if err == nil || !errors.Is(err, errStuck) {
			runtime.UnlockOSThread()
		}
		done <- result{ln, err}
	}()
	r := <-done
	return r.ln, r.err
}

// errStuck means the thread is still in the other namespace.
var errStuck = errors.New("thread left in another network namespace")

func listenLocked(netnsPath, addr string) (ln net.Listener, err error) {
	target, err := os.Open(netnsPath)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %q: %w", netnsPath, err)
	}
	defer func() { _ = target.Close() }()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("open own network namespace: %w", err)
	}
	defer func() { _ = orig.Close() }()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("enter network namespace %q: %w", netnsPath, err)
	}
	defer func() {
		if backErr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); backErr != nil {
			if ln != nil {
				_ = ln.Close()
				ln = nil
			}
			err = fmt.Errorf("return from network namespace %q: %w: %w", netnsPath, errStuck, backErr)
		}
	}()

	// A fresh namespace has lo down, and 127.0.0.1 cannot be bound until it is up.
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("find lo in %q: %w", netnsPath, err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(lo); err != nil {
			return nil, fmt.Errorf("bring up lo in %q: %w", netnsPath, err)
		}
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %q: %w", addr, netnsPath, err)
	}
	return ln, nil
}

// relay copies bytes between connections accepted in a test namespace and the apiserver.
type relay struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func (r *relay) serve() {
	for {
		in, err := r.ln.Accept()
		if err != nil {
			return // closed
		}
		r.wg.Go(func() { r.forward(in) })
	}
}

func (r *relay) forward(in net.Conn) {
	defer func() { _ = in.Close() }()
	// While the apiserver is stopped the dial fails and the client sees its connection closed,
	// much like a refused connection.
	out, err := net.Dial("tcp", r.target)
	if err != nil {
		return
	}
	defer func() { _ = out.Close() }()
	if !r.track(in, out) {
		return
	}
	defer r.untrack(in, out)
	var copies sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Pass the half-close on so the other direction can finish.
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}
	copies.Go(func() { pipe(out, in) })
	pipe(in, out)
	copies.Wait()
}

func (r *relay) track(conns ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	for _, c := range conns {
		r.conns[c] = struct{}{}
	}
	return true
}

func (r *relay) untrack(conns ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range conns {
		delete(r.conns, c)
	}
}

func (r *relay) close() {
	_ = r.ln.Close()
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
