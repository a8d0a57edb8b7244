// Package calicoconfig follows Calico's own configuration once Calico is installed: the
// FelixConfiguration, BGPConfiguration and IPPool resources (in whichever of Calico's API groups
// is served: crd.projectcalico.org/v1 or projectcalico.org/v3 as CRDs), the tigera-operator's
// Installation, Typha's Service and calico.yaml's calico-config ConfigMap. Everything is
// watched (single-object watches where one object is meant); nothing is polled. Resolve merges what they say with the agent's flags into the effective
// configuration, with the source of every setting and the disagreements.
//
// Like pkg/nodestatus it talks to the API server through client-go's REST client with small
// JSON types of its own, not typed clients: those would link Calico's API module or
// k8s.io/api into the agent.
package calicoconfig

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"

	"github.com/calico-prep/calico-prep/internal/kubeclient"
)

// Calico's API groups, preferred first: manifest and operator installs serve
// crd.projectcalico.org/v1 (behind the optional Calico API server's projectcalico.org/v3);
// Calico's "v3 CRDs" mode serves projectcalico.org/v3 as CRDs.
var groups = []groupVersion{{"crd.projectcalico.org", "v1"}, {"projectcalico.org", "v3"}}

type groupVersion struct{ group, version string }

func (g groupVersion) String() string { return g.group + "/" + g.version }

// operatorGroup serves the tigera-operator's Installation.
var operatorGroup = groupVersion{"operator.tigera.io", "v1"}

// Names of the objects read.
const (
	// DefaultName is the cluster-wide FelixConfiguration, BGPConfiguration and Installation.
	DefaultName = "default"
	// TyphaServiceName is Typha's Service in calico.yaml's Typha variants (kube-system) and
	// in operator installs (calico-system).
	TyphaServiceName = "calico-typha"
	// CalicoConfigMap is calico.yaml's ConfigMap in kube-system: calico_backend (bird, vxlan
	// or none) feeds calico-node's CALICO_NETWORKING_BACKEND.
	CalicoConfigMap = "calico-config"
)

// unsyncedDelay is how long a State that is not Synced waits before Watch sends it anyway
// (a watch that cannot list, e.g. refused by RBAC, must not hold back every other change).
const unsyncedDelay = 5 * time.Second

// TyphaNamespaces are where Typha's Service is looked for.
var TyphaNamespaces = []string{"calico-system", "kube-system"}

// the watches, by key.
const (
	keyCRDs         = "crds"
	keyFelixDefault = "felixconfigurations/default"
	keyFelixNode    = "felixconfigurations/node"
	keyBGP          = "bgpconfigurations/default"
	keyPools        = "ippools"
	keyInstallation = "installations/default"
	keyTypha        = "services/calico-typha"
	keyCalicoConfig = "configmaps/calico-config"
)

// State is what Calico's resources say, parsed and validated. A resource whose new version is
// invalid keeps its last valid version here, and the problem is listed.
type State struct {
	// Synced is set once every watch has listed its resource: absent things are then known to
	// be absent, not merely unread.
	Synced bool
	// Group is the API group Calico's resources are read from; "" when Calico's CRDs are not
	// established.
	Group string
	// FelixDefault and FelixNode are FelixConfiguration "default" and "node.<node name>".
	FelixDefault, FelixNode *Felix
	// BGPListenPort is BGPConfiguration "default"'s listenPort.
	BGPListenPort *uint16
	// Pools are the IPPools; nil when their CRD is not served.
	Pools []Pool
	// Installation is the operator's Installation "default"; nil without one.
	Installation *Installation
	// Typha is Typha's Service; nil without one.
	Typha *TyphaService
	// CalicoBackend is calico-config's calico_backend; "" without it.
	CalicoBackend string
	// Problems name invalid values in Calico's resources, one line each.
	Problems []string
}

// Client follows Calico's resources for one node.
type Client struct {
	rc   rest.Interface
	node string
	log  *slog.Logger
	// noWatchList is learnt by the first watch, before any other starts (see watcher).
	noWatchList atomic.Bool
}

// New returns a client for the named node (its FelixConfiguration "node.<node>").
func New(cfg *rest.Config, node string, log *slog.Logger) (*Client, error) {
	rc, err := kubeclient.New(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{rc: rc, node: node, log: log.With("component", "calicoconfig")}, nil
}

// target is one watch the client wants running.
type target struct {
	path, name string
	table      bool
	group      string // Calico's API group and version, for State.Group
}

// running is one watch the client runs.
type running struct {
	target
	cancel context.CancelFunc
	gen    int
	objs   map[string]json.RawMessage
	listed bool
}

type update struct {
	key  string
	gen  int
	objs map[string]json.RawMessage
}

// Watch follows Calico's resources and sends the State after each change (one that is not
// Synced only once it has lasted unsyncedDelay); a slow reader gets the newest. It watches the CustomResourceDefinitions (as table rows) to learn which of
// Calico's API groups is served and whether the operator is installed, and starts and stops
// the watches of Calico's resources as their CRDs are established or removed, so Calico
// installed after the agent is picked up without a restart. The channel closes when ctx ends.
func (c *Client) Watch(ctx context.Context) <-chan State {
	out := make(chan State, 1)
	updates := make(chan update, 16)
	go func() {
		var wg sync.WaitGroup
		defer func() {
			wg.Wait()
			close(out)
		}()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		watches := map[string]*running{}
		lastGood := map[string]any{} // key/object → last valid parse
		gen := 0
		start := func(key string, t target) {
			if w, ok := watches[key]; ok {
				if w.target == t {
					return
				}
				w.cancel()
			}
			gen++
			wctx, wcancel := context.WithCancel(ctx)
			watches[key] = &running{target: t, cancel: wcancel, gen: gen}
			w := &watcher{rc: c.rc, log: c.log, path: t.path, name: t.name, table: t.table, noWatchList: &c.noWatchList}
			g := gen
			w.send = func(objs map[string]json.RawMessage) {
				select {
				case updates <- update{key: key, gen: g, objs: objs}:
				case <-wctx.Done():
				}
			}
			wg.Go(func() { w.run(wctx) })
		}
		stop := func(key string) {
			if w, ok := watches[key]; ok {
				w.cancel()
				delete(watches, key)
			}
		}
		start(keyCRDs, target{path: "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", table: true})
		// A state with a watch that has not listed yet (one just started for a CRD that
		// appeared) goes out only when it lasts: its resources would read as absent, and
		// the agent would open Calico's defaults for a moment only to close them again.
		var pending *State
		unsynced := time.NewTimer(unsyncedDelay)
		unsynced.Stop()
		defer unsynced.Stop()
		for {
			var u update
			select {
			case <-ctx.Done():
				return
			case <-unsynced.C:
				if pending != nil {
					latest(out, *pending)
					pending = nil
				}
				continue
			case u = <-updates:
			}
			w, ok := watches[u.key]
			if !ok || w.gen != u.gen {
				continue // from a watch stopped since
			}
			w.objs, w.listed = u.objs, true
			if u.key == keyCRDs {
				crds := crdsOf(w.objs)
				for key, t := range c.targets(crds) {
					if t.path == "" {
						stop(key)
					} else {
						start(key, t)
					}
				}
			}
			st := c.state(watches, lastGood)
			if st.Synced {
				unsynced.Stop()
				pending = nil
				latest(out, st)
				continue
			}
			if pending == nil {
				unsynced.Reset(unsyncedDelay)
			}
			pending = &st
		}
	}()
	return out
}

// crdsOf returns the established CRDs' served versions by CRD name.
func crdsOf(objs map[string]json.RawMessage) map[string][]string {
	out := map[string][]string{}
	for _, raw := range objs {
		var r crdRow
		if json.Unmarshal(raw, &r) == nil && r.Established {
			out[r.Name] = r.Versions
		}
	}
	return out
}

// servedGroup is the first of Calico's API groups that serves resource (e.g. "ippools"), or
// the zero groupVersion.
func servedGroup(crds map[string][]string, resource string) groupVersion {
	for _, g := range groups {
		if slices.Contains(crds[resource+"."+g.group], g.version) {
			return g
		}
	}
	return groupVersion{}
}

// targets are the watches the CRDs call for; an empty path stops one.
func (c *Client) targets(crds map[string][]string) map[string]target {
	of := func(resource, name string) target {
		g := servedGroup(crds, resource)
		if g.group == "" {
			return target{}
		}
		return target{path: "/apis/" + g.String() + "/" + resource, name: name, group: g.String()}
	}
	out := map[string]target{
		keyFelixDefault: of("felixconfigurations", DefaultName),
		keyFelixNode:    of("felixconfigurations", "node."+c.node),
		keyBGP:          of("bgpconfigurations", DefaultName),
		keyPools:        of("ippools", ""),
		keyInstallation: {},
	}
	if slices.Contains(crds["installations."+operatorGroup.group], operatorGroup.version) {
		out[keyInstallation] = target{path: "/apis/" + operatorGroup.String() + "/installations", name: DefaultName}
	}
	// Typha's Service and calico-config mean something only with Calico installed; a node of
	// a cluster without Calico watches nothing but the CRDs.
	out[keyTypha], out[keyCalicoConfig] = target{}, target{}
	if out[keyFelixDefault].path != "" || out[keyPools].path != "" || out[keyBGP].path != "" {
		out[keyTypha] = target{path: "/api/v1/services", name: TyphaServiceName}
		out[keyCalicoConfig] = target{path: "/api/v1/namespaces/kube-system/configmaps", name: CalicoConfigMap}
	}
	return out
}

// state parses what the watches hold. lastGood keeps, per object, its last valid parse, which
// stands in for a version that does not parse.
func (c *Client) state(watches map[string]*running, lastGood map[string]any) State {
	var st State
	st.Synced = true
	for _, w := range watches {
		st.Synced = st.Synced && w.listed
	}
	for _, key := range []string{keyPools, keyFelixDefault, keyBGP} {
		if w := watches[key]; w != nil && st.Group == "" {
			st.Group = w.group
		}
	}
	seen := map[string]bool{}
	// parse returns the parse of each object of the watch, or its last valid parse.
	parse := func(key, kind string, fn func(json.RawMessage) (any, error)) []any {
		w := watches[key]
		if w == nil {
			return nil
		}
		names := make([]string, 0, len(w.objs))
		for name := range w.objs {
			names = append(names, name)
		}
		sort.Strings(names)
		var out []any
		for _, name := range names {
			id := w.path + "/" + name
			seen[id] = true
			v, err := fn(w.objs[name])
			if err != nil {
				old, ok := lastGood[id]
				keep := "ignoring it"
				if ok {
					keep = "keeping its previous version"
				}
				st.Problems = append(st.Problems, fmt.Sprintf("%s %q: %v; %s", kind, name, err, keep))
				if !ok {
					continue
				}
				v = old
			}
			lastGood[id] = v
			out = append(out, v)
		}
		return out
	}
	felix := func(raw json.RawMessage) (any, error) { return parseFelix(raw) }
	if fs := parse(keyFelixDefault, "FelixConfiguration", felix); len(fs) > 0 {
		st.FelixDefault = fs[0].(*Felix)
	}
	if fs := parse(keyFelixNode, "FelixConfiguration", felix); len(fs) > 0 {
		st.FelixNode = fs[0].(*Felix)
	}
	if bs := parse(keyBGP, "BGPConfiguration", func(raw json.RawMessage) (any, error) { return parseBGP(raw) }); len(bs) > 0 {
		st.BGPListenPort = bs[0].(*uint16)
	}
	if watches[keyPools] != nil {
		st.Pools = []Pool{}
		for _, p := range parse(keyPools, "IPPool", func(raw json.RawMessage) (any, error) { return parsePool(raw) }) {
			st.Pools = append(st.Pools, p.(Pool))
		}
	}
	if is := parse(keyInstallation, "Installation", func(raw json.RawMessage) (any, error) { return parseInstallation(raw) }); len(is) > 0 {
		st.Installation = is[0].(*Installation)
	}
	for _, s := range parse(keyTypha, "Service", func(raw json.RawMessage) (any, error) { return parseTypha(raw) }) {
		svc := s.(*TyphaService)
		if slices.Contains(TyphaNamespaces, svc.Namespace) && (st.Typha == nil || svc.Namespace == TyphaNamespaces[0]) {
			st.Typha = svc
		}
	}
	if w := watches[keyCalicoConfig]; w != nil {
		for _, raw := range w.objs {
			var cm configMapObject
			if json.Unmarshal(raw, &cm) == nil {
				st.CalicoBackend = cm.Data["calico_backend"]
			}
		}
	}
	for id := range lastGood {
		if !seen[id] {
			delete(lastGood, id) // deleted, or its watch stopped
		}
	}
	return st
}

// latest replaces an unread value so the reader always gets the newest state.
func latest(ch chan State, s State) {
	for {
		select {
		case ch <- s:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

// Read returns Calico's resources once, as soon as every one has been read (for agent plan,
// which runs once); the error says why it could not, with what was read by then.
func (c *Client) Read(ctx context.Context) (State, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var last State
	for st := range c.Watch(ctx) {
		if st.Synced {
			return st, nil
		}
		last = st
	}
	return last, fmt.Errorf("read Calico's resources: %w", ctx.Err())
}
