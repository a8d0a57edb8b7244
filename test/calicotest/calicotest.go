// Package calicotest installs Calico's own CustomResourceDefinitions (v3.32.1, both API groups
// and the tigera-operator's) into a test cluster, from the upstream artifacts kept beside the
// repository for tests. They are never copied into the product.
//
// The directory holding calico-v3.32.1/ is $CALICO_PREP_UPSTREAM, else ../shared/upstream next
// to the repository; a test that needs them fails, naming both, when it is absent.
package calicotest

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/calico-prep/calico-prep/test/kubetest"
)

// The manifests of Calico v3.32.1 with the CRDs.
const (
	// V1 is crd.projectcalico.org/v1, as calico.yaml installs it.
	V1 = "crds.yaml"
	// V3 is projectcalico.org/v3 served as CRDs (Calico's "v3 CRDs" mode); the file also holds
	// a whole Calico install, of which only the CRDs are taken.
	V3 = "calico-v3-crds.yaml"
	// Operator holds the tigera-operator's CRDs (and Calico's crd.projectcalico.org ones).
	Operator = "operator-crds.yaml"
)

// EnvUpstream overrides where the upstream artifacts are.
const EnvUpstream = "CALICO_PREP_UPSTREAM"

// Dir returns the directory of Calico v3.32.1's artifacts, failing the test when it is absent.
func Dir(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvUpstream)
	if base == "" {
		root, err := moduleRoot()
		if err != nil {
			t.Fatal(err)
		}
		base = filepath.Join(root, "..", "shared", "upstream")
	}
	dir := filepath.Join(base, "calico-v3.32.1")
	if _, err := os.Stat(filepath.Join(dir, V1)); err != nil {
		t.Fatalf("Calico v3.32.1's CRDs are not at %s (%v): set %s to the directory that holds calico-v3.32.1/", dir, err, EnvUpstream)
	}
	return dir
}

// CRDs returns the CustomResourceDefinitions of file (V1, V3 or Operator) as one YAML stream;
// with names, only those (e.g. "installations.operator.tigera.io").
func CRDs(t testing.TB, file string, names ...string) string {
	t.Helper()
	docs, _ := crds(t, file, names...)
	return strings.Join(docs, "\n---")
}

// crds returns the CRDs' YAML documents and the collection path of each served version.
func crds(t testing.TB, file string, names ...string) (docs, paths []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(Dir(t), file))
	if err != nil {
		t.Fatal(err)
	}
	for doc := range strings.SplitSeq(string(b), "\n---") {
		var obj struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Spec struct {
				Group string `json:"group"`
				Names struct {
					Plural string `json:"plural"`
				} `json:"names"`
				Versions []struct {
					Name   string `json:"name"`
					Served bool   `json:"served"`
				} `json:"versions"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("parse %s: %v", file, err)
		}
		if obj.Kind != "CustomResourceDefinition" || len(names) > 0 && !slices.Contains(names, obj.Metadata.Name) {
			continue
		}
		docs = append(docs, doc)
		for _, v := range obj.Spec.Versions {
			if v.Served {
				paths = append(paths, "/apis/"+obj.Spec.Group+"/"+v.Name+"/"+obj.Spec.Names.Plural)
			}
		}
	}
	if len(docs) == 0 {
		t.Fatalf("%s holds no CustomResourceDefinition named %v", file, names)
	}
	return docs, paths
}

// Install applies the CRDs of file (see CRDs) to c and waits until they are established and
// their resources are served from the apiserver's watch cache (which answers 429 while it
// initializes, just after a CRD is created).
func Install(t testing.TB, c *kubetest.Cluster, file string, names ...string) {
	t.Helper()
	docs, paths := crds(t, file, names...)
	path := filepath.Join(tempDir(t), "crds.yaml")
	if err := os.WriteFile(path, []byte(strings.Join(docs, "\n---")), 0o644); err != nil {
		t.Fatal(err)
	}
	// Server-side: the operator's CRDs are too large for kubectl's last-applied annotation.
	out := c.Kubectl(t, "apply", "--server-side", "--force-conflicts", "-f", path, "-o", "name")
	crds := strings.Fields(out)
	// kubectl wait fails on a CRD whose status the apiserver has not written yet: try again.
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := c.TryKubectl(t, append([]string{"wait", "--for=condition=Established", "--timeout=60s"}, crds...)...)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, p := range paths {
		for {
			_, err := c.TryKubectl(t, "get", "--raw", p+"?resourceVersion=0&limit=1")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// Uninstall deletes the CRDs of file (see CRDs) and with them every object of their kinds; it
// does not wait until they are gone.
func Uninstall(t testing.TB, c *kubetest.Cluster, file string, names ...string) {
	t.Helper()
	path := filepath.Join(tempDir(t), "crds.yaml")
	if err := os.WriteFile(path, []byte(CRDs(t, file, names...)), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Kubectl(t, "delete", "--wait=false", "--ignore-not-found", "-f", path)
}

func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		if dir == filepath.Dir(dir) {
			return "", errors.New("find the module root: no go.mod above " + wd)
		}
	}
}

// Apply applies manifest (YAML) to c as admin.
func Apply(t testing.TB, c *kubetest.Cluster, manifest string) {
	t.Helper()
	f, err := os.CreateTemp(tempDir(t), "obj-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(manifest); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	c.Kubectl(t, "apply", "--server-side", "--force-conflicts", "--field-manager=test", "-f", f.Name())
}

// tempDir is a directory removed at cleanup whose path holds no comma: kubectl takes a comma
// in -f as a list of paths, and t.TempDir() names directories after (sub)tests.
func tempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "calicotest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
