package calicoconfig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
)

// watchTimeout asks the API server to keep a watch open for hours (by default it closes them
// after 30–60 minutes): each reconnect is a request from every node.
const watchTimeout = 6 * time.Hour

// watchRetry spaces the attempts of a watch that fails: from 1 s, doubling to 60 s, each
// stretched by up to half at random so that the nodes of a cluster do not come back in step.
// 60 s keeps the eight or so watches of a thousand nodes under about 130 requests/s while the
// API server is away or refuses them.
func watchRetry() wait.Backoff {
	return wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.5, Steps: math.MaxInt32, Cap: time.Minute}
}

var (
	errGone        = errors.New("resource version too old")
	errNoWatchList = errors.New("the API server does not stream a watch's initial state")
)

// initialEventsEnd annotates the bookmark that ends a watch's initial state.
const initialEventsEnd = "k8s.io/initial-events-end"

// tableAccept asks for a resource as a server-side Table without the objects: for
// CustomResourceDefinitions a row of a few hundred bytes (name, group, served versions,
// established) instead of the whole schema, which for Calico's and the operator's CRDs runs to
// megabytes per node.
const tableAccept = "application/json;as=Table;v=v1;g=meta.k8s.io"

// watcher follows one collection, or one object in it (a field selector on its name), kept as
// raw JSON objects keyed by namespace/name. It sends the whole set once it has read it and
// after every event. One request does both where the API server streams a watch's initial
// state (sendInitialEvents, "watch-list": on by default since Kubernetes 1.32, which marks
// the end of the initial state with a bookmark); elsewhere a list and then a watch. A watch
// that ends is resumed from the last resource version; one that is too old starts again.
type watcher struct {
	rc   rest.Interface
	log  *slog.Logger
	path string // the collection, e.g. /apis/crd.projectcalico.org/v1/ippools
	name string // one object's name, or "" for every object
	// table reads CustomResourceDefinitions as Table rows (see tableAccept).
	table bool
	send  func(objs map[string]json.RawMessage)
	// noWatchList is set once the API server refused to stream a watch's initial state; the
	// client's watches share it.
	noWatchList *atomic.Bool
}

func (w *watcher) run(ctx context.Context) {
	b := watchRetry()
	rv := ""
	var objs map[string]json.RawMessage
	var cols columns
	for ctx.Err() == nil {
		var err error
		initial := false
		switch {
		case rv == "" && !w.noWatchList.Load():
			objs, initial = map[string]json.RawMessage{}, true
		case rv == "":
			objs, rv, err = w.list(ctx, &cols)
			if err == nil {
				w.send(clone(objs))
			}
		}
		if err == nil {
			var progressed bool
			progressed, err = w.watch(ctx, &rv, objs, &cols, initial)
			if progressed {
				b = watchRetry()
			}
		}
		if errors.Is(err, errNoWatchList) {
			w.log.Info("the API server does not stream a watch's initial state; listing, then watching", "err", err)
			w.noWatchList.Store(true)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errGone) {
			rv = "" // list again, at once
			continue
		}
		d := b.Step()
		w.log.Warn("watch of Calico's configuration failed; retrying", "path", w.path, "name", w.name, "err", err, "retry_in", d)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

func (w *watcher) request() *rest.Request {
	req := w.rc.Get().AbsPath(w.path)
	if w.name != "" {
		req = req.Param("fieldSelector", "metadata.name="+w.name)
	}
	if w.table {
		req = req.SetHeader("Accept", tableAccept).Param("includeObject", "None")
	}
	return req
}

// list reads the collection; resourceVersion 0 lets the API server answer from its cache.
func (w *watcher) list(ctx context.Context, cols *columns) (map[string]json.RawMessage, string, error) {
	body, err := w.request().Param("resourceVersion", "0").DoRaw(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("list %s: %w", w.path, err)
	}
	objs := map[string]json.RawMessage{}
	if w.table {
		var t table
		if err := json.Unmarshal(body, &t); err != nil {
			return nil, "", fmt.Errorf("decode %s: %w", w.path, err)
		}
		cols.learn(t.ColumnDefinitions)
		for _, r := range t.Rows {
			name, obj, err := cols.object(r)
			if err != nil {
				return nil, "", fmt.Errorf("decode %s: %w", w.path, err)
			}
			objs[name] = obj
		}
		return objs, t.Metadata.ResourceVersion, nil
	}
	var l struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(body, &l); err != nil {
		return nil, "", fmt.Errorf("decode %s: %w", w.path, err)
	}
	for _, raw := range l.Items {
		m, err := metaOf(raw)
		if err != nil {
			return nil, "", fmt.Errorf("decode %s: %w", w.path, err)
		}
		objs[m.key()] = raw
	}
	return objs, l.Metadata.ResourceVersion, nil
}

// watch follows the collection from *rv until the watch ends, keeping objs and *rv current.
// With initial, it asks for the current state first and sends objs only once that is complete.
func (w *watcher) watch(ctx context.Context, rv *string, objs map[string]json.RawMessage, cols *columns, initial bool) (progressed bool, err error) {
	req := w.request().
		Param("watch", "true").
		Param("allowWatchBookmarks", "true").
		Param("timeoutSeconds", strconv.Itoa(int(watchTimeout.Seconds())))
	if initial {
		req = req.Param("sendInitialEvents", "true").Param("resourceVersionMatch", "NotOlderThan").Param("resourceVersion", "")
	} else {
		req = req.Param("resourceVersion", *rv)
	}
	stream, err := req.Stream(ctx)
	if initial && (apierrors.IsBadRequest(err) || apierrors.IsInvalid(err) || apierrors.IsForbidden(err) && strings.Contains(err.Error(), "sendInitialEvents")) {
		return false, errNoWatchList
	}
	if apierrors.IsGone(err) || apierrors.IsResourceExpired(err) {
		return false, errGone
	}
	if err != nil {
		return false, fmt.Errorf("watch %s: %w", w.path, err)
	}
	defer func() { _ = stream.Close() }()
	defer func() {
		if initial {
			*rv = "" // ended before the initial state was complete: start again
		}
	}()
	dec := json.NewDecoder(stream)
	for {
		var ev struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			return progressed, fmt.Errorf("read watch %s: %w", w.path, err)
		}
		if ev.Type == "ERROR" {
			var st metav1.Status
			_ = json.Unmarshal(ev.Object, &st)
			if st.Code == http.StatusGone {
				return progressed, errGone
			}
			return progressed, fmt.Errorf("watch %s: %s", w.path, st.Message)
		}
		changed, newRV, end, err := w.apply(ev.Type, ev.Object, objs, cols)
		if err != nil {
			return progressed, err
		}
		if newRV != "" {
			*rv = newRV
		}
		progressed = true
		if initial && end {
			initial = false
			w.send(clone(objs))
		} else if changed && !initial {
			w.send(clone(objs))
		}
	}
}

// apply records one watch event in objs; end reports the bookmark that ends the initial state.
func (w *watcher) apply(typ string, raw json.RawMessage, objs map[string]json.RawMessage, cols *columns) (changed bool, rv string, end bool, err error) {
	type entry struct {
		name string
		obj  json.RawMessage
	}
	var entries []entry
	if w.table {
		var t table
		if err := json.Unmarshal(raw, &t); err != nil {
			return false, "", false, fmt.Errorf("decode watch event of %s: %w", w.path, err)
		}
		rv = t.Metadata.ResourceVersion
		if typ == "BOOKMARK" {
			// The bookmark's row carries the object's metadata, annotation and all.
			for _, r := range t.Rows {
				end = end || r.Object.Metadata.Annotations[initialEventsEnd] == "true"
			}
			return false, rv, end, nil
		}
		cols.learn(t.ColumnDefinitions)
		for _, r := range t.Rows {
			name, obj, err := cols.object(r)
			if err != nil {
				return false, "", false, fmt.Errorf("decode watch event of %s: %w", w.path, err)
			}
			entries = append(entries, entry{name, obj})
		}
	} else {
		m, err := metaOf(raw)
		if err != nil {
			return false, "", false, fmt.Errorf("decode watch event of %s: %w", w.path, err)
		}
		rv = m.ResourceVersion
		if typ == "BOOKMARK" {
			return false, rv, m.Annotations[initialEventsEnd] == "true", nil
		}
		entries = append(entries, entry{m.key(), raw})
	}
	for _, e := range entries {
		switch typ {
		case "ADDED", "MODIFIED":
			objs[e.name] = e.obj
			changed = true
		case "DELETED":
			delete(objs, e.name)
			changed = true
		}
	}
	return changed, rv, false, nil
}

func clone(m map[string]json.RawMessage) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// meta is the part of an object's metadata the watcher reads.
type meta struct {
	Name            string            `json:"name"`
	Namespace       string            `json:"namespace"`
	ResourceVersion string            `json:"resourceVersion"`
	Annotations     map[string]string `json:"annotations"`
}

func (m meta) key() string {
	if m.Namespace == "" {
		return m.Name
	}
	return m.Namespace + "/" + m.Name
}

func metaOf(raw json.RawMessage) (meta, error) {
	var o struct {
		Metadata meta `json:"metadata"`
	}
	err := json.Unmarshal(raw, &o)
	return o.Metadata, err
}

// table is a meta.k8s.io/v1 Table as the API server sends it for a list or a watch event.
type table struct {
	Metadata struct {
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	ColumnDefinitions []struct {
		Name string `json:"name"`
	} `json:"columnDefinitions"`
	Rows []tableRow `json:"rows"`
}

type tableRow struct {
	Cells []json.RawMessage `json:"cells"`
	// Object is set in a bookmark's row: the object's metadata.
	Object struct {
		Metadata meta `json:"metadata"`
	} `json:"object"`
}

// columns are the positions of the CustomResourceDefinition table's columns this package
// reads; the first Table of a list or watch defines them.
type columns struct {
	name, versions, established int
	known                       bool
}

func (c *columns) learn(defs []struct {
	Name string `json:"name"`
}) {
	if len(defs) == 0 {
		return
	}
	c.name, c.versions, c.established = -1, -1, -1
	for i, d := range defs {
		switch d.Name {
		case "Name":
			c.name = i
		case "Versions":
			c.versions = i
		case "Established":
			c.established = i
		}
	}
	c.known = c.name >= 0 && c.versions >= 0 && c.established >= 0
}

// object turns a CustomResourceDefinition's row into its name and a crdRow object.
func (c *columns) object(row tableRow) (string, json.RawMessage, error) {
	if !c.known {
		return "", nil, errors.New("the API server's CustomResourceDefinition table lacks the Name, Versions or Established column")
	}
	cell := func(i int, v any) error {
		if i >= len(row.Cells) {
			return fmt.Errorf("table row has %d cells, want more than %d", len(row.Cells), i)
		}
		return json.Unmarshal(row.Cells[i], v)
	}
	var r crdRow
	var versions string
	if err := errors.Join(cell(c.name, &r.Name), cell(c.versions, &versions), cell(c.established, &r.Established)); err != nil {
		return "", nil, err
	}
	// "v1(storage),v1beta1": the served versions, the storage version marked.
	for v := range strings.SplitSeq(versions, ",") {
		if v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "(storage)")); v != "" {
			r.Versions = append(r.Versions, v)
		}
	}
	b, err := json.Marshal(r)
	return r.Name, b, err
}

// crdRow is what this package knows of a CustomResourceDefinition.
type crdRow struct {
	Name        string   `json:"name"`
	Versions    []string `json:"versions"`
	Established bool     `json:"established"`
}
