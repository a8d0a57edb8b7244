package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/calico-prep/calico-prep/test/kubetest"
)

var kube kubetest.Shared

func TestMain(m *testing.M) {
	if spec := os.Getenv(containerSpecEnv); spec != "" {
		containerInit(spec) // this process is a container of a test (container_test.go)
	}
	os.Exit(kube.Run(m))
}

// kubeVersion is the Kubernetes version helm renders for; the test apiserver's.
const kubeVersion = "1.37.2"

// repoRoot is the repository holding this file.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("find repository root: no caller information")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// tool runs a hack/ script that builds a tool into the cache and prints its path.
var tools sync.Map // script → path

func toolPath(t testing.TB, script string) string {
	t.Helper()
	if p, ok := tools.Load(script); ok {
		return p.(string)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(repoRoot(t), "hack", script))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("run hack/%s: %v\n%s", script, err, stderr.String())
	}
	p := strings.TrimSpace(stdout.String())
	tools.Store(script, p)
	return p
}

func helmBin(t testing.TB) string { return filepath.Join(toolPath(t, "build-kube.sh"), "helm") }

func kubectlBin(t testing.TB) string {
	return filepath.Join(toolPath(t, "build-kube.sh"), "kubectl")
}

// run runs a command in the repository root and returns its standard output.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := tryRun(t, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func tryRun(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Dir = repoRoot(t)
	// helm keeps caches and repositories under $HOME unless told otherwise.
	tmp := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+tmp, "HELM_CONFIG_HOME="+tmp, "HELM_DATA_HOME="+tmp)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), errors.New(filepath.Base(name) + " " + strings.Join(args, " ") + ": " + err.Error() + ": " + strings.TrimSpace(stderr.String()))
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Logf("%s %s: stderr: %s", filepath.Base(name), strings.Join(args, " "), s)
	}
	return stdout.String(), nil
}

// kustomize renders a kustomization directory (relative to the repository root).
func kustomize(t testing.TB, dir string) string {
	t.Helper()
	return run(t, kubectlBin(t), "kustomize", dir)
}

// helmTemplate renders the chart as release calico-prep in namespace calico-prep.
func helmTemplate(t testing.TB, args ...string) string {
	t.Helper()
	return run(t, helmBin(t), append([]string{"template", "calico-prep", "deploy/helm/calico-prep",
		"--namespace", "calico-prep", "--kube-version", kubeVersion}, args...)...)
}

// objects splits a multi-document YAML stream into objects, skipping empty documents.
func objects(t testing.TB, manifest string) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("decode manifest: %v", err)
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

func find(t testing.TB, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %q among %d objects", kind, name, len(objs))
	return nil
}

// decodeStrict decodes o into a typed object, failing on any field the type does not have.
func decodeStrict(t testing.TB, o any, into any) {
	t.Helper()
	data, err := yaml.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("strict decode into %T: %v", into, err)
	}
}

// daemonSet returns the typed DaemonSet named name from a manifest.
func daemonSet(t testing.TB, manifest, name string) *appsv1.DaemonSet {
	t.Helper()
	var ds appsv1.DaemonSet
	decodeStrict(t, find(t, objects(t, manifest), "DaemonSet", name).Object, &ds)
	return &ds
}

// writeTemp writes data into a file in a test directory and returns its path.
func writeTemp(t testing.TB, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
