package deploy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ociLayout is an OCI image layout read from its tar: blobs by digest, and index.json.
type ociLayout struct {
	blobs map[string][]byte
	index ociIndex
}

type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform"`
}

type ociIndex struct {
	MediaType string          `json:"mediaType"`
	Manifests []ociDescriptor `json:"manifests"`
}

type ociManifest struct {
	MediaType string          `json:"mediaType"`
	Config    ociDescriptor   `json:"config"`
	Layers    []ociDescriptor `json:"layers"`
}

type ociConfig struct {
	Architecture string    `json:"architecture"`
	OS           string    `json:"os"`
	Created      time.Time `json:"created"`
	Config       struct {
		Entrypoint []string          `json:"Entrypoint"`
		Cmd        []string          `json:"Cmd"`
		User       string            `json:"User"`
		Labels     map[string]string `json:"Labels"`
	} `json:"config"`
}

func readLayout(t *testing.T, path string) ociLayout {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l := ociLayout{blobs: map[string][]byte{}}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case h.Name == "index.json":
			if err := json.Unmarshal(data, &l.index); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(h.Name, "blobs/sha256/") && h.Typeflag == tar.TypeReg:
			sum := sha256.Sum256(data)
			if got := hex.EncodeToString(sum[:]); got != strings.TrimPrefix(h.Name, "blobs/sha256/") {
				t.Fatalf("blob %s has digest %s", h.Name, got)
			}
			l.blobs["sha256:"+strings.TrimPrefix(h.Name, "blobs/sha256/")] = data
		}
	}
	return l
}

func (l ociLayout) decode(t *testing.T, d ociDescriptor, v any) {
	t.Helper()
	data, ok := l.blobs[d.Digest]
	if !ok || int64(len(data)) != d.Size {
		t.Fatalf("blob %s: missing or not %d bytes", d.Digest, d.Size)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decode %s: %v", d.Digest, err)
	}
}

// layerFiles lists a gzipped layer's entries as "name mode uid:gid mtime" and returns the
// content of the regular files.
func layerFiles(t *testing.T, blob []byte) ([]string, map[string][]byte) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var entries []string
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, h.Name+" "+os.FileMode(h.Mode).String()+" "+
			strconv.Itoa(h.Uid)+":"+strconv.Itoa(h.Gid)+" "+h.ModTime.UTC().Format(time.RFC3339))
		if h.Typeflag == tar.TypeReg {
			files[h.Name], _ = io.ReadAll(tr)
		}
	}
	return entries, files
}

// makeImage runs `make image` into dir and returns its stdout's last line: tar and digest.
func makeImage(t *testing.T, dir, version string) (tarPath, digest string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "make", "image", "IMAGE_OUT="+dir, "VERSION="+version, "IMAGE_TAGS="+version)
	cmd.Dir = repoRoot(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	f := strings.Fields(lines[len(lines)-1])
	if len(f) != 2 || !strings.HasPrefix(f[1], "sha256:") {
		t.Fatalf("make image printed %q last, want the tar and the digest", lines[len(lines)-1])
	}
	return f[0], f[1]
}

// TestMakeImage builds the image twice: same bytes and digest; an index of linux/amd64 and
// linux/arm64 whose images hold /agent alone, built by GOBUILD, with the Dockerfile's
// entrypoint, user and labels; and an SPDX SBOM describing the image by its digest.
func TestMakeImage(t *testing.T) {
	if m := regexp.MustCompile(`(?m)^\t.*\$\(GOBUILD\) -o \$\(IMAGE_OUT\)/image-rootfs/.*/agent \./cmd/agent;`).FindString(readFile(t, "Makefile")); m == "" {
		t.Fatal("Makefile: the image target does not build the agent with $(GOBUILD)")
	}
	const version = "v0.0.0-image-test"
	dir1, dir2 := t.TempDir(), t.TempDir()
	tar1, digest1 := makeImage(t, dir1, version)
	tar2, digest2 := makeImage(t, dir2, version)
	b1, _ := os.ReadFile(tar1)
	b2, _ := os.ReadFile(tar2)
	if digest1 != digest2 || !bytes.Equal(b1, b2) {
		t.Fatalf("two builds differ: %s (%d bytes) and %s (%d bytes)", digest1, len(b1), digest2, len(b2))
	}

	l := readLayout(t, tar1)
	if len(l.index.Manifests) != 1 || l.index.Manifests[0].Digest != digest1 ||
		l.index.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "ghcr.io/calico-prep/calico-prep:"+version ||
		l.index.Manifests[0].Annotations["io.containerd.image.name"] != "ghcr.io/calico-prep/calico-prep:"+version {
		t.Fatalf("index.json %+v: want the image index %s named ghcr.io/calico-prep/calico-prep:%s", l.index, digest1, version)
	}
	var idx ociIndex
	l.decode(t, l.index.Manifests[0], &idx)
	d := parseDockerfile(t)
	var platforms []string
	for _, m := range idx.Manifests {
		platforms = append(platforms, m.Platform.OS+"/"+m.Platform.Architecture)
		var man ociManifest
		l.decode(t, m, &man)
		var cfg ociConfig
		l.decode(t, man.Config, &cfg)
		if !slices.Equal(cfg.Config.Entrypoint, d.entrypoint) || cfg.Config.User != "0:0" || !cfg.Created.Equal(time.Unix(0, 0)) {
			t.Errorf("%s config: entrypoint %q user %q created %s; want the Dockerfile's %q, 0:0, the epoch", platforms[len(platforms)-1],
				cfg.Config.Entrypoint, cfg.Config.User, cfg.Created, d.entrypoint)
		}
		for _, label := range regexp.MustCompile(`org\.opencontainers\.image\.[a-z]+`).FindAllString(d.labels, -1) {
			if cfg.Config.Labels[label] == "" {
				t.Errorf("%s config lacks the Dockerfile's label %s", platforms[len(platforms)-1], label)
			}
		}
		if len(man.Layers) != 1 {
			t.Fatalf("%d layers, want 1", len(man.Layers))
		}
		entries, files := layerFiles(t, l.blobs[man.Layers[0].Digest])
		if want := []string{"agent -rwxr-xr-x 0:0 1970-01-01T00:00:00Z"}; !slices.Equal(entries, want) {
			t.Errorf("%s layer holds %q, want %q", cfg.Architecture, entries, want)
		}
		if cfg.Architecture == "amd64" {
			bin := filepath.Join(t.TempDir(), "agent")
			if err := os.WriteFile(bin, files["agent"], 0o755); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(bin, "version").Output(); err != nil || strings.TrimSpace(string(out)) != version {
				t.Errorf("the image's agent says %q, %v; want %s", out, err, version)
			}
			t.Logf("figure: linux/amd64 image: layer %d bytes compressed, agent %d bytes; image tar (both platforms) %d bytes; digest %s, the same in both builds",
				man.Layers[0].Size, len(files["agent"]), len(b1), digest1)
		}
	}
	if !slices.Equal(platforms, []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("platforms %q, want linux/amd64 and linux/arm64", platforms)
	}

	var sbom struct {
		SPDXVersion string `json:"spdxVersion"`
		Packages    []struct {
			SPDXID      string `json:"SPDXID"`
			Name        string `json:"name"`
			VersionInfo string `json:"versionInfo"`
			Checksums   []struct {
				Algorithm string `json:"algorithm"`
				Value     string `json:"checksumValue"`
			} `json:"checksums"`
		} `json:"packages"`
		Relationships []struct {
			Element, Type, Related string
		} `json:"relationships"`
	}
	if err := json.Unmarshal([]byte(readFileAbs(t, filepath.Join(dir1, "calico-prep.spdx.json"))), &sbom); err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, p := range sbom.Packages {
		names[p.Name] = p.VersionInfo
	}
	img := sbom.Packages[0]
	if sbom.SPDXVersion != "SPDX-2.3" || img.Name != "ghcr.io/calico-prep/calico-prep" || len(img.Checksums) != 1 ||
		"sha256:"+img.Checksums[0].Value != digest1 {
		t.Errorf("SBOM does not describe the image by its digest: %s %+v", sbom.SPDXVersion, img)
	}
	for _, mod := range []string{"github.com/calico-prep/calico-prep", "k8s.io/client-go", "github.com/godbus/dbus/v5", "github.com/vishvananda/netlink", "stdlib"} {
		if _, ok := names[mod]; !ok {
			t.Errorf("SBOM lists no package %s", mod)
		}
	}
	if !strings.HasPrefix(names["stdlib"], "go1.27") {
		t.Errorf("SBOM: stdlib %q, want the Go 1.27 the agent is built with", names["stdlib"])
	}
	sbom2 := readFileAbs(t, filepath.Join(dir2, "calico-prep.spdx.json"))
	if sbom2 != readFileAbs(t, filepath.Join(dir1, "calico-prep.spdx.json")) {
		t.Error("the two builds' SBOMs differ")
	}
}

func readFileAbs(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
