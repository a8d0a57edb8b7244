package nodestatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
)

// Status is what the Node should say about this node's preparation.
type Status struct {
	Ready bool
	// Reason is CamelCase: the first failing check's reason, or "Prepared".
	Reason  string
	Message string
	// Report is the compact JSON report for the annotation.
	Report string
}

func (s Status) label() string { return strconv.FormatBool(s.Ready) }

func (s Status) conditionStatus() string {
	if s.Ready {
		return "True"
	}
	return "False"
}

// view is the client's latest knowledge of its Node, from the watch and from the responses to
// its own writes, so that a pass that follows a write closely does not write again.
type view struct {
	mu   sync.Mutex
	node *Node
	uid  types.UID
}

// set records n unless the view holds a newer version of the same Node, and reports whether
// it recorded it. A watch event can arrive after the response to a later write; taken as
// news, it would make the next pass write again what the Node already says.
func (v *view) set(n *nodeObject) (Node, bool) {
	nn := nodeFrom(n)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.node != nil && v.uid == n.Metadata.UID {
		// Resource versions of one object are comparable (KEP-5504); when one is not a
		// plain number, the newest arrival wins as before.
		if cmp, err := resourceversion.CompareResourceVersion(n.Metadata.ResourceVersion, v.node.ResourceVersion); err == nil && cmp < 0 {
			return *v.node, false
		}
	}
	v.node, v.uid = &nn, n.Metadata.UID
	return nn, true
}

// forget drops the Node: it was deleted, so nothing may be written until it is seen again.
func (v *view) forget() {
	v.mu.Lock()
	v.node, v.uid = nil, ""
	v.mu.Unlock()
}

func (v *view) get() (*Node, types.UID) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.node, v.uid
}

// Current returns the Node as last seen (from the watch or a write), if seen.
func (c *Client) Current() (Node, bool) {
	n, _ := c.view.get()
	if n == nil {
		return Node{}, false
	}
	return *n, true
}

// Refresh reads the Node as it is now and records it unless the view holds a newer version.
// What Watch delivers first is the API server's cached state, which may be a little behind: the
// daemon's later events catch up with it, a one-shot run has none. The read is a watch without
// a resource version (the API server first reads the current revision from etcd), closed after
// its first event: the agent's role may watch Nodes, not get them.
func (c *Client) Refresh(ctx context.Context) error {
	stream, err := c.rc.Get().Resource("nodes").
		Param("fieldSelector", "metadata.name="+c.node).
		Param("watch", "true").
		Stream(ctx)
	if err != nil {
		return fmt.Errorf("watch node %q: %w", c.node, err)
	}
	defer func() { _ = stream.Close() }()
	var ev struct {
		Type   string          `json:"type"`
		Object json.RawMessage `json:"object"`
	}
	if err := json.NewDecoder(stream).Decode(&ev); err != nil {
		return fmt.Errorf("read node watch %q: %w", c.node, err)
	}
	if ev.Type != "ADDED" {
		var st metav1.Status
		_ = json.Unmarshal(ev.Object, &st)
		return fmt.Errorf("node watch %q: %s event first: %s", c.node, ev.Type, st.Message)
	}
	var n nodeObject
	if err := json.Unmarshal(ev.Object, &n); err != nil {
		return fmt.Errorf("decode node %q: %w", c.node, err)
	}
	c.view.set(&n)
	return nil
}

// Seen reports whether the node has been seen; Publish needs it, because a server-side apply to
// a missing Node would create one.
func (c *Client) Seen() bool {
	n, _ := c.view.get()
	return n != nil
}

// Publish writes the label, the report annotation and the condition where they differ from the
// Node as last seen, and returns how many writes it made (0 on a steady node). Both writes are
// server-side applies with field manager calico-prep: the label and annotation on the Node, the
// condition through the status subresource, so calico-prep owns exactly its own fields and
// coexists with kubelet and node-problem-detector. When both are due they go out together: an
// apply carries no resource version, so neither can conflict with the other, and the Node
// says the same everywhere one round trip sooner.
func (c *Client) Publish(ctx context.Context, want Status) (writes int, err error) {
	seen, uid := c.view.get()
	if seen == nil {
		return 0, fmt.Errorf("publish to node %q: not seen yet", c.node)
	}
	var bodies []map[string]any // the Node's, then its status's
	var subresources [][]string
	labels := map[string]string{LabelReady: want.label()}
	// Once prepared, always prepared: the label stays in every apply (dropping it from an apply
	// would remove it, as calico-prep owns it).
	if want.Ready || seen.Labels[LabelPrepared] == "true" {
		labels[LabelPrepared] = "true"
	}
	if seen.Labels[LabelReady] != labels[LabelReady] || seen.Labels[LabelPrepared] != labels[LabelPrepared] ||
		seen.Annotations[AnnotationReport] != want.Report {
		bodies = append(bodies, map[string]any{
			"apiVersion": "v1", "kind": "Node",
			"metadata": map[string]any{
				"name":        c.node,
				"uid":         uid,
				"labels":      labels,
				"annotations": map[string]string{AnnotationReport: want.Report},
			},
		})
		subresources = append(subresources, nil)
	}
	cond := seen.Condition
	if cond == nil || cond.Status != want.conditionStatus() || cond.Reason != want.Reason || cond.Message != want.Message {
		now := metav1.NewTime(c.now())
		transition := now
		if cond != nil && cond.Status == want.conditionStatus() {
			transition = cond.LastTransitionTime
		}
		bodies = append(bodies, map[string]any{
			"apiVersion": "v1", "kind": "Node",
			"metadata": map[string]any{"name": c.node, "uid": uid},
			"status": map[string]any{"conditions": []Condition{{
				Type:               ConditionType,
				Status:             want.conditionStatus(),
				Reason:             want.Reason,
				Message:            want.Message,
				LastHeartbeatTime:  now,
				LastTransitionTime: transition,
			}}},
		})
		subresources = append(subresources, []string{"status"})
	}
	errs := make([]error, len(bodies))
	nodes := make([]*nodeObject, len(bodies))
	var wg sync.WaitGroup
	for i := range bodies {
		wg.Go(func() { nodes[i], errs[i] = c.apply(ctx, bodies[i], subresources[i]...) })
	}
	wg.Wait()
	// Record the responses first and forget after: a Node one write found gone must stay
	// forgotten, whenever the other write's response arrived.
	gone := false
	for i, err := range errs {
		switch {
		case err == nil:
			c.view.set(nodes[i])
			writes++
		case apierrors.IsConflict(err) || apierrors.IsInvalid(err) || apierrors.IsNotFound(err):
			gone = true
		}
	}
	if gone {
		// The uid no longer matches: the Node was deleted (and maybe registered again). Wait
		// for the watch to show the Node as it is now.
		c.view.forget()
	}
	return writes, errors.Join(errs...)
}

// apply sends one server-side apply and returns the Node as the response shows it. Errors
// wrap the API's, so apierrors still classifies them.
func (c *Client) apply(ctx context.Context, body map[string]any, subresource ...string) (*nodeObject, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	res, err := c.rc.Patch(types.ApplyPatchType).Resource("nodes").Name(c.node).SubResource(subresource...).
		Param("fieldManager", FieldManager).Param("force", "true").
		Body(data).Do(ctx).Raw() // Do, not DoRaw: it decodes the server's Status into the error
	if err != nil {
		what := "node"
		if len(subresource) > 0 {
			what = "node status"
		}
		return nil, fmt.Errorf("apply %s %q: %w", what, c.node, err)
	}
	var n nodeObject
	if err := json.Unmarshal(res, &n); err != nil {
		return nil, fmt.Errorf("decode node %q: %w", c.node, err)
	}
	return &n, nil
}

// Event records a transition on the Node, as kubelet does for its own events.
func (c *Client) Event(ctx context.Context, warning bool, reason, message string) error {
	_, uid := c.view.get()
	now := metav1.NewTime(c.now())
	typ := "Normal"
	if warning {
		typ = "Warning"
	}
	ev := event{
		APIVersion:          "v1",
		Kind:                "Event",
		Metadata:            objectMeta{Name: fmt.Sprintf("%s.%x", c.node, now.UnixNano()), Namespace: EventNamespace},
		InvolvedObject:      objectRef{APIVersion: "v1", Kind: "Node", Name: c.node, UID: uid},
		Reason:              reason,
		Message:             message,
		Type:                typ,
		Source:              eventSource{Component: FieldManager, Host: c.node},
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
		ReportingController: FieldManager,
		ReportingInstance:   c.node,
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if err := c.rc.Post().Namespace(EventNamespace).Resource("events").Body(data).Do(ctx).Error(); err != nil {
		return fmt.Errorf("create event %q on node %q: %w", reason, c.node, err)
	}
	return nil
}

// CountNodes returns the number of nodes in the cluster with one cheap list (limit=1, metadata
// only): the server reports how many items remain.
func (c *Client) CountNodes(ctx context.Context) (int64, error) {
	res, err := c.rc.Get().Resource("nodes").Param("limit", "1").
		SetHeader("Accept", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json").
		Do(ctx).Raw()
	if err != nil {
		return 0, fmt.Errorf("count nodes: %w", err)
	}
	var list struct {
		Metadata struct {
			RemainingItemCount *int64 `json:"remainingItemCount"`
		} `json:"metadata"`
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(res, &list); err != nil {
		return 0, fmt.Errorf("decode node list: %w", err)
	}
	n := int64(len(list.Items))
	if list.Metadata.RemainingItemCount != nil {
		n += *list.Metadata.RemainingItemCount
	}
	return n, nil
}
