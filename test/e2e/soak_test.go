package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	corev1 "k8s.io/api/core/v1"

	"github.com/calico-prep/calico-prep/test/kubetest"
	"github.com/calico-prep/calico-prep/test/testkit"
)

// soakFor repeats the soak's sequence of faults for this long; make soak asks for an hour,
// the suite's default runs the sequence once (a few minutes).
var soakFor = flag.Duration("soak", 0, "repeat TestFaultSoak's fault sequence for this long (0: once)")

// recoverWithin is the bound the soak holds every recovery to: from the end of a fault (the
// daemon back, the API server answering, the state directory writable) to the node as Calico
// needs it again and the Node saying so. Recoveries take well under a second to a few seconds;
// the bound leaves room for a machine loaded with other tests.
const recoverWithin = 30 * time.Second

// apiHang is how long the API server stays stopped in the soak.
const apiHang = 15 * time.Second

// TestFaultSoak runs the agent against real firewalld, NetworkManager, a private dbus-daemon and
// a real kube-apiserver, and injects the faults of a long life on a node: firewalld reloads and
// crashes, NetworkManager crashes, the system bus restarting, pods coming and going at 10/s, the
// API server hanging while the host changes, the state directory read-only or full, the agent
// killed in the middle of an apply. After each fault the node is as Calico needs it again
// within recoverWithin; a daemon that restarts and comes back as it was makes the agent write
// nothing and send no Event; at the end the process is alive, its goroutines, open files and
// memory back at their level after start, and cleanup removes exactly what it added.
func TestFaultSoak(t *testing.T) {
	c := kubetest.Start(t) // its own: the soak stops the API server
	e := setup(t, c, "e2e-soak")
	s := &soak{t: t, c: c, e: e, fw: dialBus(t, e.node), worst: map[string]time.Duration{}, count: map[string]int{}, began: time.Now()}
	s.zone = s.fw.defaultZone(t)
	before := s.firewall()
	s.w = e.watchNode()
	// The agent's first start, killed in the middle of its first apply: nothing is recorded
	// yet but what it is adding.
	s.start()
	s.killWhen(func(rt, perm bool) bool { return rt || perm })
	s.afterKill("kill during the first apply")
	s.w.waitFor(t, wait, "label true and condition True", statusIs(true, "Prepared", ""))
	if err := e.node.AddWorkloadVeth(t.Context(), "calisoak0000001"); err != nil {
		t.Fatal(err)
	}
	s.workload = "calisoak0000001"
	s.waitRestored("start", time.Now())
	var err error
	if s.dropIn, err = os.ReadFile(dropInPath(e.node)); err != nil {
		t.Fatal(err)
	}
	s.a.settle(t)
	base := s.health()
	t.Logf("after start: %s", base)

	deadline := time.Now().Add(*soakFor)
	for round := 1; round == 1 || time.Now().Before(deadline); round++ {
		s.round(round)
	}
	s.a.settle(t)
	end := s.health()
	t.Logf("after the faults: %s (after start: %s)", end, base)
	if s.a.Exited() {
		t.Fatalf("agent exited: %s\n%s", s.a.State(), s.a.logTail(40))
	}
	if strings.Contains(s.a.log(), "panic") {
		t.Errorf("the agent's log has a panic:\n%s", grepLines(s.a.log(), "panic"))
	}
	// Goroutines and open files come back to where they were; memory may settle a little
	// higher (the heap grows to what the peaks needed) but not keep growing.
	if end.goroutines > base.goroutines+3 || end.fds > base.fds+2 || end.rssKiB > base.rssKiB+4096 {
		t.Errorf("after the faults %s, after start %s: something leaks", end, base)
	}

	// The agent killed in the middle of applying, three times: the state file and firewalld
	// stay consistent, and each next start repairs the node.
	for i := range 3 {
		s.killDuringApply(i)
	}
	s.cleanup(before)
	s.summary(base, end)
}

type soak struct {
	t      *testing.T
	c      *kubetest.Cluster
	e      *env
	fw     bus
	zone   string
	w      *nodeWatch
	a      *agentProc
	dropIn []byte
	worst  map[string]time.Duration
	count  map[string]int
	veths  int
	began  time.Time
	// workload is a cali veth that lives through the soak; NetworkManager must leave it alone.
	workload string
}

// start starts the agent in a mount namespace of its own in which the state directory is a
// mount point, so that the soak can make it read-only or full for the agent alone.
func (s *soak) start() {
	t, n := s.t, s.e.node
	logf, err := os.CreateTemp(t.TempDir(), "agent-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	if err := os.MkdirAll(n.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--net=" + n.NetNS, "--", "unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", `mount --bind "$0" "$0" && exec "$@"`, n.StateDir, agentBin}, s.e.agentArgs()...)
	cmd := exec.Command("nsenter", args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DBUS_SYSTEM_BUS_ADDRESS=" + n.BusAddress}
	cmd.Stdout, cmd.Stderr = logf, logf
	a := &agentProc{t: t, node: n, logPath: logf.Name(), started: time.Now()}
	if a.Proc, err = testkit.Start(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !a.Exited() {
			_ = a.Stop(10 * time.Second)
		}
		if t.Failed() {
			t.Logf("agent log (last lines):\n%s", a.logTail(60))
		}
	})
	if err := a.checkNamespace(); err != nil {
		t.Fatal(err)
	}
	s.a = a
}

// inAgentMounts runs a shell script in the agent's mount namespace.
func (s *soak) inAgentMounts(script string) {
	s.t.Helper()
	out, err := exec.Command("nsenter", "--mount=/proc/"+strconv.Itoa(s.a.Pid)+"/ns/mnt", "--", "sh", "-euc", script).CombinedOutput()
	if err != nil {
		s.t.Fatalf("in the agent's mount namespace: %s: %v\n%s", script, err, out)
	}
}

func (s *soak) round(round int) {
	t := s.t
	ctx := t.Context()
	bgp := calicoPorts[0]

	s.restart("firewalld reload", func() {
		s.fw.removePermanentPort(t, s.zone, bgp)
		s.fw.reloadFirewalld(t)
	})
	s.restart("firewalld SIGKILL and restart", func() {
		must(t, s.e.node.KillFirewalld(ctx))
		must(t, s.e.node.StartFirewalld(ctx))
	})
	s.restart("NetworkManager SIGKILL and restart", func() {
		must(t, s.e.node.KillNetworkManager(ctx))
		must(t, s.e.node.StartNetworkManager(ctx))
	})
	s.restart("dbus-daemon restart", func() {
		must(t, s.e.node.RestartBus(ctx))
		s.fw = dialBus(t, s.e.node)
	})
	s.restart("pod churn (cali veths, 10/s)", func() {
		var live []string
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := range 40 {
			<-tick.C
			if i%2 == 0 || len(live) == 0 {
				s.veths++
				name := fmt.Sprintf("cali%011d", s.veths)
				must(t, s.e.node.AddWorkloadVeth(ctx, name))
				live = append(live, name)
			} else {
				must(t, s.e.node.DeleteLink(ctx, live[0]))
				live = live[1:]
			}
		}
		for _, name := range live {
			must(t, s.e.node.DeleteLink(ctx, name))
		}
	})
	s.apiHang()
	s.stateDir("read-only", "mount -o remount,bind,ro \"$0\"", "mount -o remount,bind,rw \"$0\"")
	s.stateDir("full", `cp -a "$0/." /tmp/state.$$ 2>/dev/null || mkdir /tmp/state.$$
mount -t tmpfs -o size=16k tmpfs "$0"
cp -a /tmp/state.$$/. "$0/"
rm -rf /tmp/state.$$
dd if=/dev/zero of="$0/fill" bs=1k count=64 2>/dev/null || true`, `umount "$0"`)
	t.Logf("round %d done: %s", round, s.describeWorst())
}

// restart injects a fault that ends with the node as it was: the agent must repair what needs
// it without the Node ever saying otherwise, with no write to the Node and no Event.
func (s *soak) restart(kind string, fault func()) {
	t := s.t
	s.a.settle(t)
	since := time.Now()
	notReady := s.a.metric(t, `calico_prep_reconcile_total{result="not_ready"}`)
	fault()
	s.waitRestored(kind, time.Now())
	s.a.settle(t)
	for _, v := range s.w.since(since) {
		if n := v.node; !statusIs(true, "Prepared", "")(n) {
			t.Errorf("%s: the Node said %s", kind, describeNode(n))
		}
	}
	var writes []kubetest.AuditEvent
	for _, r := range s.e.requests(t, since) {
		if r.Verb != "watch" && r.Verb != "get" && r.Verb != "list" {
			writes = append(writes, r)
		}
	}
	if len(writes) > 0 {
		t.Errorf("%s: the agent wrote %s", kind, describeRequests(writes))
	}
	if got := s.a.metric(t, `calico_prep_reconcile_total{result="not_ready"}`); got != notReady {
		t.Errorf("%s: %v passes judged not ready (before: %v)", kind, got, notReady)
	}
}

// apiHang stops the API server; meanwhile a pod CIDR collision appears on the node (a write
// is due) and firewalld loses a rule. The agent repairs firewalld while the API server hangs
// and tells the Node once it answers.
func (s *soak) apiHang() {
	t := s.t
	kind := "API server hung (SIGSTOP), local changes meanwhile"
	s.a.settle(t)
	bgp := calicoPorts[0]
	s.c.PauseAPIServer(t)
	paused := true
	defer func() {
		if paused {
			s.c.ResumeAPIServer(t)
		}
	}()
	stopped := time.Now()
	s.e.uplinkAddr(true, collisionAddr)
	s.fw.removePermanentPort(t, s.zone, bgp)
	s.fw.reloadFirewalld(t)
	reloaded := time.Now()
	testkit.Eventually(t, recoverWithin, func() string { return s.fw.missingPorts(s.zone) })
	s.record(kind+": firewalld repaired while the API server hangs", time.Since(reloaded))
	s.a.waitHTTP("/readyz", 503)
	time.Sleep(time.Until(stopped.Add(apiHang)))
	s.c.ResumeAPIServer(t)
	paused = false
	resumed := time.Now()
	v := s.w.waitFor(t, recoverWithin, "the collision on the Node after the API server answers",
		statusIs(false, "PodCIDROverlap", collisionMessage))
	s.record(kind+": Node told after the API server answers", v.at.Sub(resumed))
	s.e.uplinkAddr(false, collisionAddr)
	s.waitRestored(kind, time.Now())
}

// stateDir makes the state directory unwritable for the agent (inject, a script run in the
// agent's mount namespace with the directory as "$0"), then makes firewalld lose a rule. The
// rule is calico-prep's already, so putting it back needs no new record: the agent repairs the
// node as usual, and the record is intact once the directory is writable again (clear). (That
// it adds no rule it cannot record is pkg/firewalld's TestApplyRecordsBeforeItAdds.)
func (s *soak) stateDir(how, inject, clear string) {
	t := s.t
	kind := "state directory " + how + ", firewalld reload meanwhile"
	stateFile := filepath.Join(s.e.node.StateDir, "firewalld.json")
	recorded, err := os.ReadFile(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	script := func(body string) string { return strings.ReplaceAll(body, `"$0"`, strconv.Quote(s.e.node.StateDir)) }
	s.inAgentMounts(script(inject))
	s.restart(kind, func() {
		s.fw.removePermanentPort(t, s.zone, calicoPorts[0])
		s.fw.reloadFirewalld(t)
	})
	s.inAgentMounts(script(clear))
	if got, err := os.ReadFile(stateFile); err != nil || string(got) != string(recorded) {
		t.Errorf("%s: state file after: %q, %v; want it as before: %s", kind, got, err, recorded)
	}
}

// killDuringApply makes the agent apply (firewalld lost both of Calico's rules) and kills it
// with SIGKILL inside the apply: as soon as it has put back the first layer of the first rule
// (i 0), the first rule whole (i 1), or at a random moment (others).
func (s *soak) killDuringApply(i int) {
	t := s.t
	s.a.settle(t)
	for _, p := range calicoPorts {
		s.fw.removePermanentPort(t, s.zone, p)
	}
	s.fw.reloadFirewalld(t)
	switch i {
	case 0:
		s.killWhen(func(rt, perm bool) bool { return rt || perm })
	case 1:
		s.killWhen(func(rt, perm bool) bool { return rt && perm })
	default:
		time.Sleep(time.Duration(rand.N(100)) * time.Millisecond)
		must(t, s.a.Kill())
	}
	s.afterKill(fmt.Sprintf("kill %d during an apply", i))
}

// killWhen kills the agent as soon as the first of Calico's rules is in firewalld as cond wants.
func (s *soak) killWhen(cond func(runtime, permanent bool) bool) {
	deadline := time.Now().Add(recoverWithin)
	for time.Now().Before(deadline) {
		rt, _ := s.fw.runtimePort(s.zone, calicoPorts[0])
		perm, _ := s.fw.permanentPort(s.zone, calicoPorts[0])
		if cond(rt, perm) {
			break
		}
	}
	must(s.t, s.a.Kill())
}

// afterKill checks what a killed agent left: whatever it had done, the state file parses, no
// rule is in firewalld that it does not record (so cleanup removes everything it added), and
// the drop-in is whole. Then it starts the agent again, which repairs the node.
func (s *soak) afterKill(kind string) {
	t := s.t
	st := s.state()
	var caught []string
	for _, p := range calicoPorts {
		rt, err1 := s.fw.runtimePort(s.zone, p)
		perm, err2 := s.fw.permanentPort(s.zone, p)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		o := st.rule(s.zone, p)
		caught = append(caught, fmt.Sprintf("%s runtime %v permanent %v, recorded %+v", p, rt, perm, o))
		if rt && !o.Runtime || perm && !o.Permanent {
			t.Errorf("%s: %s is in firewalld (runtime %v, permanent %v) but recorded as %+v: cleanup would leave it", kind, p, rt, perm, o)
		}
	}
	if got, err := os.ReadFile(dropInPath(s.e.node)); err == nil && s.dropIn != nil && string(got) != string(s.dropIn) {
		t.Errorf("%s: drop-in %q; want it whole", kind, got)
	}
	t.Logf("%s found: %s", kind, strings.Join(caught, "; "))
	started := time.Now()
	s.start()
	s.waitRestored(kind+", then started again", started)
}

// cleanup stops the agent and runs agent cleanup: firewalld is as it was before the agent
// first ran, and the drop-in is gone.
func (s *soak) cleanup(before firewall) {
	t := s.t
	if err := s.a.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	code, out := runAgent(t, s.e.node, time.Minute, "cleanup", "--state-dir="+s.e.node.StateDir, "--networkmanager-conf-dir="+s.e.node.NMConfDir)
	if code != 0 {
		t.Fatalf("cleanup exited %d:\n%s", code, out)
	}
	if after := s.firewall(); !after.equal(before) {
		t.Errorf("firewalld after cleanup:\n%+v\nbefore the agent:\n%+v", after, before)
	}
	if _, err := os.Stat(dropInPath(s.e.node)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("drop-in after cleanup: %v", err)
	}
}

// restored says what is not as Calico needs it; "" when all is.
func (s *soak) restored() string {
	if s.a.Exited() {
		s.t.Fatalf("agent exited: %s\n%s", s.a.State(), s.a.logTail(40))
	}
	if msg := s.fw.missingPorts(s.zone); msg != "" {
		return msg
	}
	if got, err := os.ReadFile(dropInPath(s.e.node)); err != nil || s.dropIn != nil && string(got) != string(s.dropIn) {
		return fmt.Sprintf("drop-in %q, %v", got, err)
	}
	if s.workload != "" {
		if d, err := s.fw.device(s.workload); err != nil || d.managed || d.state != nmUnmanaged {
			return fmt.Sprintf("%s: %+v, %v; want unmanaged", s.workload, d, err)
		}
	}
	if v, _ := s.w.latest(); v == nil || !statusIs(true, "Prepared", "")(v.node) {
		var n *corev1.Node
		if v != nil {
			n = v.node
		}
		return describeNode(n)
	}
	if code, body, err := s.a.get(context.Background(), "/readyz"); err != nil || code != 200 {
		return fmt.Sprintf("/readyz %d %q %v", code, body, err)
	}
	return ""
}

func (s *soak) waitRestored(kind string, since time.Time) {
	s.t.Helper()
	deadline := since.Add(recoverWithin)
	for {
		msg := s.restored()
		if msg == "" {
			break
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: not restored within %s: %s", kind, recoverWithin, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.record(kind, time.Since(since))
}

func (s *soak) record(kind string, took time.Duration) {
	s.count[kind]++
	s.worst[kind] = max(s.worst[kind], took)
}

func (s *soak) describeWorst() string {
	var kinds []string
	for k := range s.worst {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var out []string
	for _, k := range kinds {
		out = append(out, fmt.Sprintf("%s ×%d, worst %s", k, s.count[k], s.worst[k].Round(time.Millisecond)))
	}
	return strings.Join(out, "; ")
}

func (s *soak) summary(base, end health) {
	faults := 0
	for k, n := range s.count {
		if k != "start" && !strings.Contains(k, ": ") {
			faults += n
		}
	}
	s.t.Logf("soak: %d faults survived in %s; recoveries: %s; after start %s, after the faults %s",
		faults, time.Since(s.began).Round(time.Second), s.describeWorst(), base, end)
}

// health is what the soak watches of the process.
type health struct {
	rssKiB, peakKiB int64
	fds             int
	goroutines      float64
}

func (h health) String() string {
	return fmt.Sprintf("RSS %.1f MiB (peak %.1f), %d open files, %v goroutines", float64(h.rssKiB)/1024, float64(h.peakKiB)/1024, h.fds, h.goroutines)
}

func (s *soak) health() health {
	u, err := s.a.usage()
	if err != nil {
		s.t.Fatal(err)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.a.Pid))
	if err != nil {
		s.t.Fatal(err)
	}
	return health{rssKiB: u.rssKiB, peakKiB: u.hwmKiB, fds: len(fds), goroutines: s.a.metric(s.t, "go_goroutines")}
}

// soakState is the agent's firewalld state file as the soak reads it.
type soakState struct {
	Rules []struct {
		Zone      string `json:"zone"`
		Port      string `json:"port"`
		Protocol  string `json:"protocol"`
		Runtime   bool   `json:"runtime"`
		Permanent bool   `json:"permanent"`
	} `json:"rules"`
}

type soakRule struct{ Runtime, Permanent bool }

func (st soakState) rule(zone string, p port) soakRule {
	for _, r := range st.Rules {
		if r.Zone == zone && r.Port == p.num && r.Protocol == p.proto {
			return soakRule{r.Runtime, r.Permanent}
		}
	}
	return soakRule{}
}

func (s *soak) state() soakState {
	var st soakState
	b, err := os.ReadFile(filepath.Join(s.e.node.StateDir, "firewalld.json"))
	if errors.Is(err, os.ErrNotExist) {
		return st
	}
	if err != nil {
		s.t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		s.t.Fatalf("state file does not parse: %v\n%s", err, b)
	}
	return st
}

// firewall is what cleanup must restore: the default zone's ports, and the zones and policies.
type firewall struct {
	runtimePorts, permanentPorts, zones, policies []string
}

func (f firewall) equal(g firewall) bool {
	return slices.Equal(f.runtimePorts, g.runtimePorts) && slices.Equal(f.permanentPorts, g.permanentPorts) &&
		slices.Equal(f.zones, g.zones) && slices.Equal(f.policies, g.policies)
}

func (s *soak) firewall() firewall {
	t := s.t
	ctx := context.Background()
	var f firewall
	var rt [][]any // each a port and a protocol
	must(t, s.fw.call(ctx, fwName, fwPath, fwName+".zone.getPorts", []any{s.zone}, &rt))
	path, err := s.fw.permanentZone(s.zone)
	must(t, err)
	var perm [][]any
	must(t, s.fw.call(ctx, fwName, path, fwName+".config.zone.getPorts", nil, &perm))
	must(t, s.fw.call(ctx, fwName, dbus.ObjectPath(fwConfigPath), fwName+".config.getPolicyNames", nil, &f.policies))
	f.zones = s.fw.permanentZones(t)
	for _, p := range rt {
		f.runtimePorts = append(f.runtimePorts, fmt.Sprint(p...))
	}
	for _, p := range perm {
		f.permanentPorts = append(f.permanentPorts, fmt.Sprint(p...))
	}
	for _, l := range [][]string{f.runtimePorts, f.permanentPorts, f.zones, f.policies} {
		slices.Sort(l)
	}
	return f
}
