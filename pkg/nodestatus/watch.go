package nodestatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// watchTimeout asks the API server to keep one watch open for hours: by default it closes
// watches after 30–60 minutes, and each reconnect is a request from every node.
const watchTimeout = 6 * time.Hour

// watchRetry spaces the attempts to watch again while the API server is away: from 1 s,
// doubling to 8 s, each stretched by up to half at random so that the nodes of a cluster do
// not come back in step. A doubling without a low cap would leave the Node unwatched for as
// long again as the outage lasted; 8–12 s keeps a thousand nodes near 100 attempts/s meanwhile.
func watchRetry() wait.Backoff {
	return wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.5, Steps: math.MaxInt32, Cap: 8 * time.Second}
}

var errGone = errors.New("resource version too old")

// anyVersion starts a watch at whatever state the API server's watch cache holds.
const anyVersion = "0"

// Watch follows this node's object with a single-object watch (a field selector on its name,
// never a list of all nodes). The first value is the Node's state: a watch from resource version
// "0" starts with a synthetic ADDED event from the API server's watch cache, so no separate GET
// is needed. Without a resource version the API server would first read the current revision
// from etcd and wait up to 3 s for its cache to reach it: one more etcd read per node, and under
// load the watch fails ("Too large resource version") and is made again. A cached state that is
// a little behind is followed by the events that bring it up to date. Only the latest state is
// kept when the reader is slow. The channel closes when ctx is done; connection errors
// are retried with capped exponential backoff.
func (c *Client) Watch(ctx context.Context) <-chan Node {
	ch := make(chan Node, 1)
	go func() {
		defer close(ch)
		rv := anyVersion
		b := watchRetry()
		for {
			progressed, err := c.watchOnce(ctx, &rv, ch)
			if ctx.Err() != nil {
				return
			}
			// The watch served (a quiet one still gets bookmarks): whatever ended it, the
			// backoff that spaces attempts against a server that is away starts again.
			if progressed {
				b = watchRetry()
			}
			if errors.Is(err, errGone) {
				// rv is older than the server keeps (it restarted or compacted): start again
				// from the state it holds, at once; waiting would only hide changes.
				c.log.Info("node watch expired; watching again from the current state", "node", c.node)
				rv = anyVersion
				continue
			}
			d := b.Step()
			c.log.Warn("node watch ended; watching again", "node", c.node, "err", err, "retry_in", d)
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		}
	}()
	return ch
}

// watchOnce runs one watch request until it ends; progressed reports whether it delivered a
// state of the Node or a bookmark.
func (c *Client) watchOnce(ctx context.Context, rv *string, ch chan Node) (progressed bool, err error) {
	req := c.rc.Get().Resource("nodes").
		Param("fieldSelector", "metadata.name="+c.node).
		Param("watch", "true").
		Param("allowWatchBookmarks", "true").
		Param("timeoutSeconds", strconv.Itoa(int(watchTimeout.Seconds()))).
		Param("resourceVersion", *rv)
	stream, err := req.Stream(ctx)
	if apierrors.IsGone(err) || apierrors.IsResourceExpired(err) {
		return false, errGone
	}
	if err != nil {
		return false, fmt.Errorf("watch node %q: %w", c.node, err)
	}
	defer func() { _ = stream.Close() }()
	dec := json.NewDecoder(stream)
	for {
		var ev struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			return progressed, fmt.Errorf("read node watch %q: %w", c.node, err)
		}
		switch ev.Type {
		case "ADDED", "MODIFIED":
			var n nodeObject
			if err := json.Unmarshal(ev.Object, &n); err != nil {
				return progressed, fmt.Errorf("decode node %q: %w", c.node, err)
			}
			*rv = n.Metadata.ResourceVersion
			progressed = true
			if nn, fresh := c.view.set(&n); fresh {
				latest(ch, nn)
			}
		case "DELETED":
			// Nothing may be applied to a deleted Node (an apply would create it again); the
			// agent waits until the Node is registered again.
			c.log.Warn("node deleted; not reporting until it is registered again", "node", c.node)
			c.view.forget()
			progressed = true
		case "BOOKMARK":
			var m nodeObject // a bookmark is a Node with only its resource version
			if json.Unmarshal(ev.Object, &m) == nil {
				*rv = m.Metadata.ResourceVersion
				progressed = true
			}
		case "ERROR":
			var st metav1.Status
			_ = json.Unmarshal(ev.Object, &st)
			if st.Code == http.StatusGone {
				return progressed, errGone
			}
			return progressed, fmt.Errorf("node watch %q: %s", c.node, st.Message)
		}
	}
}

// latest replaces an unread value so the reader always gets the newest state.
func latest(ch chan Node, n Node) {
	for {
		select {
		case ch <- n:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}
