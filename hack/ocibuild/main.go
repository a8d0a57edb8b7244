// Command ocibuild packs root filesystem directories, one per platform, into a multi-platform OCI
// image without a container engine and without pulling anything: the base is empty and holds
// exactly the files of the directories. The output is an OCI image layout as one tar file, the
// format `ctr images import`, `skopeo copy oci-archive:` and `podman load` read. The same inputs
// always give the same bytes: entries are sorted, owned by 0:0, dated SOURCE_DATE_EPOCH (or 0),
// and the image configs are dated the same.
//
// Usage:
//
//	ocibuild -o OUT.tar -platform OS/ARCH[/VARIANT]=DIR [-platform …] -name REF [-name …]
//	         [-entrypoint JSON] [-cmd JSON] [-user U] [-workdir DIR] [-env K=V …] [-label K=V …]
//	         [-sbom OUT.spdx.json] [-owners]
//
//	-o          the OCI layout tar to write (replaced atomically)
//	-platform   a platform and the directory holding its root filesystem, one layer each;
//	            repeat for a multi-platform index
//	-name       a full image reference (registry/repository:tag); each becomes an entry of
//	            index.json annotated with org.opencontainers.image.ref.name and
//	            io.containerd.image.name, so `ctr -n k8s.io images import OUT.tar` names the
//	            image without --base-name
//	-entrypoint, -cmd   JSON arrays, e.g. '["/agent","run"]'
//	-user, -workdir     as in the image config ("0:0", "/")
//	-env, -label        repeatable K=V; labels go on every image config and on the index
//	-owners     keep the files' numeric owners in the layers (default: everything 0:0), for an
//	            image whose non-root user must own what the directory gave it
//	-sbom       also write an SPDX 2.3 JSON document describing the image by its index digest
//	            and every Go binary in the directories (module, dependencies, Go version, read
//	            from the binaries' build information)
//
// It prints the digest of the image index, which names the image whatever its tags.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "ocibuild:", err)
		os.Exit(2)
	}
	digest, err := run(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ocibuild:", err)
		os.Exit(1)
	}
	fmt.Println(digest)
}

// config is what one invocation builds.
type config struct {
	out        string
	sbom       string
	platforms  []platformDir
	names      []string
	entrypoint []string
	cmd        []string
	user       string
	workdir    string
	env        []string
	labels     map[string]string
	created    time.Time
	owners     bool
}

type platformDir struct {
	os, arch, variant string
	dir               string
}

func (p platformDir) String() string {
	s := p.os + "/" + p.arch
	if p.variant != "" {
		s += "/" + p.variant
	}
	return s
}

type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("ocibuild", flag.ContinueOnError)
	var cfg config
	var platforms, names, env, labels repeated
	var entrypoint, cmd string
	fs.StringVar(&cfg.out, "o", "", "OCI layout tar to write")
	fs.StringVar(&cfg.sbom, "sbom", "", "SPDX JSON document to write")
	fs.Var(&platforms, "platform", "OS/ARCH[/VARIANT]=DIR, repeatable")
	fs.Var(&names, "name", "full image reference, repeatable")
	fs.StringVar(&entrypoint, "entrypoint", "", "entrypoint as a JSON array")
	fs.StringVar(&cmd, "cmd", "", "command as a JSON array")
	fs.StringVar(&cfg.user, "user", "", "user[:group]")
	fs.StringVar(&cfg.workdir, "workdir", "", "working directory")
	fs.Var(&env, "env", "K=V, repeatable")
	fs.Var(&labels, "label", "K=V, repeatable")
	fs.BoolVar(&cfg.owners, "owners", false, "keep the files' numeric owners in the layers")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.out == "" {
		return cfg, errors.New("-o: required")
	}
	if len(platforms) == 0 {
		return cfg, errors.New("-platform: at least one required")
	}
	seen := map[string]bool{}
	for _, p := range platforms {
		spec, dir, ok := strings.Cut(p, "=")
		parts := strings.Split(spec, "/")
		if !ok || dir == "" || len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
			return cfg, fmt.Errorf("-platform %q: want OS/ARCH[/VARIANT]=DIR", p)
		}
		pd := platformDir{os: parts[0], arch: parts[1], dir: dir}
		if len(parts) == 3 {
			pd.variant = parts[2]
		}
		if seen[pd.String()] {
			return cfg, fmt.Errorf("-platform %q: platform given twice", p)
		}
		seen[pd.String()] = true
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return cfg, fmt.Errorf("-platform %q: %q is not a directory", p, dir)
		}
		cfg.platforms = append(cfg.platforms, pd)
	}
	if len(names) == 0 {
		return cfg, errors.New("-name: at least one required")
	}
	for _, n := range names {
		if err := checkReference(n); err != nil {
			return cfg, fmt.Errorf("-name %q: %w", n, err)
		}
	}
	cfg.names = names
	for _, j := range []struct {
		flag string
		in   string
		out  *[]string
	}{{"-entrypoint", entrypoint, &cfg.entrypoint}, {"-cmd", cmd, &cfg.cmd}} {
		if j.in == "" {
			continue
		}
		if err := json.Unmarshal([]byte(j.in), j.out); err != nil || len(*j.out) == 0 {
			return cfg, fmt.Errorf("%s %q: want a non-empty JSON array of strings", j.flag, j.in)
		}
	}
	for _, e := range env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return cfg, fmt.Errorf("-env %q: want K=V", e)
		}
	}
	cfg.env = env
	cfg.labels = map[string]string{}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return cfg, fmt.Errorf("-label %q: want K=V", l)
		}
		cfg.labels[k] = v
	}
	cfg.created = time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil || sec < 0 {
			return cfg, fmt.Errorf("SOURCE_DATE_EPOCH %q: want seconds since 1970", s)
		}
		cfg.created = time.Unix(sec, 0).UTC()
	}
	cfg.out = filepath.Clean(cfg.out)
	return cfg, nil
}

// checkReference accepts registry/repository:tag, the form a runtime stores images under.
func checkReference(ref string) error {
	slash := strings.IndexByte(ref, '/')
	colon := strings.LastIndexByte(ref, ':')
	switch {
	case slash <= 0:
		return errors.New("want a full reference, registry/repository:tag")
	case colon < slash || colon == len(ref)-1:
		return errors.New("want a tag (…:tag)")
	case strings.ContainsAny(ref, " \t@") || strings.ToLower(ref[:colon]) != ref[:colon]:
		return errors.New("want a lower-case repository and no digest")
	}
	return nil
}
