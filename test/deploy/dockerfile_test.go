package deploy

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dockerfile is what the tests read from the Dockerfile.
type dockerfile struct {
	froms      []string // FROM lines, in order
	args       map[string]string
	build      string // the RUN line that builds the agent, without RUN
	entrypoint []string
	labels     string
}

// parseDockerfile reads the Dockerfile, joining continuation lines.
func parseDockerfile(t testing.TB) dockerfile {
	t.Helper()
	text := strings.ReplaceAll(readFile(t, "Dockerfile"), "\\\n", " ")
	d := dockerfile{args: map[string]string{}}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		instr, rest, _ := strings.Cut(line, " ")
		switch instr {
		case "FROM":
			d.froms = append(d.froms, rest)
		case "ARG":
			if k, v, ok := strings.Cut(rest, "="); ok {
				d.args[k] = v
			}
		case "RUN":
			if strings.Contains(rest, "go build") {
				if d.build != "" {
					t.Fatal("Dockerfile: two go build lines")
				}
				d.build = rest
			}
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &d.entrypoint); err != nil {
				t.Fatalf("Dockerfile: ENTRYPOINT %s: want the exec form: %v", rest, err)
			}
		case "LABEL":
			d.labels += rest + " "
		}
	}
	if d.build == "" {
		t.Fatal("Dockerfile: no RUN line with go build")
	}
	return d
}

// makeGOBUILD is the Makefile's GOBUILD line with its version variable spelled as the
// Dockerfile's.
func makeGOBUILD(t testing.TB) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^GOBUILD = (.+)$`).FindStringSubmatch(readFile(t, "Makefile"))
	if m == nil {
		t.Fatal("Makefile: no GOBUILD line")
	}
	return strings.ReplaceAll(m[1], "$(VERSION)", "${VERSION}")
}

// TestDockerfile checks the image's shape: a Go toolchain stage, a distroless runtime, the
// agent as `/agent run`, OCI labels.
func TestDockerfile(t *testing.T) {
	d := parseDockerfile(t)
	if len(d.froms) != 2 || !strings.HasPrefix(d.froms[0], "golang:${GO_VERSION}") ||
		!strings.HasPrefix(d.froms[1], "gcr.io/distroless/static") {
		t.Errorf("stages %q: want golang:${GO_VERSION} then gcr.io/distroless/static", d.froms)
	}
	if !regexp.MustCompile(`^1\.27\.\d+$`).MatchString(d.args["GO_VERSION"]) {
		t.Errorf("ARG GO_VERSION=%q: want Go 1.27.x, the toolchain with the standard library fixes", d.args["GO_VERSION"])
	}
	if !slices.Equal(d.entrypoint, []string{"/agent", "run"}) {
		t.Errorf("ENTRYPOINT %q, want [/agent run]", d.entrypoint)
	}
	for _, l := range []string{"title", "description", "source", "version"} {
		if !strings.Contains(d.labels, "org.opencontainers.image."+l+"=") {
			t.Errorf("no OCI label org.opencontainers.image.%s", l)
		}
	}
}

// TestDockerfileBuildsTheTestedBinary runs the Dockerfile's build line here (no container
// engine runs on this machine): it must be the Makefile's GOBUILD, the one the tests use, and
// give a static, stripped, path-free binary that reports the version it was given.
func TestDockerfileBuildsTheTestedBinary(t *testing.T) {
	d := parseDockerfile(t)
	const out = "-o /out/agent ./cmd/agent"
	if want := makeGOBUILD(t) + " " + out; d.build != want {
		t.Fatalf("Dockerfile builds with\n  %s\nthe Makefile with\n  %s", d.build, want)
	}
	bin := buildAgentWithDockerfile(t)

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary has a %v segment: it is not static", p.Type)
		}
	}
	for _, s := range f.Sections {
		if s.Name == ".symtab" || strings.HasPrefix(s.Name, ".debug_") || s.Name == ".zdebug_info" {
			t.Errorf("binary has section %s: not stripped (-s -w)", s.Name)
		}
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(root+"/pkg/")) {
		t.Errorf("binary holds the build path %s: not built with -trimpath", root)
	}
	got, err := exec.Command(bin, "version").Output()
	if err != nil || strings.TrimSpace(string(got)) != dockerfileTestVersion {
		t.Errorf("agent version: %q, %v; want %q", got, err, dockerfileTestVersion)
	}
}

const dockerfileTestVersion = "v0.0.0-dockerfile-test"

// buildAgentWithDockerfile runs the Dockerfile's RUN go build line in the repository, with the
// output moved from /out/agent into a test directory, and returns the binary.
func buildAgentWithDockerfile(t testing.TB) string {
	t.Helper()
	d := parseDockerfile(t)
	bin := filepath.Join(t.TempDir(), "agent")
	cmd := exec.CommandContext(t.Context(), "sh", "-c", strings.Replace(d.build, "/out/agent", bin, 1))
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "VERSION="+dockerfileTestVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", d.build, err, out)
	}
	return bin
}
