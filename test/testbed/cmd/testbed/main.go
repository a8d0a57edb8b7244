// Command testbed starts one sandboxed test node (see package testbed) for scripts, demos and
// manual work: it prints the node as JSON, keeps it until SIGTERM or SIGINT, then tears it
// down and leaves the host as it found it. It must run as root.
//
// Usage:
//
//	testbed up [--name demo] [--firewalld] [--networkmanager] [--calico]
//	           [--uplink ens33] [--uplink-addr 192.168.79.128/24] [--pod-cidr 10.65.128.0/24]
//	           [--state FILE] [--debug]
//
// The JSON carries the Node fields (name, netns, busAddress, dir, nmConfDir, firewalldDir,
// stateDir, logDir, uplink, uplinkAddr, gateway, tunlIsStandIn, pods) and the PIDs of the
// running daemons. With --state it is also written to FILE (atomically, once the node is
// up, so scripts can wait for the file) and FILE is removed at teardown. For example:
//
//	testbed up --name demo --firewalld --networkmanager --calico --state /tmp/demo.json &
//	while [ ! -s /tmp/demo.json ]; do sleep 0.1; done
//	export DBUS_SYSTEM_BUS_ADDRESS=$(jq -r .busAddress /tmp/demo.json)
//	busctl call org.fedoraproject.FirewallD1 /org/fedoraproject/FirewallD1 \
//	    org.fedoraproject.FirewallD1.zone addPort sssi "" 179 tcp 0
//	nsenter --net=$(jq -r .netns /tmp/demo.json) nft list ruleset
//	kill %1
//
// Exit status: 0 after a clean teardown, 1 when the node could not start or not be torn down
// completely, 2 for bad usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/calico-prep/calico-prep/test/testbed"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "up" {
		fmt.Fprintln(stderr, "usage: testbed up [--name NAME] [--firewalld] [--networkmanager] [--calico] [--uplink NAME] [--uplink-addr CIDR] [--pod-cidr CIDR] [--state FILE] [--debug]")
		return 2
	}
	var opts testbed.Options
	var state string
	fs := flag.NewFlagSet("testbed up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&opts.Name, "name", "node", "node name (a lower-case DNS label)")
	fs.BoolVar(&opts.Firewalld, "firewalld", false, "start firewalld in the node")
	fs.BoolVar(&opts.NetworkManager, "networkmanager", false, "start NetworkManager in the node")
	fs.BoolVar(&opts.Calico, "calico", false, "create Calico's links (cali veth with a pod, tunl0, vxlan.calico)")
	fs.StringVar(&opts.Uplink, "uplink", "ens33", "uplink name")
	fs.Func("uplink-addr", "uplink address with prefix (default 192.168.79.128/24)", prefixFlag(&opts.UplinkAddr))
	fs.Func("pod-cidr", "network for tunl0's and the pods' addresses (default 10.65.<last byte of the uplink address>.0/24)", prefixFlag(&opts.PodCIDR))
	fs.StringVar(&state, "state", "", "also write the node's JSON to this file while it is up")
	fs.BoolVar(&opts.Debug, "debug", false, "raise the daemons' log levels")
	fs.Usage = func() {} // a bad flag gets its one-line error only
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "testbed up: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := opts.Validate(); err != nil {
		fmt.Fprintf(stderr, "testbed up: %v\n", err)
		return 2
	}
	if state != "" {
		if fi, err := os.Stat(filepath.Dir(state)); err != nil || !fi.IsDir() {
			fmt.Fprintf(stderr, "testbed up: invalid --state %q: its directory does not exist\n", state)
			return 2
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	n, err := testbed.Start(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "testbed up: %v\n", err)
		return 1
	}
	code := 0
	if err := announce(n, state, stdout); err != nil {
		fmt.Fprintf(stderr, "testbed up: %v\n", err)
		code = 1
	} else {
		<-ctx.Done()
	}
	dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.Down(dctx); err != nil {
		fmt.Fprintf(stderr, "testbed up: %v\n", err)
		code = 1
	}
	if state != "" {
		if err := os.Remove(state); err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(stderr, "testbed up: %v\n", err)
			code = 1
		}
	}
	return code
}

func prefixFlag(dst *netip.Prefix) func(string) error {
	return func(s string) error {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("want an address with prefix length, e.g. 192.168.79.128/24")
		}
		*dst = p
		return nil
	}
}

// announce prints the node and, with a state file, writes it there atomically.
func announce(n *testbed.Node, state string, stdout io.Writer) error {
	pids := map[string]int{}
	for _, d := range []string{"dbus", "firewalld", "NetworkManager"} {
		if pid := n.PID(d); pid != 0 {
			pids[d] = pid
		}
	}
	b, err := json.MarshalIndent(struct {
		*testbed.Node
		PIDs map[string]int `json:"pids"`
	}{n, pids}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode node: %w", err)
	}
	b = append(b, '\n')
	if state != "" {
		if err := writeAtomic(state, b); err != nil {
			return err
		}
	}
	_, err = stdout.Write(b)
	return err
}

func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write state file %q: %w", path, err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write state file %q: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write state file %q: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write state file %q: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write state file %q: %w", path, err)
	}
	return nil
}
