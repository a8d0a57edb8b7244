package main

import (
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hostnet "github.com/calico-prep/calico-prep/pkg/host"
)

// stats counts the agents' requests as their transports send them.
type stats struct {
	sent, received atomic.Int64
	failed         atomic.Int64 // requests that got no answer
	nodes          atomic.Int64 // answered requests about Nodes

	mu      sync.Mutex
	verbs   map[string]int64
	seconds map[int64]int64 // requests by unix second
}

func newStats() *stats {
	return &stats{verbs: map[string]int64{}, seconds: map[int64]int64{}}
}

// wrap is a rest.Config WrapTransport.
func (s *stats) wrap(rt http.RoundTripper) http.RoundTripper { return counting{rt, s} }

type counting struct {
	next http.RoundTripper
	s    *stats
}

// RoundTrip counts a request once the API server has answered it: a request that found no
// server (connection refused while it restarts) cost it nothing.
func (c counting) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.ContentLength > 0 {
		c.s.sent.Add(req.ContentLength)
	}
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		c.s.failed.Add(1)
		return resp, err
	}
	v := verb(req)
	if resp.StatusCode >= 400 {
		v += " " + strconv.Itoa(resp.StatusCode)
	}
	c.s.count(v, time.Now())
	if strings.Contains(req.URL.Path, "/nodes") {
		c.s.nodes.Add(1)
	}
	if resp.Body != nil {
		resp.Body = countingBody{resp.Body, &c.s.received}
	}
	return resp, err
}

// verb names a request as the API server's audit log does.
func verb(req *http.Request) string {
	switch req.Method {
	case http.MethodGet:
		if req.URL.Query().Get("watch") == "true" {
			return "watch"
		}
		return "get"
	case http.MethodPost:
		return "create"
	case http.MethodPatch:
		return "patch"
	case http.MethodPut:
		return "update"
	case http.MethodDelete:
		return "delete"
	}
	return req.Method
}

func (s *stats) count(verb string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.verbs[verb]++
	s.seconds[at.Unix()]++
}

func (s *stats) byVerb() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int64{}
	for k, v := range s.verbs {
		out[k] = v
	}
	return out
}

// total is the number of requests so far.
func (s *stats) total() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, v := range s.verbs {
		n += v
	}
	return n
}

// peak is the busiest second in [from, to].
func (s *stats) peak(from, to time.Time) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var most int64
	for sec, n := range s.seconds {
		if sec >= from.Unix() && sec <= to.Unix() {
			most = max(most, n)
		}
	}
	return most
}

// between is the number of requests in [from, to], whole seconds.
func (s *stats) between(from, to time.Time) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for sec, c := range s.seconds {
		if sec >= from.Unix() && sec <= to.Unix() {
			n += c
		}
	}
	return n
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// hostInterface is the fake host's uplink carrying the Node's InternalIP.
func hostInterface(ip netip.Addr) hostnet.Interface {
	return hostnet.Interface{Index: 2, Name: "ens33", Type: "device", Up: true, MTU: 1500, Addrs: []netip.Prefix{netip.PrefixFrom(ip, 16)}}
}
