package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Handler serves /healthz (the process is alive), /readyz (the last pass was judged and the
// node is prepared) and metrics at /metrics.
func (a *Agent) Handler(metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		rep, ok := a.LastReport()
		switch {
		case !ok:
			http.Error(w, "no pass judged yet", http.StatusServiceUnavailable)
		case !rep.Ready:
			f, _ := rep.FirstFailure()
			http.Error(w, fmt.Sprintf("not prepared: %s: %s", f.Name, f.Message), http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ok")
		}
	})
	mux.Handle("/metrics", metrics)
	return mux
}

// Serve listens on addr until ctx ends, serving Handler(metrics). The listener is opened before Serve returns to its
// caller's goroutine, so a bad or busy address is an error at startup.
func (a *Agent) Serve(ctx context.Context, addr string, metrics http.Handler) (func() error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %q: %w", addr, err)
	}
	srv := &http.Server{Handler: a.Handler(metrics), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	return func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}, nil
}
