package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"strings"
	"testing"
)

func runArgs(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut, func(k string) string { return env[k] })
	code = exitCode(err, &errOut)
	return out.String(), errOut.String(), code
}

// Bad input exits 2 with one line naming the flag or variable and the value, before anything
// on the host is opened: these run without netlink or D-Bus being touched.
func TestBadInputExitsTwoWithOneLine(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{name: "no command", args: nil, want: "no command given"},
		{name: "unknown command", args: []string{"prepare"}, want: `unknown command "prepare"`},
		{name: "bad CIDR", args: []string{"check", "--pod-cidr=10.0.0.0/40"}, want: `--pod-cidr: invalid CIDR "10.0.0.0/40"`},
		{name: "bad regex", args: []string{"run", "--once", "--ip-autodetection-method=interface=eth[0"}, want: `--ip-autodetection-method: invalid regex "eth[0"`},
		{name: "bad env", env: map[string]string{"IP_AUTODETECTION_METHOD": "nearest"}, args: []string{"check"}, want: `IP_AUTODETECTION_METHOD: unknown autodetection method "nearest"`},
		{name: "bad port", args: []string{"run", "--firewalld-extra-ports=99999/tcp"}, want: `--firewalld-extra-ports: port out of range in "99999/tcp"`},
		{name: "bad mode", args: []string{"cleanup", "--networkmanager=sometimes"}, want: `--networkmanager: unknown mode "sometimes"`},
		{name: "bad path", args: []string{"check", "--host-root=/no/such/root"}, want: `--host-root: "/no/such/root"`},
		{name: "negative interval", args: []string{"run", "--resync-interval=-5m"}, want: `--resync-interval: invalid duration "-5m"`},
		{name: "unparsable address", args: []string{"run", "--metrics-bind-address=::9476:x"}, want: `--metrics-bind-address: invalid address "::9476:x"`},
		{name: "bad output", args: []string{"check", "-o", "yaml"}, want: `-o: unknown output format "yaml"`},
		{name: "bad autodetect method", args: []string{"autodetect", "--method=cidr=10.0.0.0"}, want: `--method: invalid CIDR "10.0.0.0"`},
		{name: "bad ip version", args: []string{"autodetect", "--ip-version=5"}, want: `--ip-version: unknown IP version 5`},
		{name: "run-only flag on check", args: []string{"check", "--once"}, want: "flag provided but not defined: -once"},
		{name: "unknown check area", args: []string{"check", "--disable-checks=kernal,nonsense/x"},
			want: `--disable-checks: unknown area or check "kernal": valid areas are kernel, autodetect, cidr, links, networkmanager, firewalld,`},
		{name: "unknown area of a check name", args: []string{"run", "--once", "--disable-checks=links,nonsense/x"},
			want: `--disable-checks: unknown area or check "nonsense/x": valid areas are calico, kernel,`},
		{name: "unknown check name", args: []string{"cleanup", "--disable-checks=kernel/module/xt_sett"},
			want: `--disable-checks: unknown check "kernel/module/xt_sett": valid areas are kernel,`},
		{name: "check of a port this configuration does not open", args: []string{"check", "--bgp=false", "--encapsulation=vxlan", "--disable-checks=firewalld/port-179-tcp"},
			want: `--disable-checks: unknown check "firewalld/port-179-tcp": valid areas are kernel, autodetect, cidr, links, networkmanager, firewalld, networkd; the firewalld checks of this configuration are firewalld/running, firewalld/port-4789-udp,`},
		{name: "positional argument", args: []string{"check", "extra"}, want: `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"NODE_NAME": "n1"}
			for k, v := range tt.env {
				env[k] = v
			}
			_, stderr, code := runArgs(t, env, tt.args...)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitUsage, stderr)
			}
			last := lastLine(stderr)
			if !strings.HasPrefix(last, "agent: "+tt.want) {
				t.Fatalf("last line %q, want it to start with %q", last, "agent: "+tt.want)
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func TestVersionAndHelp(t *testing.T) {
	if out, _, code := runArgs(t, nil, "version"); code != 0 || strings.TrimSpace(out) != version {
		t.Fatalf("version: %q exit %d", out, code)
	}
	if _, _, code := runArgs(t, nil, "check", "-h"); code != 0 {
		t.Fatalf("check -h exit %d, want 0", code)
	}
}

// TestREADMEDocumentsEveryFlag keeps the configuration reference true.
func TestREADMEDocumentsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	bindHostFlags(fs, true)
	fs.VisitAll(func(f *flag.Flag) {
		name := "--" + f.Name
		if len(f.Name) == 1 {
			name = "-" + f.Name
		}
		if !bytes.Contains(readme, []byte("`"+name+"`")) {
			t.Errorf("README.md does not document %s", name)
		}
	})
}
