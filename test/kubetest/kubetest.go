// Package kubetest runs a real kube-apiserver and etcd on loopback for tests, so Kubernetes code
// is tested against the real API (admission, RBAC, the Node authorizer, subresources, audit)
// instead of a fake clientset.
//
// The binaries come from hack/build-kube.sh, which builds them once into a cache outside the
// work tree (minutes when cold, instant when warm). On a cold cache run the script once before
// `go test`, or give `go test` a -timeout long enough for the build.
//
// A cluster takes seconds to become ready, so a test binary should share one:
//
//	var kube kubetest.Shared
//
//	func TestMain(m *testing.M) { os.Exit(kube.Run(m)) }
//
//	func TestSomething(t *testing.T) {
//		c := kube.Cluster(t) // started by the first test that asks, stopped when the binary exits
//		...
//	}
//
// Tests sharing a cluster must not collide: give every object a name derived from the test.
// Tests that stop the apiserver (StopAPIServer) take a cluster of their own with Start(t), which
// t.Cleanup stops and removes.
//
// etcd and kube-apiserver die with the test binary even when it is killed (Pdeathsig); only
// their directory, $TMPDIR/kubetest-*, is then left behind.
//
// Only etcd and kube-apiserver run: no controller-manager, scheduler or kubelet. Namespaces are
// never finalized once deleted, ServiceAccounts named "default" are not created (so the
// ServiceAccount admission plugin rejects Pods without an existing ServiceAccount), nothing is
// scheduled and nothing is garbage-collected.
package kubetest

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/calico-prep/calico-prep/test/testkit"
)

// AdminUser is the user name of the admin client certificate (group system:masters).
const AdminUser = "kubetest-admin"

const (
	etcdReadyTimeout = 60 * time.Second
	// The apiserver comes up in 3–6 s on an idle 2-core machine; go test ./... compiles and runs
	// other packages beside it, so allow far more before calling it broken.
	apiserverReadyTimeout = 120 * time.Second
	stopTimeout           = 20 * time.Second
	logTailLines          = 40
)

// Cluster is one etcd and one kube-apiserver listening on loopback.
type Cluster struct {
	Dir        string // private dir: certs, etcd data, logs, audit log
	Server     string // https://127.0.0.1:<port>
	Kubeconfig string // admin kubeconfig path (system:masters client cert)
	CAFile     string
	BinDir     string // where kubectl/kube-apiserver/etcd are
	AuditLog   string // apiserver audit log: JSON lines, level Metadata for all but the apiserver itself

	pki           *pki
	admin         *rest.Config
	apiserverArgs []string

	mu        sync.Mutex
	etcd      *testkit.Proc
	apiserver *testkit.Proc
}

// Start builds or reuses the binaries, starts etcd and kube-apiserver on free loopback ports and
// returns once /readyz answers and namespace "default" exists. t.Cleanup stops both and removes
// Dir. It fails the test when the cluster cannot start.
func Start(t testing.TB) *Cluster { return StartWith(t, Options{}) }

// Options change the cluster Start makes; the zero value is Start's.
type Options struct {
	// AdvertiseAddress, when valid, is published as the endpoint of Service "kubernetes" (whose
	// ClusterIP is ServiceIP), as a real apiserver publishes its address, and the serving
	// certificate is valid for it, for ServiceIP and for the Service's DNS names: then pods
	// reach the apiserver in-cluster, through kube-proxy, wherever a route leads that address to
	// the apiserver (see RelayOn). Otherwise the Service has no endpoints.
	AdvertiseAddress netip.Addr
	// APIServerArgs are more kube-apiserver flags, e.g. a feature gate turned off to test what
	// older API servers do.
	APIServerArgs []string
}

// needsRoot is why a cluster needs root: its binaries are built into the machine-wide cache.
const needsRoot = "builds etcd and kube-apiserver into /var/cache/calico-prep and runs them"

// ServiceIP is the ClusterIP of Service "kubernetes", the first address of the service range.
var ServiceIP = netip.MustParseAddr("10.96.0.1")

// StartWith is Start with options.
func StartWith(t testing.TB, opts Options) *Cluster {
	t.Helper()
	testkit.NeedsRoot(t, needsRoot)
	c, err := start(opts)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kube-apiserver log (last lines):\n%s", testkit.Tail(c.logPath("kube-apiserver"), logTailLines))
		}
		if err := c.stop(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	return c
}

// Shared is one cluster per test binary, started by the first test that asks for it and stopped
// by Run after all tests. The zero value is ready to use.
type Shared struct {
	once sync.Once
	c    *Cluster
	err  error
}

// Cluster returns the shared cluster, starting it on first use. Every test that asks fails when
// it could not start.
func (s *Shared) Cluster(t testing.TB) *Cluster {
	t.Helper()
	testkit.NeedsRoot(t, needsRoot)
	s.once.Do(func() { s.c, s.err = start(Options{}) })
	if s.err != nil {
		t.Fatalf("start shared cluster: %v", s.err)
	}
	return s.c
}

// Run runs the tests and then stops the shared cluster; use it in TestMain. A failure to stop
// turns a passing run into a failing one.
func (s *Shared) Run(m *testing.M) int {
	code := m.Run()
	if s.c != nil {
		if err := s.c.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "kubetest: stop shared cluster: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

func start(opts Options) (c *Cluster, err error) {
	binDir, err := binaries()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kubetest-")
	if err != nil {
		return nil, fmt.Errorf("create cluster dir: %w", err)
	}
	c = &Cluster{Dir: dir, BinDir: binDir}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.stop())
			c = nil
		}
	}()

	var sanIPs []net.IP
	var sanNames []string
	if opts.AdvertiseAddress.IsValid() {
		sanIPs = []net.IP{opts.AdvertiseAddress.AsSlice(), ServiceIP.AsSlice()}
		sanNames = []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	}
	if c.pki, err = newPKI(sanIPs, sanNames); err != nil {
		return c, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return c, err
	}
	etcdClient := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	etcdPeer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	c.Server = fmt.Sprintf("https://127.0.0.1:%d", ports[2])
	c.CAFile = filepath.Join(dir, "ca.crt")
	c.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	c.AuditLog = filepath.Join(dir, "audit.log")

	files := map[string][]byte{
		"ca.crt":            c.pki.caCert,
		"apiserver.crt":     c.pki.servingCert,
		"apiserver.key":     c.pki.servingKey,
		"sa.key":            c.pki.saKey,
		"sa.pub":            c.pki.saPub,
		"audit-policy.yaml": []byte(auditPolicy),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return c, fmt.Errorf("write %q: %w", name, err)
		}
	}
	c.admin = &rest.Config{
		Host: c.Server,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   c.pki.caCert,
			CertData: c.pki.adminCert,
			KeyData:  c.pki.adminKey,
		},
	}
	if err := writeKubeconfig(c.Kubeconfig, c.Server, c.pki.caCert, &clientcmdapi.AuthInfo{
		ClientCertificateData: c.pki.adminCert,
		ClientKeyData:         c.pki.adminKey,
	}); err != nil {
		return c, err
	}

	c.etcd, err = startProcess(filepath.Join(binDir, "etcd"), c.logPath("etcd"),
		"--name=kubetest",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdClient,
		"--advertise-client-urls="+etcdClient,
		"--listen-peer-urls="+etcdPeer,
		"--initial-advertise-peer-urls="+etcdPeer,
		"--initial-cluster=kubetest="+etcdPeer,
		// Throwaway data: durability only costs time.
		"--unsafe-no-fsync",
		"--log-level=warn",
	)
	if err != nil {
		return c, err
	}
	if err := c.waitEtcd(etcdClient); err != nil {
		return c, err
	}

	// The endpoints of Service "kubernetes" may not be loopback addresses: without an address
	// pods can reach, publish none.
	endpoints := []string{"--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none"}
	if opts.AdvertiseAddress.IsValid() {
		endpoints = []string{"--advertise-address=" + opts.AdvertiseAddress.String(), "--endpoint-reconciler-type=lease"}
	}
	c.apiserverArgs = append([]string{
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports[2]),
		"--etcd-servers=" + etcdClient,
		"--tls-cert-file=" + filepath.Join(dir, "apiserver.crt"),
		"--tls-private-key-file=" + filepath.Join(dir, "apiserver.key"),
		// Never used (the certificate files are given) but defaults to /var/run/kubernetes.
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		"--client-ca-file=" + c.CAFile,
		"--service-account-key-file=" + filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		"--service-cluster-ip-range=10.96.0.0/12",
		"--audit-policy-file=" + filepath.Join(dir, "audit-policy.yaml"),
		"--audit-log-path=" + c.AuditLog,
		// Blocking: an event is written before its response is sent, so a test reads its own
		// requests from the log as soon as they returned.
		"--audit-log-mode=blocking",
	}, endpoints...)
	c.apiserverArgs = append(c.apiserverArgs, opts.APIServerArgs...)
	if err := c.startAPIServer(); err != nil {
		return c, err
	}
	return c, nil
}

// StopAPIServer stops only the apiserver, for outage tests; etcd and all data stay. The
// apiserver is killed as in a crash: clients see their connections reset. (On SIGTERM it stops
// listening at once but does not exit while any watch is open.)
func (c *Cluster) StopAPIServer(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.apiserver == nil {
		t.Fatal("stop kube-apiserver: not running")
	}
	err := c.apiserver.Kill()
	c.apiserver = nil
	if err != nil {
		t.Fatal(err)
	}
}

// StartAPIServer starts the apiserver again on the same port and waits until it is ready.
func (c *Cluster) StartAPIServer(t testing.TB) {
	t.Helper()
	if err := c.startAPIServer(); err != nil {
		t.Fatal(err)
	}
}

func (c *Cluster) startAPIServer() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.apiserver != nil {
		return errors.New("start kube-apiserver: already running")
	}
	p, err := startProcess(filepath.Join(c.BinDir, "kube-apiserver"), c.logPath("kube-apiserver"), c.apiserverArgs...)
	if err != nil {
		return err
	}
	if err := c.waitAPIServer(p); err != nil {
		return errors.Join(err, p.Kill())
	}
	c.apiserver = p
	return nil
}

// Config returns a new admin client configuration.
func (c *Cluster) Config() *rest.Config { return rest.CopyConfig(c.admin) }

// CAPEM is the cluster CA's certificate, PEM.
func (c *Cluster) CAPEM() []byte { return append([]byte(nil), c.pki.caCert...) }

// Clientset is Client for code without a test at hand.
func (c *Cluster) Clientset() (kubernetes.Interface, error) {
	cs, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		return nil, fmt.Errorf("create admin clientset: %w", err)
	}
	return cs, nil
}

// Client returns an admin clientset.
func (c *Cluster) Client(t testing.TB) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		t.Fatalf("create admin clientset: %v", err)
	}
	return cs
}

// Kubectl runs kubectl as admin and returns its standard output; it fails the test when kubectl
// fails. A --kubeconfig among args takes precedence over the admin one.
func (c *Cluster) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.TryKubectl(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TryKubectl is Kubectl for commands that may fail, e.g. requests that must be denied: the
// error carries kubectl's exit status and standard error.
func (c *Cluster) TryKubectl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	// --cache-dir keeps the discovery cache out of $HOME.
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "kubectl"),
		append([]string{"--cache-dir=" + filepath.Join(c.Dir, "kubectl-cache")}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// ClientKubeconfig writes a kubeconfig to path that authenticates as user in groups with a client
// certificate of the cluster CA, against server (Server when empty): the identity of a cluster
// component, e.g. "system:node:NAME" in "system:nodes" for a kubelet.
func (c *Cluster) ClientKubeconfig(path, user string, groups []string, server string) error {
	if server == "" {
		server = c.Server
	}
	cert, key, err := c.pki.leaf(pkix.Name{CommonName: user, Organization: groups}, x509.ExtKeyUsageClientAuth, nil, nil)
	if err != nil {
		return err
	}
	return writeKubeconfig(path, server, c.pki.caCert, &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key})
}

// ServingCert returns a serving certificate and key of the cluster CA for the given addresses, in
// PEM, e.g. for a kubelet's HTTPS server.
func (c *Cluster) ServingCert(name string, ips []net.IP) (cert, key []byte, err error) {
	return c.pki.leaf(pkix.Name{CommonName: name}, x509.ExtKeyUsageServerAuth, ips, []string{name})
}

// KubeconfigFor writes a kubeconfig that authenticates with token against server (Server when
// empty) and trusts the cluster CA; the file lives in t.TempDir().
func (c *Cluster) KubeconfigFor(t testing.TB, token, server string) string {
	t.Helper()
	if server == "" {
		server = c.Server
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := writeKubeconfig(path, server, c.pki.caCert, &clientcmdapi.AuthInfo{Token: token}); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeKubeconfig(path, server string, ca []byte, user *clientcmdapi.AuthInfo) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["kubetest"] = user
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "kubetest"}
	cfg.CurrentContext = "kubetest"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %q: %w", path, err)
	}
	return nil
}

// addr is the apiserver's host:port.
func (c *Cluster) addr() string { return strings.TrimPrefix(c.Server, "https://") }

func (c *Cluster) logPath(name string) string { return filepath.Join(c.Dir, name+".log") }

// stop ends both processes (apiserver first) and removes Dir.
func (c *Cluster) stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	if c.apiserver != nil {
		errs = append(errs, c.apiserver.Kill())
		c.apiserver = nil
	}
	if c.etcd != nil {
		errs = append(errs, c.etcd.Stop(stopTimeout))
		c.etcd = nil
	}
	if c.Dir != "" {
		errs = append(errs, os.RemoveAll(c.Dir))
	}
	return errors.Join(errs...)
}

func (c *Cluster) waitEtcd(url string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(etcdReadyTimeout)
	for {
		resp, err := client.Get(url + "/health")
		if err == nil {
			var body bytes.Buffer
			_, _ = body.ReadFrom(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(body.String(), `"health":"true"`) {
				return nil
			}
		}
		if c.etcd.Exited() || time.Now().After(deadline) {
			return fmt.Errorf("etcd not healthy at %s (%s); etcd log:\n%s", url, c.etcd.State(), testkit.Tail(c.logPath("etcd"), logTailLines))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitAPIServer waits for /readyz and for namespace "default": /readyz can pass before the
// apiserver's own bootstrap controller has created it.
func (c *Cluster) waitAPIServer(p *testkit.Proc) error {
	tlsConfig, err := rest.TLSConfigFor(c.admin)
	if err != nil {
		return fmt.Errorf("build admin TLS config: %w", err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(apiserverReadyTimeout)
	for _, path := range []string{"/readyz", "/api/v1/namespaces/default"} {
		for !answersOK(client, c.Server+path) {
			if p.Exited() || time.Now().After(deadline) {
				return fmt.Errorf("kube-apiserver not ready at %s%s (%s); kube-apiserver log:\n%s\netcd log:\n%s",
					c.Server, path, p.State(), testkit.Tail(c.logPath("kube-apiserver"), logTailLines), testkit.Tail(c.logPath("etcd"), logTailLines))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func answersOK(client *http.Client, url string) bool {
	resp, err := client.Get(url)
	if err != nil {
		return false
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

// binaries runs hack/build-kube.sh from the repository holding the test's working directory.
func binaries() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	script := ""
	for dir := wd; ; dir = filepath.Dir(dir) {
		if candidate := filepath.Join(dir, "hack", "build-kube.sh"); fileExists(candidate) {
			script = candidate
			break
		}
		if dir == filepath.Dir(dir) {
			return "", fmt.Errorf("find hack/build-kube.sh above %q: not found", wd)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(script)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("run %s: %w; last output:\n%s", script, err, testkit.LastLines(stderr.String(), logTailLines))
	}
	dir := strings.TrimSpace(stdout.String())
	for _, name := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if !fileExists(filepath.Join(dir, name)) {
			return "", fmt.Errorf("run %s: %q has no %s", script, dir, name)
		}
	}
	return dir, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find free loopback port: %w", err)
		}
		// Held open until all are chosen so none is handed out twice.
		defer func() { _ = ln.Close() }()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// startProcess starts a daemon of the cluster with its output appended to logPath.
func startProcess(bin, logPath string, args ...string) (*testkit.Proc, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", filepath.Base(bin), err)
	}
	defer func() { _ = logFile.Close() }()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	return testkit.Start(cmd)
}
