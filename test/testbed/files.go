package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// firewalldConf is written rather than copied from the host so that tests see firewalld's
// packaged defaults (/usr/lib/firewalld) and nothing of the host's own configuration. Its
// argument is the backend, nftables or iptables.
const firewalldConf = `# calico-prep test bed
DefaultZone=public
FirewallBackend=%s
CleanupOnExit=yes
CleanupModulesOnExit=no
Lockdown=no
IPv6_rpfilter=yes
IndividualCalls=no
LogDenied=off
FlushAllOnReload=yes
`

// networkManagerConf keeps NetworkManager away from DNS, the hostname and DHCP on test links;
// keyfile only, because the ifupdown plugin would read the host's /etc/network/interfaces.
// root-only: root is authorized without polkit, which this bus has not.
const networkManagerConf = `# calico-prep test bed
[main]
plugins=keyfile
dns=none
rc-manager=unmanaged
hostname-mode=none
no-auto-default=*
auth-polkit=root-only
`

// busConf carries Debian's system.conf default policy; service policies come from
// /usr/share/dbus-1/system.d. There is no servicedir: nothing is ever bus-activated.
const busConf = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path=%s</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
</busconfig>
`

// privateMounts are the host paths the launcher covers with bind mounts of the same path
// under Dir, in this order; /run comes last so that a symlinked /etc/resolv.conf still
// resolves on the host while it is covered.
func privateMounts() []string {
	return []string{
		"/etc/firewalld",
		"/etc/NetworkManager",
		"/var/lib/NetworkManager",
		"/etc/resolv.conf",
		"/etc/hostname",
		"/etc/systemd",
		"/run",
	}
}

// writeRoot fills Dir. Every directory a daemon writes to exists before it starts, so the
// daemons never fall back to a host path.
func writeRoot(n *Node) error {
	dirs := []string{
		"etc/firewalld/zones", "etc/firewalld/services", "etc/firewalld/policies",
		"etc/firewalld/ipsets", "etc/firewalld/icmptypes", "etc/firewalld/helpers",
		"etc/NetworkManager/conf.d", "etc/NetworkManager/system-connections",
		"etc/NetworkManager/dispatcher.d",
		"etc/dbus-1",
		"var/lib/NetworkManager", "var/lib/calico-prep",
		"run/dbus", "run/NetworkManager/conf.d",
		// networkd creates /run/systemd/netif itself, owned by the user it drops to.
		"etc/systemd/network", "run/systemd",
		"log",
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(n.Dir, d), 0o755); err != nil {
			return fmt.Errorf("create %q: %w", d, err)
		}
	}
	sock := strings.TrimPrefix(n.BusAddress, "unix:path=")
	files := []struct {
		path, content string
	}{
		{"etc/firewalld/firewalld.conf", fmt.Sprintf(firewalldConf, n.opts.FirewalldBackend)},
		{"etc/NetworkManager/NetworkManager.conf", networkManagerConf},
		{"etc/dbus-1/system.conf", fmt.Sprintf(busConf, sock)},
		{"etc/hostname", n.Name + "\n"},
		{"etc/resolv.conf", "# calico-prep test bed: no DNS\n"},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(n.Dir, f.path), []byte(f.content), 0o644); err != nil {
			return fmt.Errorf("write %q: %w", f.path, err)
		}
	}
	return nil
}
