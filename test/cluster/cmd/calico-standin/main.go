// Command calico-standin plays Calico's images in the test cluster, where quay.io cannot be
// reached: imported as quay.io/calico/node and quay.io/calico/cni, it answers every command
// calico.yaml runs in them and does to the node what matters to calico-prep, nothing more.
//
// As /bin/calico-node with no arguments (calico-node's container) it does what calico-node does
// when it starts: writes NODENAME to /var/lib/calico/nodename, creates the tunnel device of the
// pool's encapsulation (CALICO_IPV4POOL_VXLAN Always or CrossSubnet: vxlan.calico, VNI 4096 on
// UDP 4789 over the node's address; else CALICO_IPV4POOL_IPIP: tunl0, an ipip device, or a TUN
// device of that name where the kernel has no ipip driver) with an address of the pool, and
// a cali veth routed to a "workload" address whose peer sits in a network namespace of its own,
// annotates its Node with projectcalico.org/IPv4Address and projectcalico.org/IPv4IPIPTunnelAddr
// through the API (the way calico-node stores them, on nodes/status), then stays up until
// SIGTERM. It prints each step.
//
// The probes' and init containers' commands (-felix-ready, -bird-ready, -felix-live, -bird-live,
// -init, -shutdown; /opt/cni/bin/calico-ipam -upgrade; /opt/cni/bin/install) succeed; the
// readiness probe only once the links and the nodename file exist. install writes no CNI
// configuration: there is no CNI plugin behind it, and a node must stay NotReady without one.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	nodenameFile = "/var/lib/calico/nodename"
	saDir        = "/var/run/secrets/kubernetes.io/serviceaccount"
	// caliVeth is the name calico's CNI plugin would give a workload's veth.
	caliVeth = "cali5a1b2c3d4e6"
	caliMAC  = "ee:ee:ee:ee:ee:ee"
)

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	switch {
	case name == "calico-ipam", name == "install":
		fmt.Printf("calico-standin %s %s: nothing to do (no CNI plugin in the stand-in)\n", name, strings.Join(args, " "))
	case len(args) == 0:
		if err := run(); err != nil {
			fmt.Fprintln(os.Stderr, "calico-standin:", err)
			os.Exit(1)
		}
	case slices.Contains(args, "-felix-ready"):
		if err := ready(); err != nil {
			fmt.Fprintln(os.Stderr, "not ready:", err)
			os.Exit(1)
		}
	default: // -init, -felix-live, -bird-live, -shutdown
	}
}

func ready() error {
	if _, err := os.Stat(nodenameFile); err != nil {
		return err
	}
	for _, l := range []string{tunnelName(), caliVeth} {
		if _, err := netlink.LinkByName(l); err != nil {
			return fmt.Errorf("link %q: %w", l, err)
		}
	}
	return nil
}

func run() error {
	node := os.Getenv("NODENAME")
	if node == "" {
		return errors.New("NODENAME is not set")
	}
	nodeIP, err := firstFound()
	if err != nil {
		return err
	}
	fmt.Printf("node %s, address %s\n", node, nodeIP)
	pool := netip.MustParsePrefix("192.168.0.0/16")
	if s := os.Getenv("CALICO_IPV4POOL_CIDR"); s != "" {
		if pool, err = netip.ParsePrefix(s); err != nil {
			return fmt.Errorf("CALICO_IPV4POOL_CIDR %q: %w", s, err)
		}
	}
	// One /26 block per node, picked from the node address as calico-ipam would pick a free one.
	b := nodeIP.Addr().As4()
	base := binary.BigEndian.Uint32(pool.Masked().Addr().AsSlice()) + uint32(b[3])<<6
	tunnelAddr := addrOf(base + 1)
	workload := addrOf(base + 2)

	if err := os.MkdirAll(filepath.Dir(nodenameFile), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(nodenameFile, []byte(node), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", nodenameFile, err)
	}
	fmt.Println("wrote", nodenameFile)
	if err := makeTunnel(tunnelName(), tunnelAddr, nodeIP.Addr()); err != nil {
		return err
	}
	peerNS, err := makeWorkload(workload)
	if err != nil {
		return err
	}
	defer peerNS.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	annotations := map[string]string{"projectcalico.org/IPv4Address": nodeIP.String()}
	if tunnelName() == "tunl0" {
		annotations["projectcalico.org/IPv4IPIPTunnelAddr"] = tunnelAddr.String()
	} else {
		annotations["projectcalico.org/IPv4VXLANTunnelAddr"] = tunnelAddr.String()
	}
	for {
		err := annotate(ctx, node, annotations)
		if err == nil {
			break
		}
		fmt.Fprintln(os.Stderr, "annotate node, retrying:", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
	fmt.Println("annotated node", node)
	<-ctx.Done()
	fmt.Println("stopping")
	return nil
}

func addrOf(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// firstFound is Calico's default autodetection, reduced: the first global IPv4 address on a link
// whose name calico-node does not skip.
func firstFound() (netip.Prefix, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("list links: %w", err)
	}
	skip := []string{"lo", "docker", "cbr", "dummy", "virbr", "lxcbr", "veth", "cali", "tunl", "flannel",
		"kube-ipvs", "cni", "vxlan.calico", "wireguard.cali", "nodelocaldns", "podman", "peer"}
	for _, iface := range ifaces {
		if slices.ContainsFunc(skip, func(p string) bool { return strings.HasPrefix(iface.Name, p) }) {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("addresses of %q: %w", iface.Name, err)
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && p.Addr().IsGlobalUnicast() {
				return p, nil
			}
		}
	}
	return netip.Prefix{}, errors.New("no IPv4 address found")
}

// tunnelName is the device of the pool's encapsulation, from calico-node's own variables.
func tunnelName() string {
	switch os.Getenv("CALICO_IPV4POOL_VXLAN") {
	case "Always", "CrossSubnet":
		return "vxlan.calico"
	}
	return "tunl0"
}

// makeTunnel creates the tunnel device as Calico has it: vxlan.calico (VNI 4096, UDP 4789, MTU
// 1450, over the node's address), or tunl0 (ipip, or TUN where ipip is missing, MTU 1480).
func makeTunnel(name string, addr, nodeIP netip.Addr) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var add netlink.Link
		if name == "vxlan.calico" {
			add = &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: 1450}, VxlanId: 4096, Port: 4789,
				SrcAddr: nodeIP.AsSlice()}
		} else {
			add = &netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: 1480}}
		}
		if err := netlink.LinkAdd(add); err != nil {
			if name != "tunl0" {
				return fmt.Errorf("create %s: %w", name, err)
			}
			fmt.Printf("no ipip (%v): %s is a TUN device instead\n", err, name)
			tun := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: 1480}, Mode: netlink.TUNTAP_MODE_TUN}
			if err := netlink.LinkAdd(tun); err != nil {
				return fmt.Errorf("create %s: %w", name, err)
			}
		}
		if link, err = netlink.LinkByName(name); err != nil {
			return fmt.Errorf("find %s: %w", name, err)
		}
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := netlink.AddrReplace(link, a); err != nil {
		return fmt.Errorf("address %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up %s: %w", name, err)
	}
	fmt.Printf("%s up with %s\n", name, addr)
	return nil
}

// makeWorkload creates a cali veth whose peer lives in a new network namespace, routed as
// Calico routes a workload. The namespace lives as long as the returned handle.
func makeWorkload(addr netip.Addr) (*os.File, error) {
	ns, err := newNetNS()
	if err != nil {
		return nil, err
	}
	if old, err := netlink.LinkByName(caliVeth); err == nil {
		_ = netlink.LinkDel(old) // from a previous run of this container
	}
	mac, _ := net.ParseMAC(caliMAC)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: caliVeth, HardwareAddr: mac}, PeerName: "eth0",
		PeerNamespace: netlink.NsFd(int(ns.Fd()))}
	if err := netlink.LinkAdd(veth); err != nil {
		ns.Close()
		return nil, fmt.Errorf("create %s: %w", caliVeth, err)
	}
	link, err := netlink.LinkByName(caliVeth)
	if err == nil {
		err = netlink.LinkSetUp(link)
	}
	if err == nil {
		err = netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Scope: netlink.SCOPE_LINK,
			Dst: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}})
	}
	if err == nil {
		err = os.WriteFile("/proc/sys/net/ipv4/conf/"+caliVeth+"/proxy_arp", []byte("1"), 0o644)
	}
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("configure %s: %w", caliVeth, err)
	}
	fmt.Printf("%s up, routing %s\n", caliVeth, addr)
	return ns, nil
}

// newNetNS makes a network namespace on a thread of its own and returns a handle to it.
func newNetNS() (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- result{nil, err}
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- result{nil, fmt.Errorf("unshare network namespace: %w", err)}
			return
		}
		f, err := os.Open("/proc/thread-self/ns/net")
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread() // else the thread stays locked and dies with the goroutine
		}
		done <- result{f, err}
	}()
	r := <-done
	return r.f, r.err
}

// annotate sets annotations on the Node through nodes/status, as calico-node does, with the
// pod's ServiceAccount token against the in-cluster API address.
func annotate(ctx context.Context, node string, annotations map[string]string) error {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return errors.New("KUBERNETES_SERVICE_HOST or KUBERNETES_SERVICE_PORT is not set")
	}
	token, err := os.ReadFile(filepath.Join(saDir, "token"))
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(filepath.Join(saDir, "ca.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return errors.New("no certificate in ca.crt")
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": annotations}})
	if err != nil {
		return err
	}
	url := "https://" + net.JoinHostPort(host, port) + "/api/v1/nodes/" + node + "/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Content-Type", "application/merge-patch+json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var msg bytes.Buffer
		_, _ = msg.ReadFrom(resp.Body)
		return fmt.Errorf("PATCH %s: %s: %s", url, resp.Status, strings.TrimSpace(msg.String()))
	}
	return nil
}
