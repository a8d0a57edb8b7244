// Package kernel tells whether the node's kernel can run Calico: the modules Calico's dataplane
// uses, the sysctls that matter before Calico runs, and the kernel version. Everything is read
// under a host root (--host-root), so the agent inspects the host's /proc, /sys, /lib/modules and
// /boot from inside its pod.
//
// The checks only inspect: none has an Apply. Loading a module or changing a sysctl on a node is
// the operator's decision. A value may be set on purpose (rp_filter for asymmetric routing, a
// module blacklisted by policy), and a change made at run time is lost on reboot unless it is
// also written where the distribution keeps it (sysctl.d, modules-load.d), which differs between
// distributions and belongs to whoever owns the node image. So each failing check says exactly
// what to set, and the operator sets it.
package kernel
